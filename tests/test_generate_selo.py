"""The map-generation driver: outputs, per-image reuse, input formats, bad input, resume after a kill."""
import json
import os
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest

from predict.cli import generate
from predict.core import tiling
from predict.core.stretch import percentile_stretch
from predict.io.images import SampleError, read_image

from helpers import red_square_scene, slow_generate_command, write_testset, write_yaml  # noqa: F401  (test_engine.py imports some from here)


def run(root, *extra, anno=None, imgs=None):
    cache = root / "cache"
    code = generate.main(["--yaml_path", str(write_yaml(root)), "--cache_path", str(cache),
                          "--src_data_path", str(imgs or root / "imgs"),
                          "--src_anno_path", str(anno or root / "anno.json"), "--step", "256_512", *extra])
    return code, cache


def test_v1_run_writes_maps_log_and_metrics_and_localises(tmp_path):
    write_testset(tmp_path, n_samples=2)
    code, cache = run(tmp_path)
    assert code == 0
    for idx in (0, 1):
        for kind in ("probmap", "heatmap", "addmap"):
            assert (cache / f"{kind}_{idx}.jpg").is_file()
    result = json.loads((cache / "metrics.json").read_text())
    assert [s["idx"] for s in result["samples"]] == [0, 1]
    assert result["samples"][0]["Rmi"] > 0.6  # the red square is found
    assert set(result["timings"]) >= {"cut", "sim", "gnt", "flt", "total"}
    assert result["timings"]["total"] == pytest.approx(sum(result["timings"][k] for k in ("cut", "sim", "gnt", "flt")))
    log = (cache / "log.txt").read_text(encoding="utf-8")
    for line in ("Processing 0/2: scene.png", "Corresponding text: a red building number 0", "img size:900x1200",
                 "Start split images with step 256_512", "Calculate similarities in", "Generate heatmap in",
                 "Saving heatmap in", "Time-Cut:", "Time-Sim:", "Time-Gnt:", "Time-Flt:", "Time-Total:"):
        assert line in log, line
    assert (cache / "metrics.csv").is_file()


def test_tile_vectors_are_computed_once_per_image(tmp_path, capsys):
    write_testset(tmp_path, n_samples=3)
    code, cache = run(tmp_path)
    assert code == 0
    n_tiles = len(tiling.multiscale_tiles(900, 1200, [256, 512]))
    assert f"tiles encoded {n_tiles} of {3 * n_tiles} requested" in capsys.readouterr().out
    # a new query on the same image finds the vectors on disk and encodes nothing
    anno = json.loads((tmp_path / "anno.json").read_text())
    (tmp_path / "anno.json").write_text(json.dumps(anno + [{**anno[0], "caption": "a fourth query"}]))
    code, _ = run(tmp_path)
    assert code == 0
    assert f"tiles encoded 0 of {n_tiles} requested" in capsys.readouterr().out
    # --overwrite recomputes the vectors too, once for all the samples on the image
    code, _ = run(tmp_path, "--overwrite")
    assert code == 0
    assert f"tiles encoded {n_tiles} of {4 * n_tiles} requested" in capsys.readouterr().out


def test_v2_is_repeatable_with_a_seed(tmp_path):
    write_testset(tmp_path, n_samples=1)
    _, cache = run(tmp_path, "--pipeline", "v2", "--seed", "3")
    first = (cache / "probmap_0.jpg").read_bytes()
    _, cache = run(tmp_path, "--pipeline", "v2", "--seed", "3", "--overwrite")
    assert (cache / "probmap_0.jpg").read_bytes() == first


