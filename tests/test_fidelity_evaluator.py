"""Fidelity: every case of ../shared/reference/evaluator (the original evaluator's own outputs) to 1e-9.

Finite results: both ``evaluate_gray`` and the compatibility class ``SLM`` match all four indicators, the
attention centres, the annotation circles and the mask area. Where the original returned NaN, ``SLM``
returns NaN with a warning and ``evaluate_gray`` raises EvaluationInputError; where the original raised,
both raise EvaluationInputError.
"""
import hashlib
import json
import math
import warnings

import cv2
import numpy as np
import pytest

from evaluations.metrics import EvaluationInputError, annotation_mask, evaluate_gray
from evaluations.SLM import SLM
from evaluations.utils import ORIGINAL_KEYS

TOLERANCE = 1e-9


def load_cases(shared):
    folder = shared("reference", "evaluator")
    with open(folder / "cases.json", encoding="utf-8") as f:
        return folder, json.load(f)["cases"]


def read_case_map(folder, case) -> np.ndarray:
    gray = cv2.imread(str(folder / case["file"]), cv2.IMREAD_GRAYSCALE)
    digest = hashlib.sha256(f"{gray.shape[0]}x{gray.shape[1]}:".encode() + gray.tobytes()).hexdigest()
    assert digest == case["pixel_sha256"], f"{case['id']}: PNG decoded to other pixels"
    return gray


def expected_values(case) -> dict:
    return {name: float(value) for name, value in case["expected"].items()}  # "nan" -> nan


def test_every_reference_case(shared):
    folder, cases = load_cases(shared)
    assert len(cases) == 36
    slm = SLM()
    problems, checked = [], 0
    for case in cases:
        gray = read_case_map(folder, case)
        path = str(folder / case["file"])
        if case["expected"] is None:  # the original raised
            with pytest.raises(EvaluationInputError):
                slm.evaluate(path, region_list=case["polygons"])
            with pytest.raises(EvaluationInputError):
                evaluate_gray(gray, case["polygons"], name=case["id"])
            checked += 1
            continue
        expected = expected_values(case)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compat = slm.evaluate(path, region_list=case["polygons"])
        compat = {name: float(compat[key]) for name, key in ORIGINAL_KEYS.items()}
        for name, value in expected.items():
            if math.isnan(value) != math.isnan(compat[name]) or abs(compat[name] - value) > TOLERANCE:
                problems.append(f"{case['id']} SLM {name}: {compat[name]!r} != {value!r}")
        if any(math.isnan(v) for v in expected.values()):  # documented bad input
            if not any("NaN" in str(w.message) for w in caught):
                problems.append(f"{case['id']}: SLM gave NaN without its warning")
            with pytest.raises(EvaluationInputError):
                evaluate_gray(gray, case["polygons"], name=case["id"])
            checked += 1
            continue
        score = evaluate_gray(gray, case["polygons"], name=case["id"])
        for name, value in score.as_dict().items():
            if abs(value - expected[name]) > TOLERANCE:
                problems.append(f"{case['id']} {name}: {value!r} != {expected[name]!r}")
        facts = case["facts"]
        if [list(p) for p in score.centers] != facts["prob_centers"]:
            problems.append(f"{case['id']}: centres {score.centers} != {facts['prob_centers']}")
        if [list(c) for c in score.circles] != facts["ann_center_radius"]:
            problems.append(f"{case['id']}: circles {score.circles} != {facts['ann_center_radius']}")
        if annotation_mask(gray.shape, case["polygons"]).sum() != facts["mask_area"]:
            problems.append(f"{case['id']}: mask area differs from {facts['mask_area']}")
        checked += 1
    assert checked == len(cases)
    assert not problems, "\n".join(problems)


def test_nan_and_raising_cases_are_the_documented_ones(shared):
    # The documented bad-input kinds: zero radius (raise / NaN on hit), polygon outside, empty list.
    _, cases = load_cases(shared)
    bad = {case["id"]: case.get("variant") or case["kind"] for case in cases
           if case["expected"] is None or any(v == "nan" for v in case["expected"].values())}
    assert sorted(bad.values()) == ["all_vertices_equal", "empty_polygon_list", "outside_polygon",
                                    "zero_radius_hit"]


def test_slm_missing_file_is_a_clear_error(tmp_path):
    # The original raised TypeError (None / 255.0); the compatibility class names the file instead.
    with pytest.raises(EvaluationInputError, match="probmap_9.jpg: probability map not found"):
        SLM().evaluate(str(tmp_path / "probmap_9.jpg"), region_list=[[[0, 0], [5, 0], [5, 5]]])


def test_slm_mean_and_log_block(shared, caplog):
    folder, cases = load_cases(shared)
    slm = SLM()
    slm.logger.propagate = True  # let caplog see the records
    try:
        with caplog.at_level("INFO", logger=slm.logger.name):
            for case in cases[:2]:
                slm.append_metric(slm.evaluate(str(folder / case["file"]), region_list=case["polygons"]))
            mean = slm.get_the_mean_metric()
    finally:
        slm.logger.propagate = False
    for name, key in ORIGINAL_KEYS.items():
        assert mean[key] == pytest.approx(np.mean([float(c["expected"][name]) for c in cases[:2]]), abs=1e-12)
    text = caplog.text
    assert f"Eval {folder / cases[0]['file']}" in text and "+++++++++++++++Average++++++++++++++" in text
    assert f"++++     ↑ Rsu [0 ~ 1]:{float(cases[0]['expected']['Rsu']):.4f}   ++++" in text
