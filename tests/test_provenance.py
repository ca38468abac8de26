"""Every number traceable to what produced it (issue 10): a rerun reuses a result only when everything that
determined it is unchanged and its maps are whole; other run settings stop the run; the tile-vector key
follows the encoder's content; one writer per folder; results of other annotation files kept, not counted.

Only what existed before the issue is imported at module level, so that each case fails on its own on the
code before it.
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from predict.cli.evaluate import main as evaluate_main
from predict.cli.generate import main as generate_main
from predict.core import tiling
from predict.encoders.base import EncoderSpecModel
from predict.localisation.timing import StageTimer
from predict.localisation.vectors import TileVectorStore

from helpers import GENERATE_SCRIPT, red_square_scene, subprocess_env, write_testset

N_TILES = len(tiling.multiscale_tiles(900, 1200, [256, 512]))


@pytest.fixture(autouse=True)
def digest_memo(tmp_path, monkeypatch):
    """A fresh digest memo per test (never the user's ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "selo" / "digests.sqlite"


def yaml_file(path, name="toy_encoders:RednessEncoder", **extra):
    path = Path(path)
    path.write_text(yaml.safe_dump({"model": {"name": name, "batch_size": 16}, **extra}))
    return path


def generate(root, *extra, yaml_path=None):
    """selo-generate on root's testset into root/cache; (exit code, metrics.json, this run's log)."""
    cache = root / "cache"
    log = cache / "log.txt"
    before = log.read_text(encoding="utf-8") if log.is_file() else ""
    code = generate_main(["--yaml_path", str(yaml_path or yaml_file(root / "encoder.yaml")),
                          "--cache_path", str(cache), "--src_data_path", str(root / "imgs"),
                          "--src_anno_path", str(root / "anno.json"), "--step", "256_512", "--device", "cpu",
                          "--no_report", *extra])
    metrics = json.loads((cache / "metrics.json").read_text()) if (cache / "metrics.json").is_file() else None
    return code, metrics, log.read_text(encoding="utf-8")[len(before):] if log.is_file() else ""


def tiles_encoded(out: str) -> int:
    return int(out.split("tiles encoded ")[1].split()[0])


# --- a finished cache rerun with other settings --------------------------------------------------------------

@pytest.mark.parametrize("change, differs", [
    (["--pipeline", "v2"], "pipeline.name"),
    (["--step", "256"], "pipeline.steps"),
    ("other yaml", "encoder.options.model.gain"),
])
def test_other_run_settings_stop_the_run_before_any_work(tmp_path, capsys, change, differs):
    write_testset(tmp_path, n_samples=2)
    code, first, _ = generate(tmp_path)
    assert code == 0
    maps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.jpg")}
    capsys.readouterr()
    if change == "other yaml":  # the same encoder class with another option of its own
        other = tmp_path / "other.yaml"
        other.write_text(yaml.safe_dump({"model": {"name": "toy_encoders:RednessEncoder", "gain": 2}}))
        code, after, log = generate(tmp_path, yaml_path=other)
    else:
        code, after, log = generate(tmp_path, *change)  # a later --step overrides generate()'s
    out = "".join(capsys.readouterr())
    assert code == 2
    (line,) = [line for line in out.splitlines() if "holds results of other run settings" in line]
    assert differs in line and "rerun with --overwrite" in line and "use another --cache_path" in line
    assert "Processing" not in log and after == first  # nothing done, nothing deleted
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.jpg")} == maps


def test_overwrite_replaces_results_of_other_settings(tmp_path):
    write_testset(tmp_path, n_samples=1)
    assert generate(tmp_path)[0] == 0
    code, metrics, log = generate(tmp_path, "--pipeline", "v2", "--overwrite")
    assert code == 0 and "Processing 0/1" in log
    settings = metrics["settings"][metrics["run"]["settings"]]
    assert settings["pipeline"]["name"] == "v2" and settings["seed"] == 0
    assert metrics["samples"][0]["identity"]["settings"] == metrics["run"]["settings"]


# --- what a sample's numbers depend on -------------------------------------------------------------------

def test_an_edited_polygon_is_recomputed_and_the_log_says_why(tmp_path):
    write_testset(tmp_path, n_samples=2)
    code, first, _ = generate(tmp_path)
    assert code == 0
    anno = json.loads((tmp_path / "anno.json").read_text())
    anno[1]["points"] = [[[0, 0], [200, 0], [200, 200], [0, 200]]]  # away from the red square
    (tmp_path / "anno.json").write_text(json.dumps(anno))
    code, after, log = generate(tmp_path)
    assert code == 0
    assert "Skipping 0/2" in log and "Recomputing 1/2: scene.png (polygons changed)" in log
    assert after["samples"][1]["Rmi"] < first["samples"][1]["Rmi"] - 0.2


def test_changed_image_content_and_evaluation_code_are_recomputed(tmp_path, monkeypatch):
    write_testset(tmp_path, n_samples=1)
    assert generate(tmp_path)[0] == 0
    image, _ = red_square_scene()
    cv2.imwrite(str(tmp_path / "imgs" / "scene.png"), np.ascontiguousarray(image[:, ::-1]))  # mirrored
    code, _, log = generate(tmp_path)
    assert code == 0 and "Recomputing 0/1: scene.png (image changed)" in log


    from predict.testset import engine
    from predict.testset import evaluate as evaluation

    for module in (engine, evaluation):  # another code version of the evaluation, where the run takes it
        monkeypatch.setattr(module, "EVALUATION_CODE", ("predict.core.tiling",))
    code, _, log = generate(tmp_path)
    assert code == 0 and "Recomputing 0/1: scene.png (evaluation code changed)" in log
    assert "Skipping 0/1" in generate(tmp_path)[2]


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "probmap_0.jpg is not the map recorded with its result"),
    ("replace", "probmap_0.jpg is not the map recorded with its result"),
    ("delete", "addmap_0.jpg is missing"),
])
def test_damaged_maps_of_a_finished_cache_are_recomputed(tmp_path, damage, reason):
    write_testset(tmp_path, n_samples=1)
    assert generate(tmp_path)[0] == 0
    cache = tmp_path / "cache"
    probmap = cache / "probmap_0.jpg"
    if damage == "truncate":
        probmap.write_bytes(probmap.read_bytes()[: probmap.stat().st_size // 2])
    elif damage == "replace":
        cv2.imwrite(str(probmap), np.zeros((90, 120), np.uint8))
    else:
        (cache / "addmap_0.jpg").unlink()
    code, metrics, log = generate(tmp_path)
    assert code == 0 and f"Recomputing 0/1: scene.png ({reason}" in log
    assert cv2.imread(str(probmap), cv2.IMREAD_GRAYSCALE).shape == (900, 1200)
    assert (cache / "addmap_0.jpg").is_file()


def test_a_record_without_an_indicator_is_recomputed_not_a_key_error(tmp_path):
    write_testset(tmp_path, n_samples=2)
    assert generate(tmp_path)[0] == 0
    path = tmp_path / "cache" / "metrics.json"
    data = json.loads(path.read_text())
    del data["samples"][0]["Rmi"]
    data["samples"][1]["Rsu"] = "high"
    path.write_text(json.dumps(data))
    code, metrics, log = generate(tmp_path)
    assert code == 0
    assert "Recomputing 0/2: scene.png (its record in metrics.json is unusable (no Rmi))" in log
    assert "Recomputing 1/2: scene.png (its record in metrics.json is unusable (Rsu is not a number))" in log
    assert all(isinstance(s["Rmi"], float) and isinstance(s["Rsu"], float) for s in metrics["samples"])
    assert metrics["mean_over"] == [0, 1]


def test_an_unreadable_results_file_is_kept_aside(tmp_path):
    write_testset(tmp_path, n_samples=1)
    assert generate(tmp_path)[0] == 0
    path = tmp_path / "cache" / "metrics.json"
    path.write_text("{damaged")
    with pytest.warns(UserWarning, match="unreadable results file"):
        code, _, log = generate(tmp_path)
    assert code == 0 and "Processing 0/1" in log
    assert (tmp_path / "cache" / "metrics.json.unreadable").read_text() == "{damaged"


# --- the tile-vector cache --------------------------------------------------------------------------------

PLUGIN = textwrap.dedent('''
    import numpy as np
    from predict.encoders.base import EncoderSpecModel

    class Redness(EncoderSpecModel):
        name = "prov_redness"
        GAIN = {gain}

        def encode_batch(self, tiles):
            tiles = np.asarray(tiles, dtype=np.float32) / 255
            red = tiles[..., 0] - 0.5 * (tiles[..., 1] + tiles[..., 2])
            return np.stack([red.mean(axis=(1, 2)) * self.GAIN, np.ones(len(tiles), np.float32)], axis=1)

        def text_encoder(self, text):
            return np.array([1.0, 0.0], dtype=np.float32)

        def cosine_sim(self, image_vectors, text_vector):
            return np.asarray(image_vectors, dtype=np.float64)[:, 0]
''')


def test_changed_encoder_code_recomputes_its_vectors(tmp_path, importable_module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    write_testset(tmp_path, n_samples=1)
    config = yaml_file(tmp_path / "plugin.yaml", name="prov_plugin:Redness")
    importable_module("prov_plugin", PLUGIN.format(gain=1.0))
    assert generate(tmp_path, yaml_path=config)[0] == 0
    first = (tmp_path / "cache" / "probmap_0.jpg").read_bytes()
    capsys.readouterr()
    importable_module("prov_plugin", PLUGIN.format(gain=-1.0))  # the code changed; the yaml and weights did not
    code, _, _ = generate(tmp_path, yaml_path=config)
    assert code == 2 and "encoder.code" in "".join(capsys.readouterr())
    code, _, _ = generate(tmp_path, "--overwrite", yaml_path=config)
    assert code == 0 and tiles_encoded(capsys.readouterr().out) == N_TILES
    assert (tmp_path / "cache" / "probmap_0.jpg").read_bytes() != first


def test_the_vector_key_ignores_batch_size_and_yaml_place_and_follows_weight_content(tmp_path, digest_memo):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"\x01" * 1000)
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump({"model": {"name": "demo_weights", "weights": str(weights), "batch_size": 4}}))
    (tmp_path / "copy").mkdir()
    b = tmp_path / "copy" / "b.yaml"
    b.write_text(yaml.safe_dump({"model": {"name": "demo_weights", "weights": str(weights), "batch_size": 64}}))

    def key(path):
        from predict.provenance import vectors_key

        options = yaml.safe_load(Path(path).read_text())
        options["_yaml_path"] = str(path)
        return vectors_key(EncoderSpecModel(options, "cpu"))

    assert key(a) == key(b)  # a copied yaml, another batch size: the same vectors
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    assert key(a) == key(b)
    moved = tmp_path / "copy" / "w_moved.bin"
    moved.write_bytes(weights.read_bytes())
    b.write_text(yaml.safe_dump({"model": {"name": "demo_weights", "weights": str(moved)}}))
    assert key(a) == key(b)  # the same weights elsewhere
    weights.write_bytes(b"\x02" * 1000)  # retrained: same size, new content
    assert key(a) != key(b)


def test_the_digest_memo_holds_only_while_the_full_stat_data_is_unchanged(tmp_path, monkeypatch):
    from predict import provenance

    monkeypatch.setattr(provenance.digests, "DISK_MEMO_BYTES", 0)  # the on-disk memo too, for a small file
    monkeypatch.setattr(provenance.digests, "RACY_NS", 0)
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 10)
    time.sleep(0.01)
    stat = path.stat()
    first = provenance.file_digest(path)
    reads = []
    monkeypatch.setattr(provenance.digests.hashlib, "sha256", lambda *a, sha=provenance.digests.hashlib.sha256: reads.append(1) or sha(*a))
    assert provenance.file_digest(path) == first and not reads  # memoised
    provenance.digests._memo.clear()
    assert provenance.file_digest(path) == first and not reads  # from the on-disk memo
    path.write_bytes(b"b" * 10)  # rewritten with the same size, the mtime put back (touch -r): the ctime moves
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert provenance.file_digest(path) != first and reads


