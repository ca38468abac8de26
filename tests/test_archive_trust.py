"""The archive's trust rules (issue 32): every scene the search scores is checked before any is ranked, a
damaged, truncated, foreign or swapped scene file is left out by the search and indexed again by
``selo-index`` in the same run, ``--out`` holds exactly what its summary lists, and the commands' unclear
cases (an address where nothing answers, a stale Ray address file, Ctrl-C, a query with no known word, a
moved encoder yaml, a damaged ``archive.json``) are one line each.

One Ray cluster for the module (:func:`test_archive.ray_test_cluster`), three small PNG scenes per test.
"""
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: nodes on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import ray
from test_archive import STEPS, index_args, ray_test_cluster, read_json, write_png

from predict.archive import INDEX_NAME, SCENES_DIR, SETTINGS_NAME, scene_files, scene_path
from predict.cli import index, search
from predict.encoders.registry import load_encoder
from predict.provenance import vectors_key

from helpers import DEMO_YAML, REPO_ROOT, subprocess_env

QUERY = "a playground with a green football field and a red track."
NAMES = ("a.png", "b.png", "c.png")


@pytest.fixture(scope="module")
def cluster():
    with ray_test_cluster() as started:
        yield started


@pytest.fixture
def indexed(cluster, tmp_path):
    """``(scenes folder, archive)``: three small scenes indexed."""
    scenes, archive = tmp_path / "scenes", tmp_path / "archive"
    scenes.mkdir()
    for seed, name in enumerate(NAMES):
        write_png(scenes / name, 60 + seed, 400, 500)
    assert index.main(index_args(archive, scenes)) == 0
    return scenes, archive


def searched(archive, out, *queries, top=3, extra=()):
    """The search's exit code and its summary."""
    args = ["--archive", str(archive), *[a for q in queries for a in ("--query", q)], "--top", str(top),
            "--out", str(out), *extra]
    code = search.main(args)
    return code, read_json(out / "summary.json") if (out / "summary.json").exists() else None


def ranked(summary):
    return [(os.path.basename(r["scene"]), r["rank"], r["scene_score"]) for r in summary["results"]]


def same_ranking(summary, fresh):
    """The same scenes in the same ranks, with the same scores up to the encoder's float noise (a scene
    encoded again in other batches: vectors equal to about 1e-7)."""
    return [r[:2] for r in ranked(summary)] == [r[:2] for r in ranked(fresh)] and \
        np.allclose([r[2] for r in ranked(summary)], [r[2] for r in ranked(fresh)], rtol=1e-5, atol=1e-7)


def encoded(archive):
    return {os.path.basename(s["image"]): s["tiles_encoded"] for s in read_json(archive / INDEX_NAME)["scenes"]}


def scene_file(archive, scenes, name):
    return scene_path(str(archive), str(scenes / name))


def own_yaml():
    """The demo encoder's yaml as a file of its own (its checkpoint named by an absolute path)."""
    return DEMO_YAML.read_text().replace("resume: predict/", f"resume: {REPO_ROOT}/predict/")


def other_encoder_yaml():
    """The demo encoder with one more option: another encoder by its vectors key."""
    return own_yaml().replace("  name: demo\n", "  name: demo\n  variant: 2\n")


# ---- wrong results ------------------------------------------------------------------------------------------

def test_a_changed_scene_outside_the_top_is_left_out_before_ranking(indexed, tmp_path):
    scenes, archive = indexed
    code, before = searched(archive, tmp_path / "first", QUERY, top=1)
    assert code == 0
    changed = next(n for n in NAMES if n != os.path.basename(before["results"][0]["scene"]))
    write_png(scenes / changed, 99, 400, 500)  # another image under the same name, not re-indexed
    code, after = searched(archive, tmp_path / "second", QUERY, top=3)
    assert code == 1 and changed not in [r[0] for r in ranked(after)] and len(after["results"]) == 2
    assert after["errors"] == [f"{scene_file(archive, scenes, changed)}: {scenes / changed}: changed since it was "
                               "indexed (the file, a sidecar or the code that decodes it); left out, run selo-index again"]


def test_a_reused_out_holds_exactly_what_its_summary_lists(indexed, tmp_path):
    _, archive = indexed
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    assert searched(archive, out, QUERY, "a small dark lake surrounded by green woods.", "red roofs", top=2)[0] == 0
    assert (out / "hits_q2.geojson").exists()
    code, summary = searched(archive, out, "red roofs", top=1)
    assert code == 0 and [r["query"] for r in summary["results"]] == ["red roofs"]
    ours = {"summary.json", ".summary.json.selo", "log.txt", "notes.txt"}
    on_disk = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".lock")} - ours
    listed = set(summary.get("files", {}))
    assert on_disk == listed and "hits_q0.geojson" in listed and "hits_q1.geojson" not in on_disk
    assert (out / "notes.txt").read_text() == "the user's own file"


