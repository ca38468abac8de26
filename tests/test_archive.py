"""The archive of scenes on Ray (``selo-index``, ``selo-search``, ``predict/archive``).

One Ray cluster for the module, on this machine and on the loopback address (``ray.cluster_utils.Cluster``:
a head and a worker node, dashboard and usage statistics off, the token Ray keeps in ~/.ray shared by the
driver processes); every Ray process it starts is stopped at the end. Small synthetic scenes and the demo
encoder: what the archive holds and finds is checked against ``selo-localise`` run on the same scenes.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: nodes on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import ray
from rasterio.transform import from_origin
from ray.cluster_utils import Cluster

from predict.archive import (CATALOGUE_NAME, INDEX_NAME, SCENES_DIR, ArchiveSettings, index_archive, read_scene,
                             scene_files, scene_path)
from predict.cli import index, search
from predict.cli.localise import main as localise_main
from predict.core.pipelines import get_pipeline
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder
from predict.io.raster import read_raster
from predict.localisation.maps import mostly_valid
from predict.localisation.timing import StageTimer
from predict.localisation.vectors import TileVectorStore
from predict.provenance import read_stored, vectors_key

from helpers import DEMO_YAML as DEMO_YAML_PATH
from helpers import REPO_ROOT, subprocess_env

DEMO_YAML = str(DEMO_YAML_PATH)
STEPS = "256_512"
QUERIES = ["a playground with a green football field and a red track.", "a small dark lake surrounded by green woods."]
CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)
NODATA_ROWS = 200  # the top rows of the GeoTIFF scene are nodata
LOOPBACK = "127.0.0.1"  # the nodes' address, also when Ray was imported before this module set the variable


@contextlib.contextmanager
def ray_test_cluster():
    """A head (3 CPUs) and a worker node (2 CPUs) on this machine, this process their driver; Ray's session
    files in a folder of their own, removed at the end (a short path: Ray's sockets live there). Yields
    ``(cluster, worker node, node arguments)``; the other archive tests (``test_archive_*.py``) start theirs
    with it."""
    temp_dir = tempfile.mkdtemp(prefix="selo-ray-", dir="/tmp")
    node_args = {"node_ip_address": LOOPBACK, "temp_dir": temp_dir}
    # Cluster writes the head's address into Ray's default folder whatever temp_dir says, without making it:
    # on a machine where Ray never ran, /tmp/ray does not exist
    address_file = ray._private.utils.get_ray_address_file(None)
    os.makedirs(os.path.dirname(address_file), exist_ok=True)
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False, **node_args})
    try:
        worker = nodes.add_node(num_cpus=2, **node_args)
        ray.init(address=nodes.address, log_to_driver=False, _node_ip_address=LOOPBACK)
        yield nodes, worker, node_args
    finally:
        ray.shutdown()
        nodes.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):  # a later ray.init(address="auto") would look for this cluster
            os.remove(address_file)


@pytest.fixture(scope="module")
def cluster():
    """The module's Ray cluster (:func:`ray_test_cluster`)."""
    with ray_test_cluster() as started:
        yield started


def write_png(path, seed, height=600, width=800):
    cv2.imwrite(str(path), cv2.cvtColor(generate_scene(seed, height, width).rgb, cv2.COLOR_RGB2BGR))


def write_geotiff(path, seed, height=700, width=900):
    """A UTM scene whose first NODATA_ROWS rows are nodata (0)."""
    rgb = generate_scene(seed, height, width).rgb
    rgb[:NODATA_ROWS] = 0
    rgb[NODATA_ROWS:][np.all(rgb[NODATA_ROWS:] == 0, axis=2)] = 1  # no accidental nodata below
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM, nodata=0) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))