def test_an_unreadable_vector_file_is_recomputed_and_replaced(tmp_path, capsys):
    write_testset(tmp_path, n_samples=1)
    assert generate(tmp_path)[0] == 0
    (npz,) = (tmp_path / "cache" / "tile_vectors").glob("*.npz")
    whole = npz.read_bytes()
    npz.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    anno = json.loads((tmp_path / "anno.json").read_text())
    (tmp_path / "anno.json").write_text(json.dumps(anno + [{**anno[0], "caption": "another query"}]))
    code, metrics, log = generate(tmp_path)  # a new query on the image needs its vectors
    out = capsys.readouterr().out
    assert code == 0 and metrics["errors"] == [] and [s["idx"] for s in metrics["samples"]] == [0, 1]
    assert f"{npz}: unusable tile vectors" in log and tiles_encoded(out) == N_TILES
    assert len(npz.read_bytes()) == len(whole)  # replaced by a whole file
    generate(tmp_path, "--overwrite")
    assert tiles_encoded(capsys.readouterr().out) == N_TILES  # --overwrite recomputes vectors too


class ShiftedOnce(EncoderSpecModel):
    """Answers its first batch with one vector too few (an off-by-one bug), then correctly."""

    name = "shifted_once"
    batch_size = 4

    def encode_batch(self, tiles):
        vectors = tiles.reshape(len(tiles), -1, 3).mean(axis=1).astype(np.float32)
        self.calls = getattr(self, "calls", 0) + 1
        return vectors[1:] if self.calls == 1 else vectors