def flip_vector_bytes(path):
    """Bytes flipped in the middle of the file (the vector pages; the footer intact), size and mtime kept."""
    stat = os.stat(path)
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_damaged_scene_file_is_left_out_then_indexed_again(indexed, tmp_path):
    scenes, archive = indexed
    code, fresh = searched(archive, tmp_path / "fresh", QUERY)
    damaged = scene_file(archive, scenes, "b.png")
    flip_vector_bytes(damaged)
    code, summary = searched(archive, tmp_path / "damaged", QUERY)
    assert code == 1 and len(summary["errors"]) == 1 and summary["errors"][0].startswith(f"{damaged}: its bytes are "
                                                                                         "not those written")
    assert "b.png" not in [r[0] for r in ranked(summary)]
    assert index.main(index_args(archive, scenes)) == 0
    assert encoded(archive)["b.png"] > 0 and encoded(archive)["a.png"] == 0
    assert f"{damaged}: its bytes are not those written" in (archive / "log.txt").read_text()
    assert same_ranking(searched(archive, tmp_path / "again", QUERY)[1], fresh)


def test_a_truncated_scene_file_is_indexed_again_in_the_same_run(indexed):
    scenes, archive = indexed
    path = scene_file(archive, scenes, "c.png")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert index.main(index_args(archive, scenes)) == 0
    assert encoded(archive)["c.png"] > 0 and len(scene_files(str(archive))) == 3


def copy_scene(source, target):
    """A scene file copied over another with its record, as a user copying a folder's files would."""
    shutil.copyfile(source, target)
    record = os.path.join(os.path.dirname(source), f".{os.path.basename(source)}.selo")
    if os.path.exists(record):
        shutil.copyfile(record, os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.selo"))


def test_a_scene_file_copied_over_another_is_left_out_then_indexed_again(indexed, tmp_path):
    scenes, archive = indexed
    code, fresh = searched(archive, tmp_path / "fresh", QUERY)
    copy_scene(scene_file(archive, scenes, "a.png"), scene_file(archive, scenes, "b.png"))
    code, summary = searched(archive, tmp_path / "copied", QUERY)
    assert code == 1 and [r[1] for r in ranked(summary)] == [1, 2]
    assert sorted(r[0] for r in ranked(summary)) == ["a.png", "c.png"]
    assert summary["errors"] == [f"{scene_file(archive, scenes, 'b.png')}: holds the scene of {scenes / 'a.png'}, "
                                 "not the scene of its name (copied over it?); left out, run selo-index again"]
    assert index.main(index_args(archive, scenes)) == 0 and encoded(archive)["b.png"] > 0
    assert same_ranking(searched(archive, tmp_path / "again", QUERY)[1], fresh)


def test_another_encoders_scene_file_is_left_out_then_indexed_again(indexed, tmp_path):
    scenes, archive = indexed
    other_yaml = tmp_path / "other.yaml"  # the demo encoder with another option: another vectors key
    other_yaml.write_text(other_encoder_yaml())
    other = tmp_path / "other_archive"
    assert index.main(["--yaml_path", str(other_yaml), "--images", str(scenes), "--archive", str(other),
                       "--step", STEPS]) == 0
    copy_scene(scene_file(other, scenes, "a.png"), scene_file(archive, scenes, "a.png"))
    code, summary = searched(archive, tmp_path / "foreign", QUERY)
    ours = vectors_key(load_encoder(str(DEMO_YAML), device="cpu"))
    theirs = vectors_key(load_encoder(str(other_yaml), device="cpu"))
    assert ours != theirs and code == 1 and "a.png" not in [r[0] for r in ranked(summary)]
    assert summary["errors"] == [f"{scene_file(archive, scenes, 'a.png')}: made by {theirs}, not by what asks for it "
                                 f"now ({ours}); left out, run selo-index again"]
    assert index.main(index_args(archive, scenes)) == 0 and encoded(archive)["a.png"] > 0


# ---- unclear cases --------------------------------------------------------------------------------------------

def test_a_query_with_no_known_word_is_one_line_and_the_others_are_answered(indexed, tmp_path):
    _, archive = indexed
    code, summary = searched(archive, tmp_path / "out", QUERY, "zzzz qqqq", top=1)
    assert code == 1 and [r["query"] for r in summary["results"]] == [QUERY]
    assert summary["errors"] == ["q1: query 'zzzz qqqq': no word the demo encoder knows (unknown: zzzz, qqqq); "
                                 "not answered"]


def test_a_moved_encoder_yaml_is_one_line_before_ray_and_yaml_path_names_it(indexed, tmp_path, capsys):
    scenes, archive = indexed
    moved = tmp_path / "moved"
    moved.mkdir()
    yaml = tmp_path / "enc" / "demo.yaml"  # an archive indexed with a yaml of its own, moved away afterwards
    yaml.parent.mkdir()
    yaml.write_text(own_yaml())
    own = tmp_path / "own_archive"
    assert index.main(["--yaml_path", str(yaml), "--images", str(scenes), "--archive", str(own), "--step", STEPS]) == 0
    yaml.rename(moved / "demo.yaml")
    capsys.readouterr()
    assert searched(own, tmp_path / "gone", QUERY)[0] == 2
    assert capsys.readouterr().err == (f"ERROR: {yaml}: the encoder's yaml is gone ({own} was indexed with {yaml}); "
                                       "name where its yaml is now with --yaml_path\n")
    assert searched(own, tmp_path / "named", QUERY, extra=["--yaml_path", str(moved / "demo.yaml")])[0] == 0
    other = tmp_path / "other.yaml"
    other.write_text(other_encoder_yaml())
    assert searched(own, tmp_path / "other", QUERY, extra=["--yaml_path", str(other)])[0] == 2
    assert f"{other}: not the encoder {own} was indexed with" in (tmp_path / "other" / "log.txt").read_text()


def test_a_damaged_archive_json_is_one_line(indexed, tmp_path):
    scenes, archive = indexed
    settings = archive / SETTINGS_NAME
    settings.write_text(settings.read_text().replace('"v1"', '"v2"'))
    assert index.main(index_args(archive, scenes)) == 2
    assert searched(archive, tmp_path / "out", QUERY)[0] == 2
    line = f"{settings}: its bytes are not those written"
    assert line in (archive / "log.txt").read_text() and line in (tmp_path / "out" / "log.txt").read_text()


def test_an_address_where_nothing_answers_is_one_line_at_once(tmp_path, indexed):
    _, archive = indexed
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "predict.cli.search", "--archive", str(archive), "--query", QUERY,
                             "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1"], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and time.monotonic() - started < 30
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in (tmp_path / "out" / "log.txt").read_text()