def scored_tiles(image):
    """The image as selo-localise reads it, and the tiles it scores there (v1 at STEPS, half valid)."""
    raster = read_raster(image)
    tiles = get_pipeline("v1", STEPS).first_stage_tiles(*raster.pixels.shape[:2])
    return raster, tiles if raster.valid is None else mostly_valid(tiles, raster.valid)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def assert_whole(archive, image, encoder):
    """The scene's file holds every tile selo-localise scores on it, each with the vector the encoder gives."""
    raster, tiles = scored_tiles(image)
    header, stored_tiles, vectors = read_scene(scene_path(str(archive), str(image)), vectors_key(encoder))
    assert stored_tiles == sorted(tiles) and header["tiles"] == len(tiles)
    expected = TileVectorStore(encoder).vectors(raster.pixels, stored_tiles, StageTimer())
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)


def index_args(archive, *images, extra=()):
    return ["--yaml_path", DEMO_YAML, "--images", *map(str, images), "--archive", str(archive), "--step", STEPS, *extra]


@pytest.mark.slow  # the test Ray cluster started, scenes indexed, searched and mapped
def test_index_and_search_give_selo_localise_maps(cluster, tmp_path, capsys):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_png(scenes / "park.png", 11)
    write_png(scenes / "woods.png", 12)
    write_geotiff(scenes / "utm.tif", 13)
    (scenes / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    archive = tmp_path / "archive"
    encoder = load_encoder(DEMO_YAML, device="cpu")

    # first run: three scenes whole, the broken one a single error line naming it
    assert index.main(index_args(archive, scenes, tmp_path / "none*.tif")) == 1
    report = read_json(archive / INDEX_NAME)
    assert sorted(os.path.basename(s["image"]) for s in report["scenes"]) == ["park.png", "utm.tif", "woods.png"]
    assert all(s["tiles_encoded"] == s["tiles"] == len(scored_tiles(s["image"])[1]) for s in report["scenes"])
    assert len(report["errors"]) == 2 and str(scenes / "broken.png") in report["errors"][1]
    assert "none*.tif" in report["errors"][0]
    for name in ("park.png", "woods.png", "utm.tif"):
        assert_whole(archive, scenes / name, encoder)
    header = read_scene(scene_path(str(archive), str(scenes / "utm.tif")), vectors_key(encoder))[0]
    assert rasterio.crs.CRS.from_wkt(header["crs"]) == rasterio.crs.CRS.from_string(CRS)
    assert header["transform"] == list(TRANSFORM)[:6] and (header["height"], header["width"]) == (700, 900)
    assert header["nodata"]["masked_pixels"] == NODATA_ROWS * 900 and header["nodata"]["tiles_left_out"] > 0
    assert len(pq.read_table(pa.BufferReader(read_stored(archive / CATALOGUE_NAME, vectors_key(encoder))))) == 3

    # rerun: nothing encoded; a changed scene is indexed again, the others kept
    write_png(scenes / "woods.png", 14)
    (scenes / "broken.png").unlink()
    assert index.main(index_args(archive, scenes)) == 0
    encoded = {os.path.basename(s["image"]): s["tiles_encoded"] for s in read_json(archive / INDEX_NAME)["scenes"]}
    assert encoded["park.png"] == encoded["utm.tif"] == 0
    assert encoded["woods.png"] == len(scored_tiles(scenes / "woods.png")[1])
    assert_whole(archive, scenes / "woods.png", encoder)

    # other settings: refused before any work, one line
    assert index.main(index_args(archive, scenes, extra=["--pipeline", "v2"])) == 2
    assert "indexed with other settings (pipeline: indexed v1, asked v2)" in capsys.readouterr().err

    # search: the ranking by scene score, the maps of the top scene, the hits
    out = tmp_path / "search"
    assert search.main(["--archive", str(archive), "--query", QUERIES[0], "--query", QUERIES[1], "--top", "2",
                        "--out", str(out)]) == 0
    summary = read_json(out / "summary.json")
    assert summary["errors"] == [] and len(summary["results"]) == 4

    # selo-localise on every scene: its scene scores rank the scenes, its probmaps are the search's
    local = tmp_path / "localise"
    images = [str(scenes / n) for n in ("park.png", "woods.png", "utm.tif")]
    repeated = [*[a for i in images for a in ("--image", i)], *[a for q in QUERIES for a in ("--query", q)]]
    assert localise_main(["--yaml_path", DEMO_YAML, "--step", STEPS, "--out", str(local), *repeated]) == 0
    localised = {(r["image"], r["query"]): r for r in read_json(local / "summary.json")["results"]}
    for k, query in enumerate(QUERIES):
        expected = sorted(images, key=lambda i: -localised[(i, query)]["scene_score"])[:2]
        found = [r for r in summary["results"] if r["query"] == query]
        assert [r["scene"] for r in found] == expected and [r["rank"] for r in found] == [1, 2]
        for result in found:
            reference = localised[(result["scene"], query)]
            assert result["scene_score"] == pytest.approx(reference["scene_score"], rel=1e-6)
            with rasterio.open(out / result["probmap"]) as a, rasterio.open(local / reference["files"]["probmap"]) as b:
                assert np.array_equal(a.read(1), b.read(1))
        hits = read_json(out / f"hits_q{k}.geojson")["features"]
        assert [h["properties"]["rank"] for h in hits] == [1, 2]
        best = read_json(out / found[0]["peaks"])["features"][0]
        assert hits[0]["geometry"] == best["geometry"] and hits[0]["properties"]["scene"] == expected[0]

    # an image renamed: a search leaves the gone name out with one line; a rerun removes its scene, as a
    # fresh index of the folder would hold it
    os.rename(scenes / "park.png", scenes / "renamed.png")
    gone = tmp_path / "search_gone"
    assert search.main(["--archive", str(archive), "--query", QUERIES[0], "--top", "3", "--out", str(gone)]) == 1
    summary = read_json(gone / "summary.json")
    assert summary["errors"] == [f"{scene_path(str(archive), str(scenes / 'park.png'))}: {scenes / 'park.png'}: "
                                 "gone since it was indexed; left out, run selo-index again"]
    assert [r["scene"] for r in summary["results"]] == sorted(images[1:], key=lambda i: -localised[(i, QUERIES[0])]["scene_score"])
    assert index.main(index_args(archive, scenes)) == 0
    indexed = sorted(os.path.basename(read_scene(f, vectors_key(encoder))[0]["image"]) for f in scene_files(str(archive)))
    assert indexed == ["renamed.png", "utm.tif", "woods.png"]
    assert "park.png: gone since it was indexed; its scene park-" in (archive / "log.txt").read_text()


@pytest.mark.slow  # the test Ray cluster: its actors run the driver's int8 model
def test_an_int8_index_runs_one_model_in_every_actor_and_the_search(cluster, tmp_path, capsys):
    # the models are stored in the suite's runtime cache (tests/conftest.py), which the workers were started with
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_png(scenes / "park.png", 11)
    archive, out = tmp_path / "archive", tmp_path / "search"
    assert index.main(index_args(archive, scenes, extra=["--runtime", "openvino", "--precision", "int8"])) == 0
    choice = json.loads(read_json(archive / "archive.json")["runtime_choice"])
    assert choice["runtime"] == "openvino" and choice["precision"] == "int8" and choice["int8"]["held_out_tiles"] > 0
    assert search.main(["--archive", str(archive), "--query", QUERIES[0], "--out", str(out)]) == 0  # same vectors key
    assert read_json(out / "summary.json")["errors"] == []
    assert search.main(["--archive", str(archive), "--query", QUERIES[0], "--out", str(out), "--runtime", "torch"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--runtime torch: {archive} was indexed with openvino; its vectors "
                                                    "are searched and mapped as they were made (index into another "
                                                    "--archive for torch)")


def test_search_refuses_what_is_not_an_archive(tmp_path, capsys):
    assert search.main(["--archive", str(tmp_path), "--query", "a lake", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().endswith("no scene indexed in it yet (run selo-index)")


def test_progress_json_counts_the_scenes_indexed_scored_and_mapped(cluster, tmp_path, capsys):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for seed in range(3):
        write_png(scenes / f"s{seed}.png", 60 + seed, 420, 560)
    archive = tmp_path / "archive"
    assert index.main(index_args(archive, scenes, extra=["--progress", "json"])) == 0
    assert search.main(["--archive", str(archive), "--query", QUERIES[0], "--top", "2", "--out", str(tmp_path / "out"),
                        "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith('{"event": ')]
    stages = {}  # stage -> its counts in order (a batch of the pipeline may complete several scenes at once)
    for line in lines:
        stages.setdefault((line["stage"], line["total"], line["depth"]), []).append(line["done"])
    assert list(stages) == [("scenes", 3, 0), ("scored", 3, 0), ("maps", 2, 0)]
    for counts in stages.values():
        assert counts[0] == 0 and counts == sorted(counts) and len(set(counts)) == len(counts)
    assert [counts[-1] for counts in stages.values()] == [3, 3, 2]


def scenes_for_failures(folder, count):
    folder.mkdir()
    images = [folder / f"s{i}.png" for i in range(count)]
    for i, image in enumerate(images):
        write_png(image, 40 + i, 700, 900)
    return images


@pytest.mark.slow  # a worker node removed mid-run
def test_node_removed_while_indexing(cluster, tmp_path):
    nodes, worker, node_args = cluster
    images = scenes_for_failures(tmp_path / "scenes", 8)
    archive = tmp_path / "archive"
    encoder = load_encoder(DEMO_YAML, device="cpu")
    settings = ArchiveSettings(DEMO_YAML, vectors_key(encoder), encoder.tile_size, "v1", (256, 512))
    runs = []
    indexing = threading.Thread(target=lambda: runs.append(index_archive([str(i) for i in images], str(archive),
                                                                         settings, 16)))
    indexing.start()
    while indexing.is_alive() and not scene_files(str(archive)):
        time.sleep(0.05)
    assert indexing.is_alive(), "indexing ended before the node could be removed"
    nodes.remove_node(worker)
    indexing.join(timeout=120)
    nodes.add_node(num_cpus=2, **node_args)  # for the tests after this one
    assert runs and runs[0].errors == [] and len(runs[0].scenes) == len(images)
    for image in images:
        assert_whole(archive, image, encoder)


@pytest.mark.slow  # a driver process killed, then the rerun
def test_driver_killed_and_rerun_resumes(cluster, tmp_path):
    nodes, _, _ = cluster
    images = scenes_for_failures(tmp_path / "scenes", 8)
    archive = tmp_path / "archive"
    args = index_args(archive, *images, extra=["--batch_size", "8", "--address", nodes.address])
    driver = subprocess.Popen([sys.executable, "-m", "predict.cli.index", *args], cwd=tmp_path, env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while driver.poll() is None and time.monotonic() < deadline and not scene_files(str(archive)):
            time.sleep(0.05)
        killed = driver.poll() is None
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # no clean-up of any kind: as a crash
        driver.wait()
    assert killed, "the driver ended before it could be killed"
    written = {os.path.basename(p) for p in scene_files(str(archive))}
    assert 0 < len(written) < len(images) and not (archive / INDEX_NAME).exists()
    encoder = load_encoder(DEMO_YAML, device="cpu")
    assert index.main(index_args(archive, *images)) == 0
    report = read_json(archive / INDEX_NAME)["scenes"]
    kept = {os.path.basename(scene_path(str(archive), s["image"])) for s in report if s["tiles_encoded"] == 0}
    assert kept == written and len(report) == len(images)
    assert not list((archive / SCENES_DIR).glob(".*.tmp"))  # no temporary file left (the records stay)
    for image in images:
        assert_whole(archive, image, encoder)


@pytest.mark.parametrize("command, folder_option", [(index, "--archive"), (search, "--out")])
def test_a_second_run_into_a_folder_in_use_stops_at_once(tmp_path, capsys, command, folder_option):
    folder = tmp_path / "folder"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from predict.io.lock import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                               str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = {index: ["--yaml_path", "demo", "--images", str(tmp_path), "--archive", str(folder)],
                search: ["--archive", str(tmp_path / "archive"), "--query", "a lake", "--out", str(folder)]}[command]
        assert command.main(args) == 2
        err = capsys.readouterr().err
        assert f"another run (pid {holder.pid}) is writing this folder" in err and f"use another {folder_option}" in err
        assert not (folder / "log.txt").exists()  # nothing written, no Ray started
    finally:
        holder.kill()
        holder.wait()