def test_vectors_of_a_failed_encode_are_neither_saved_nor_reused(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    tiles = tiling.multiscale_tiles(512, 512, [256])
    folder = tmp_path / "vectors"
    store = TileVectorStore(ShiftedOnce(), str(folder))
    store.use_image("image")
    with pytest.raises(ValueError, match=r"encoder shifted_once: image_encoder returned vectors of shape "
                                         r"\(3, 3\) for 4 tiles; expected \(4, D\)"):
        store.vectors(image, tiles, StageTimer())
    assert not folder.exists() and store.vectors_by_tile == {}
    vectors = store.vectors(image, tiles, StageTimer())  # the next call encodes every tile again
    assert store.tiles_encoded == len(tiles)
    reference = ShiftedOnce()
    reference.calls = 1  # past its bad first answer
    np.testing.assert_allclose(vectors, reference.image_encoder(next(tiling.tile_batches(image, tiles, 256, 8))))


@pytest.mark.parametrize("answer, message", [
    ("one_d", r"image_encoder returned vectors of shape \((\d+),\) for \1 tiles; expected \(\1, D\)"),
    ("text_dim", r"text vector of shape \(3,\) does not match image vectors \(\d+, 2\); expected \(2,\)"),
])
def test_wrong_vector_shapes_are_one_line_naming_the_encoder(tmp_path, importable_module, answer, message):
    importable_module("shape_plugin", textwrap.dedent(f'''
        import numpy as np
        from predict.encoders.base import EncoderSpecModel

        class Wrong(EncoderSpecModel):
            name = "wrong_shapes"

            def encode_batch(self, tiles):
                if "{answer}" == "one_d":
                    return np.ones(len(tiles), np.float32)
                return np.ones((len(tiles), 2), np.float32)

            def text_encoder(self, text):
                return np.ones(3, np.float32)
    '''))
    write_testset(tmp_path, n_samples=1)
    code, metrics, log = generate(tmp_path, yaml_path=yaml_file(tmp_path / "w.yaml", name="shape_plugin:Wrong"))
    assert code == 1
    (error,) = metrics["errors"]
    assert error["error"].startswith("encoder wrong_shapes: ")
    assert len(error["error"].splitlines()) == 1 and re.search(message, error["error"]), error["error"]


# --- annotation files -------------------------------------------------------------------------------------

def test_an_empty_annotation_file_deletes_nothing(tmp_path):
    write_testset(tmp_path, n_samples=2)
    code, first, _ = generate(tmp_path)
    (tmp_path / "anno.json").write_text("[]")
    code, after, log = generate(tmp_path)  # one line naming the file, before any work
    assert code == 2 and after["samples"] == first["samples"] and "holds no sample" in log
    (tmp_path / "anno.json").write_text(json.dumps([{"caption": "another", "jpg_name": "scene.png",
                                                      "points": [[[10, 10], [20, 10], [20, 20]]]}]))
    code, after, log = generate(tmp_path)
    assert code == 0 and after["samples"][1] == first["samples"][1] and after["mean_over"] == [0]
    assert "1 result(s) of samples not in" in log and "kept but not counted in the mean (idx 1)" in log
    from predict.io.report import write_report

    page = Path(write_report(str(tmp_path / "cache"), str(tmp_path / "anno.json"))).read_text(encoding="utf-8")
    assert "The mean covers 1 sample(s) of" in page and "kept but not counted (idx 1)" in page
    # the evaluation CLI keeps them too
    assert evaluate_main(["--cache_path", str(tmp_path / "cache"), "--src_anno_path", str(tmp_path / "anno.json")]) == 0
    assert json.loads((tmp_path / "cache" / "metrics.json").read_text())["samples"][1] == first["samples"][1]


# --- concurrent runs -------------------------------------------------------------------------------------

def test_a_second_run_into_a_live_runs_folder_stops_at_once(tmp_path, capsys):
    write_testset(tmp_path, n_samples=2)
    options = {"model": {"name": "toy_encoders:PositionScorer", "batch_size": 8},
               "scorer": {"height": 900, "width": 1200, "offset": 0.0, "delay": 0.5,
                          "targets": [{"x": 650, "y": 450, "amp": 1.0, "sigma": 200}]}}
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(options))
    cache = tmp_path / "cache"
    cmd = [sys.executable, str(GENERATE_SCRIPT), "--yaml_path", str(slow),
           "--cache_path", str(cache), "--src_data_path", str(tmp_path / "imgs"),
           "--src_anno_path", str(tmp_path / "anno.json"), "--step", "256_512", "--device", "cpu", "--no_report"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "Processing 0/2" not in (
                (cache / "log.txt").read_text(encoding="utf-8") if (cache / "log.txt").is_file() else ""):
            time.sleep(0.05)
        log_before = (cache / "log.txt").read_text(encoding="utf-8")
        code, _, _ = generate(tmp_path, yaml_path=slow)
        err = capsys.readouterr().err
        assert code == 2
        assert f"{cache}: another run (pid {proc.pid}) is writing this folder" in err
        assert err.count("\n") == 1
        assert evaluate_main(["--cache_path", str(cache), "--src_anno_path", str(tmp_path / "anno.json")]) == 2
        assert f"{cache}: another run (pid {proc.pid}) is writing this folder" in capsys.readouterr().err
        assert (cache / "log.txt").read_text(encoding="utf-8").startswith(log_before)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, metrics, log = generate(tmp_path, yaml_path=slow)  # a killed run leaves no lock behind
    assert code == 0 and [s["idx"] for s in metrics["samples"]] == [0, 1]
    assert not [name for name in os.listdir(cache) if name.endswith(".tmp")]
