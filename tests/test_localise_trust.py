"""One folder, one truth for ``selo-localise --out`` (issue 32): outputs of different images never share a
name, a failed image leaves no stale entry or peaks, an output changed since it was written is dropped with
one line, every file gets the umask's mode, and an image's key names the bytes that were decoded."""
import json
import os

import cv2
import numpy as np
import pytest

from predict import provenance
from predict.cli.localise import main as localise_main
from predict.io.annotations import SampleError

from helpers import DEMO_YAML, red_square_scene

QUERY = "a red roof"


def scene_png(path, seed, height=400, width=512):
    image, _ = red_square_scene(height, width, (50 + seed * 30, 150 + seed * 30, 60, 160))
    cv2.imwrite(str(path), image)
    return path


def localise(out, *images, query=QUERY, extra=()):
    args = ["--yaml_path", str(DEMO_YAML), "--device", "cpu", "--query", query, "--out", str(out), "--step", "128"]
    for image in images:
        args += ["--image", str(image)]
    return localise_main(args + list(extra))


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


def listed(summary):
    return {name for entry in summary["results"] for name in entry["files"].values()}


def folder_files(out):
    return {p.name for p in out.iterdir() if p.name not in ("log.txt", "tile_vectors", ".lock", "summary.json",
                                                              ".summary.json.selo", "all_peaks.geojson")}


@pytest.mark.parametrize("one_run", [True, False])
def test_two_images_of_one_stem_get_distinct_outputs(tmp_path, one_run):
    """Before: within one run the second was refused; across runs the first's outputs and entry were
    replaced, exit 0, no line."""
    png = scene_png(tmp_path / "scene.png", 0)
    tif = tmp_path / "scene.tif"
    cv2.imwrite(str(tif), cv2.imread(str(scene_png(tmp_path / "other.png", 3))))
    out = tmp_path / "out"
    if one_run:
        assert localise(out, png, tif) == 0
    else:
        assert localise(out, png) == 0
        first = (out / "scene_q0_probmap.tif").read_bytes()
        assert localise(out, tif) == 0
        assert (out / "scene_q0_probmap.tif").read_bytes() == first
    summary = summary_of(out)
    assert sorted(e["image"] for e in summary["results"]) == [str(png), str(tif)]
    probmaps = [e["files"]["probmap"] for e in summary["results"]]
    assert len(set(probmaps)) == 2 and "scene_q0_probmap.tif" in probmaps
    assert folder_files(out) == listed(summary)
    peaks = json.loads((out / "all_peaks.geojson").read_text())["features"]
    assert {f["properties"]["image_digest"] for f in peaks} == {provenance.file_digest(png), provenance.file_digest(tif)}


def test_an_image_that_fails_leaves_no_stale_entry_or_peaks(tmp_path):
    """Before: its old entry stayed in summary.json and its peaks in all_peaks.geojson."""
    good, bad = scene_png(tmp_path / "good.png", 0), scene_png(tmp_path / "bad.png", 2)
    out = tmp_path / "out"
    assert localise(out, good, bad) == 0
    bad.write_bytes(bad.read_bytes()[:200])  # truncated: it can no longer be read
    assert localise(out, good, bad) == 1
    summary = summary_of(out)
    assert [e["image"] for e in summary["results"]] == [str(good)]
    assert folder_files(out) == listed(summary)
    peaks = json.loads((out / "all_peaks.geojson").read_text())["features"]
    assert {f["properties"]["image"] for f in peaks} <= {"good.png"}


@pytest.mark.parametrize("kind", ["peaks", "probmap"])
def test_an_output_changed_since_it_was_written_is_dropped_with_one_line(tmp_path, kind):
    image = scene_png(tmp_path / "scene.png", 0)
    out = tmp_path / "out"
    assert localise(out, image) == 0
    name = summary_of(out)["results"][0]["files"][kind]
    (out / name).write_bytes((out / name).read_bytes()[:-10])
    assert localise(out, image, query="a green lawn") == 0  # another query: the changed set is dropped
    log = (out / "log.txt").read_text()
    assert f"{out / name}: its bytes are not those written: changed, truncated or replaced; the outputs of " \
           f"{image} x '{QUERY}' are removed" in log
    summary = summary_of(out)
    assert [e["query"] for e in summary["results"]] == ["a green lawn"] and folder_files(out) == listed(summary)
    assert localise(out, image) == 0  # and made again on request, whole
    assert sorted(e["query"] for e in summary_of(out)["results"]) == ["a green lawn", QUERY]


def test_a_summary_edited_by_hand_stops_the_run_with_one_line(tmp_path, capsys):
    image = scene_png(tmp_path / "scene.png", 0)
    out = tmp_path / "out"
    assert localise(out, image) == 0
    summary = summary_of(out)
    summary["results"][0]["query"] = "something else"
    (out / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert localise(out, image) == 2
    assert capsys.readouterr().err.startswith(f"ERROR: {out / 'summary.json'}: not a summary selo-localise can "
                                              "continue (its bytes are not those written")


def test_outputs_get_the_mode_the_umask_gives(tmp_path):
    """Before: every output and archive file was 0600 whatever the umask (mkstemp's mode)."""
    umask = os.umask(0o002)
    try:
        assert localise(tmp_path / "out", scene_png(tmp_path / "scene.png", 0)) == 0
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir() if p.is_file() and p.name != ".lock"}
    assert set(modes.values()) == {0o664}, modes


def test_a_key_names_the_bytes_that_were_decoded(tmp_path):
    """An image rewritten while it is decoded is read again; one that keeps changing is one line."""
    path = tmp_path / "scene.png"
    scene_png(path, 0)
    calls = []

    def decode_then_rewrite():
        calls.append(1)
        pixels = cv2.imread(str(path))
        if len(calls) == 1:
            scene_png(path, 2)  # lands after the decoding, before the key
        return pixels

    pixels = provenance.read_unchanged(path, decode_then_rewrite)
    assert len(calls) == 2 and np.array_equal(pixels, cv2.imread(str(path)))

    def always_rewritten():
        scene_png(path, 1 + len(calls) % 2)
        calls.append(1)
        return cv2.imread(str(path))

    with pytest.raises(SampleError, match=f"{path}: the file changed while it was read"):
        provenance.read_unchanged(path, always_rewritten)


def test_a_folder_or_a_fifo_as_an_image_is_one_accurate_line(tmp_path):
    """Before: "image not found" for both (and a FIFO could block a reader)."""
    good, folder, fifo = scene_png(tmp_path / "good.png", 0), tmp_path / "folder.png", tmp_path / "fifo.png"
    folder.mkdir()
    os.mkfifo(fifo)
    out = tmp_path / "out"
    assert localise(out, folder, fifo, good) == 1
    errors = summary_of(out)["errors"]
    assert errors == [f"{folder}: is a folder, not an image file",
                      f"{fifo}: not a regular file (a FIFO); give an image file"]
    assert [e["image"] for e in summary_of(out)["results"]] == [str(good)]
