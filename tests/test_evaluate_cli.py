"""The evaluation CLI on a small generated cache folder, the results store behind it, and the run engine's
evaluation of the map it has just written."""
import csv
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from evaluations.metrics import EvaluationInputError, SeloScore, evaluate_gray
from predict.cli.evaluate import main
from predict.io.results import MetricsStore
from predict.testset import evaluate as evaluation
from predict.testset.evaluate import evaluate_written_map

from helpers import REPO_ROOT, subprocess_env

SQUARE = [[150, 100], [250, 100], [250, 200], [150, 200]]


def blob_map(height=300, width=400, centre=(100, 80)) -> np.ndarray:
    """uint8 map with one smooth bright blob at ``centre`` (x, y)."""
    canvas = np.zeros((height, width), np.float32)
    cv2.circle(canvas, centre, 40, 1.0, -1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 20)
    return (canvas / canvas.max() * 255).astype(np.uint8)


@pytest.fixture
def cache(tmp_path):
    """Four samples: 0 constant map, 1 missing probmap, 2 two-point polygon, 3 blob; and anno.json."""
    cv2.imwrite(str(tmp_path / "probmap_0.jpg"), np.full((300, 400), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "probmap_2.jpg"), blob_map())
    cv2.imwrite(str(tmp_path / "probmap_3.jpg"), blob_map())
    anno = [{"caption": "a square field\n", "jpg_name": "0.jpg", "points": [SQUARE]},
            {"caption": "no map", "jpg_name": "1.jpg", "points": [SQUARE]},
            {"caption": "two points", "jpg_name": "2.jpg", "points": [[[1, 1], [5, 5]]]},
            {"caption": "a bright blob", "jpg_name": "3.jpg", "points": [[[60, 40], [140, 40], [140, 120], [60, 120]]]}]
    (tmp_path / "anno.json").write_text(json.dumps(anno), encoding="utf-8")
    return tmp_path