def test_missing_and_corrupt_images_fail_alone(tmp_path):
    imgs, _ = write_testset(tmp_path, n_samples=1, names=["good.png"])
    (imgs / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    image, polygon = red_square_scene()
    anno = [{"caption": "missing", "jpg_name": "missing.jpg", "points": [polygon]},
            {"caption": "good", "jpg_name": "good.png", "points": [polygon]},
            {"caption": "corrupt", "jpg_name": "corrupt.jpg", "points": [polygon]}]
    (tmp_path / "anno.json").write_text(json.dumps(anno))
    code, cache = run(tmp_path)
    assert code == 1
    result = json.loads((cache / "metrics.json").read_text())
    assert [s["idx"] for s in result["samples"]] == [1]
    errors = {e["idx"]: e["error"] for e in result["errors"]}
    assert "missing.jpg: image not found" in errors[0]
    assert "corrupt.jpg: truncated or corrupt JPEG" in errors[2]
    log = (cache / "log.txt").read_text(encoding="utf-8")
    assert "Sample 0 (missing.jpg) failed" in log and "Sample 2 (corrupt.jpg) failed" in log


def test_image_formats_are_read_as_bgr_uint8(tmp_path):
    image, _ = red_square_scene(64, 80, (10, 30, 20, 50))
    rgb = image[:, :, ::-1]
    cv2.imwrite(str(tmp_path / "a.png"), np.dstack([image, np.full(image.shape[:2], 200, np.uint8)]))  # BGRA
    cv2.imwrite(str(tmp_path / "b.png"), image.astype(np.uint16) * 257)  # 16-bit
    cv2.imwrite(str(tmp_path / "c.tif"), image)
    cv2.imwrite(str(tmp_path / "d.png"), image[:, :, 2])  # grayscale
    import tifffile

    tifffile.imwrite(str(tmp_path / "e.tif"), np.dstack([rgb, rgb[:, :, :1]]))  # 4-band RGB+NIR GeoTIFF-like
    for name in ("a.png", "c.tif", "e.tif"):
        out = read_image(str(tmp_path / name))
        assert out.dtype == np.uint8 and out.shape == image.shape, name
        np.testing.assert_array_equal(out, image, err_msg=name)
    # 16-bit data are stretched 2-98 % per band (see test_bad_input for 12-bit data)
    np.testing.assert_array_equal(read_image(str(tmp_path / "b.png")), percentile_stretch(image.astype(np.uint16) * 257))
    gray = read_image(str(tmp_path / "d.png"))
    assert gray.shape == image.shape and np.array_equal(gray[:, :, 0], image[:, :, 2])
    with pytest.raises(SampleError, match="nothing.png: image not found"):
        read_image(str(tmp_path / "nothing.png"))


def test_steps_longer_than_the_image_are_skipped_with_a_warning():
    with pytest.warns(UserWarning, match=r"smaller than step\(s\) \[768\]"):
        assert tiling.usable_steps(700, 900, [256, 512, 768], "x.jpg") == [256, 512]
    with pytest.raises(ValueError, match="x.jpg: image 200x900 is smaller than every tile step"):
        tiling.usable_steps(200, 900, [256, 512], "x.jpg")


def test_a_killed_run_resumes_without_losing_or_recomputing_samples(tmp_path):
    """Kill the driver after two of five samples, rerun: the two are skipped, the others computed."""
    image, polygon = red_square_scene()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    names = [f"s{i}.png" for i in range(5)]  # one image per sample, so every sample encodes tiles
    for name in names:
        cv2.imwrite(str(imgs / name), image)
    anno = [{"caption": f"red {i}", "jpg_name": n, "points": [polygon]} for i, n in enumerate(names)]
    (tmp_path / "anno.json").write_text(json.dumps(anno))
    cmd, env = slow_generate_command(tmp_path, imgs, tmp_path / "anno.json")
    cache = tmp_path / "cache"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = cache / "metrics.json"
    deadline = time.time() + 120
    done = []
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file():
            try:
                done = json.loads(metrics.read_text())["samples"]
            except json.JSONDecodeError:
                done = []
            if len(done) >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {s["idx"] for s in json.loads(metrics.read_text())["samples"]}
    assert 2 <= len(finished) < 5, "the kill must land mid-run"
    mtimes = {i: os.stat(cache / f"probmap_{i}.jpg").st_mtime_ns for i in finished}
    log_before = (cache / "log.txt").read_text(encoding="utf-8")

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(metrics.read_text())
    assert [s["idx"] for s in result["samples"]] == [0, 1, 2, 3, 4]
    second_log = (cache / "log.txt").read_text(encoding="utf-8")[len(log_before):]
    for i in range(5):
        if i in finished:
            assert f"Skipping {i}/5" in second_log and f"Processing {i}/5" not in second_log
            assert os.stat(cache / f"probmap_{i}.jpg").st_mtime_ns == mtimes[i]  # not recomputed
        else:
            assert f"Processing {i}/5" in second_log


def test_results_of_another_annotation_file_are_kept_but_not_counted(tmp_path):
    """A cache folder reused with a different anno.json: old samples must not be skipped or averaged, nor lost."""
    write_testset(tmp_path, n_samples=3)
    code, cache = run(tmp_path)
    assert code == 0
    image, polygon = red_square_scene()
    (tmp_path / "anno.json").write_text(json.dumps(
        [{"caption": "a red building number 0", "jpg_name": "scene.png", "points": [polygon]},
         {"caption": "another query", "jpg_name": "scene.png", "points": [polygon]}]))
    code, cache = run(tmp_path)
    assert code == 0
    result = json.loads((cache / "metrics.json").read_text())
    assert [(s["idx"], s["caption"]) for s in result["samples"]] == [(0, "a red building number 0"),
                                                                    (1, "another query"),
                                                                    (2, "a red building number 2")]
    assert result["mean_over"] == [0, 1]
    counted = [s for s in result["samples"] if s["idx"] in (0, 1)]
    assert result["mean"]["Rmi"] == pytest.approx(np.mean([s["Rmi"] for s in counted]))
    second_log = (cache / "log.txt").read_text(encoding="utf-8").split("Time-Eval")[1]
    assert "Skipping 0/2" in second_log and "Processing 1/2" in second_log
    assert "Mean over 2 sample(s) of" in second_log
    assert "1 result(s) of samples not in" in second_log and "kept but not counted in the mean (idx 2)" in second_log