@contextlib.contextmanager
def stale_ray_address_file():
    """Ray's address file naming a port where nothing listens (a ``ray start`` that died); the file as it
    was put back at the end."""
    path = ray._private.utils.get_ray_address_file(None)
    before = open(path).read() if os.path.exists(path) else None
    with open(path, "w") as f:
        f.write("127.0.0.1:1")
    try:
        yield
    finally:
        if before is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        else:
            with open(path, "w") as f:
                f.write(before)


def command(module, *args, cwd):
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finished(process, timeout):
    """The exit code and output of a command started by :func:`command`, its group killed after ``timeout``."""
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
    return process.returncode, output


@pytest.mark.slow  # a local Ray started by the command
def test_no_address_starts_a_local_ray_whatever_a_stale_address_file_says(indexed, tmp_path):
    _, archive = indexed
    with stale_ray_address_file():
        code, output = finished(command("predict.cli.search", "--archive", str(archive), "--query", QUERY,
                                        "--out", str(tmp_path / "out"), cwd=tmp_path), 90)
    assert code == 0, output


@pytest.mark.slow  # a local Ray started by the command, interrupted, then the rerun
def test_ctrl_c_ends_selo_index_with_130_and_a_rerun_resumes(cluster, tmp_path):
    scenes, archive = tmp_path / "scenes", tmp_path / "archive"
    scenes.mkdir()
    for i in range(8):
        write_png(scenes / f"s{i}.png", 80 + i, 700, 900)
    process = command("predict.cli.index", *index_args(archive, scenes, extra=["--batch_size", "8"]), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not scene_files(str(archive)):
        time.sleep(0.05)
    assert process.poll() is None, "the command ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    interrupted = time.monotonic()
    code, output = finished(process, 20)
    assert code == 130 and time.monotonic() - interrupted < 20, output
    log = (archive / "log.txt").read_text()
    assert log.count("interrupted") == 1, log
    written = {os.path.basename(p) for p in scene_files(str(archive))}
    assert index.main(index_args(archive, scenes)) == 0
    report = read_json(archive / INDEX_NAME)["scenes"]
    kept = {os.path.basename(scene_path(str(archive), s["image"])) for s in report if s["tiles_encoded"] == 0}
    assert kept == written and len(report) == 8 and not list((archive / SCENES_DIR).glob(".*.tmp"))


def test_the_summary_lists_each_output_with_its_digest(indexed, tmp_path):
    _, archive = indexed
    out = tmp_path / "out"
    assert searched(archive, out, QUERY, top=1)[0] == 0
    from predict.provenance import read_stored
    summary = json.loads(read_stored(out / "summary.json", None))
    for name, record in summary["files"].items():
        assert read_stored(out / name, record["key"], record)  # each output verifies against its record
    assert np.isfinite(summary["results"][0]["scene_score"])