def run_cli(*args):
    """``python predict/evaluate_selo.py ARGS``, the original's command line, from the checkout's root."""
    return subprocess.run([sys.executable, "predict/evaluate_selo.py", *map(str, args)], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_cli_scores_good_samples_and_reports_bad_ones(cache):
    assert cv2.imread(str(cache / "probmap_0.jpg"), cv2.IMREAD_GRAYSCALE).min() == 200  # JPEG keeps a flat map
    result = run_cli("--cache_path", cache, "--src_anno_path", cache / "anno.json")
    assert result.returncode == 1, result.stderr
    output = (result.stdout + result.stderr).splitlines()
    errors = [line for line in output if line.startswith("ERROR: Sample")]
    assert errors == [f"ERROR: Sample 1 (1.jpg) failed: {cache / 'probmap_1.jpg'}: probability map not found",
                      f"ERROR: Sample 2 (2.jpg) failed: {cache / 'probmap_2.jpg'}: polygon 0: 2 points, at least 3 needed"]

    data = json.loads((cache / "metrics.json").read_text(encoding="utf-8"))
    assert [s["idx"] for s in data["samples"]] == [0, 3] and [e["idx"] for e in data["errors"]] == [1, 2]
    first = data["samples"][0]
    # Constant map (see test_metrics): centre (199, 149), circle (200, 150, 106), Rda 1, Rsu = 1 - exp(-0.707).
    assert first["centers"] == [[199, 149]] and first["circles"] == [[200, 150, 106]]
    assert first["Rda"] == 1.0 and first["Rsu"] == pytest.approx(1 - math.exp(-0.707), abs=1e-6)
    assert first["Ras"] == pytest.approx((math.exp(3 * math.sqrt(2) / 106) - 1) / (math.exp(3) - 1), abs=1e-12)
    blob = data["samples"][1]
    assert blob["Rda"] == 1.0 and len(blob["centers"]) == 1  # one peak, inside the square's circle
    assert data["mean"]["Rmi"] == pytest.approx((first["Rmi"] + blob["Rmi"]) / 2)

    rows = list(csv.reader((cache / "metrics.csv").open(encoding="utf-8")))
    assert rows[0] == ["idx", "jpg_name", "caption", "Rsu", "Rda", "Ras", "Rmi"]
    assert [r[0] for r in rows[1:]] == ["0", "3", "mean"] and float(rows[1][6]) == first["Rmi"]

    log = (cache / "log.txt").read_text(encoding="utf-8")
    assert f"Eval {cache / 'probmap_0.jpg'}" in log and "+++++++++++++++Average++++++++++++++" in log
    assert "++++     ↑ Rsu [0 ~ 1]:0.5069   ++++" in log and "probability map not found" in log
    assert not (cache / "report.html").exists()


def test_cli_exit_codes_and_report(cache):
    anno = json.loads((cache / "anno.json").read_text(encoding="utf-8"))
    (cache / "good.json").write_text(json.dumps([anno[0], anno[3], anno[3], anno[0]]), encoding="utf-8")
    cv2.imwrite(str(cache / "probmap_1.jpg"), blob_map())
    cv2.imwrite(str(cache / "probmap_2.jpg"), np.full((300, 400), 200, np.uint8))
    assert main(["--cache_path", str(cache), "--src_anno_path", str(cache / "good.json"), "--report"]) == 0
    assert (cache / "report.html").is_file()
    assert main(["--cache_path", str(cache / "absent"), "--src_anno_path", str(cache / "good.json")]) == 2
    (cache / "broken.json").write_text("[{", encoding="utf-8")
    assert main(["--cache_path", str(cache), "--src_anno_path", str(cache / "broken.json")]) == 2


def score(value: float) -> SeloScore:
    return SeloScore(rsu=value, ras=1 - value, rda=value, rmi=value, centers=[(1, 2)], circles=[(3, 4, 5)])


def test_store_replaces_records_and_keeps_files_valid(tmp_path):
    store = MetricsStore(str(tmp_path))
    assert not store.is_done(0) and math.isnan(store.mean()["Rsu"])
    store.record(2, "b.jpg", "second", score(0.5))
    store.record(0, "a.jpg", "first", score(0.25), n_tiles=7)
    store.record_error(1, "c.jpg", "third", "probmap_1.jpg: probability map not found")
    store.set_timings({"cut": 1.0, "sim": 2.0, "gnt": 0.5, "flt": 0.25, "total": 3.75})
    assert store.is_done(0) and store.is_done(2) and not store.is_done(1)
    assert store.mean() == {"Rsu": 0.375, "Rda": 0.375, "Ras": 0.625, "Rmi": 0.375}

    reloaded = MetricsStore(str(tmp_path))
    assert [s["idx"] for s in reloaded.samples] == [0, 2] and reloaded.samples[0]["n_tiles"] == 7
    assert reloaded.samples[0]["centers"] == [[1, 2]] and reloaded.samples[0]["circles"] == [[3, 4, 5]]
    assert reloaded.errors[0]["error"].endswith("not found") and reloaded.timings["total"] == 3.75

    reloaded.record(1, "c.jpg", "third", score(1.0))  # a success replaces the error...
    assert [e["idx"] for e in reloaded.errors] == [] and reloaded.is_done(1)
    reloaded.record_error(2, "b.jpg", "second", "bad polygon")  # ...and an error replaces a success
    assert [s["idx"] for s in reloaded.samples] == [0, 1] and not reloaded.is_done(2)
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv", "metrics.json"]  # no temporary file left


def test_store_writes_nan_as_null_and_survives_a_corrupt_file(tmp_path):
    store = MetricsStore(str(tmp_path))
    store.record(0, "a.jpg", "nan sample", score(math.nan))
    text = (tmp_path / "metrics.json").read_text(encoding="utf-8")
    data = json.loads(text)  # strict JSON: no NaN token
    assert "NaN" not in text and data["samples"][0]["Rsu"] is None and data["mean"]["Rsu"] is None
    assert math.isnan(MetricsStore(str(tmp_path)).mean()["Rsu"])
    assert (tmp_path / "metrics.csv").read_text(encoding="utf-8").splitlines()[1].endswith("nan,nan,nan,nan")

    (tmp_path / "metrics.json").write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="unreadable results file"):
        fresh = MetricsStore(str(tmp_path))
    assert fresh.samples == [] and fresh.errors == []


@pytest.mark.parametrize("keep_map", [True, False])
def test_a_written_map_scores_as_its_decoded_array_whether_kept_or_decoded_twice(keep_map, monkeypatch):
    """The engine's evaluation: short of memory, the map let go during the peak search and decoded again
    after; the same numbers as the decoded map's either way."""
    decodes = []
    decode = evaluation.decode_probmap
    monkeypatch.setattr(evaluation, "decode_probmap", lambda data: decodes.append(1) or decode(data))
    rng = np.random.default_rng(5)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (400, 500), np.uint8), (0, 0), 25)
    gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX)
    data = cv2.imencode(".jpg", gray)[1]
    polygons = [[[100, 100], [300, 100], [300, 250], [100, 250]], [[350, 50], [480, 60], [420, 200]]]
    score = evaluate_written_map(data, polygons, "sample 3", keep_map)
    assert len(decodes) == (1 if keep_map else 2)
    assert score == evaluate_gray(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), polygons) and score.centers
    with pytest.raises(EvaluationInputError, match="sample 3: expected a non-empty uint8"):
        evaluate_written_map(np.frombuffer(b"not a jpeg", np.uint8), polygons, "sample 3", keep_map)
