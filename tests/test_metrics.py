"""Unit tests of each SeLo indicator step on tiny hand-made maps; expected values derived by hand (comments)."""
import math

import cv2
import numpy as np
import pytest
from scipy.ndimage import maximum_filter
from skimage import measure

from evaluations import metrics
from evaluations.metrics import (EvaluationInputError, SeloScore, annotation_circle, annotation_mask,
                                 attention_centres, evaluate_gray, rank_centres, ras, rda, region_centroids, rmi, rsu,
                                 smooth_gray, window_maximum)

E3 = math.exp(3) - 1  # Ras denominator


def test_mask_fills_truncated_vertices_inclusive():
    # Vertices truncate to (1,1),(4,1),(4,3),(1,3): rows 1..3 x cols 1..4, borders included = 12 pixels.
    mask = annotation_mask((6, 6), [[[1.9, 1.2], [4.7, 1.0], [4.2, 3.9], [1.0, 3.5]]])
    expected = np.zeros((6, 6), np.uint8)
    expected[1:4, 1:5] = 1
    np.testing.assert_array_equal(mask, expected)


def test_mask_of_overlapping_polygons_leaves_overlap_inside_empty():
    # Squares rows/cols 0..5 and 3..8 (36 px each) overlap on 3..5 x 3..5 (9 px): union 63 px. One fillPoly
    # call leaves the overlap's inside (only pixel (4, 4); the rest are outlines) unfilled: 62 px.
    mask = annotation_mask((10, 10), [[[0, 0], [5, 0], [5, 5], [0, 5]], [[3, 3], [8, 3], [8, 8], [3, 8]]])
    assert mask.sum() == 62 and mask[4, 4] == 0


def test_rsu_by_hand():
    # 4x5 map: gray 255 (P=1) on the 2x2 mask, one pixel of gray 51 (P=0.2) outside.
    # S_in = 4, S_all = 4.2, A = 4, L = 4 / (0.2 + 1e-7), R = (20 - 4) / 4 = 4.
    gray = np.zeros((4, 5), np.uint8)
    gray[1:3, 1:3] = 255
    gray[0, 4] = 51
    mask = annotation_mask(gray.shape, [[[1, 1], [2, 1], [2, 2], [1, 2]]])
    assert rsu(gray, mask) == pytest.approx(1 - math.exp(-0.707 * (4 / (0.2 + 1e-7)) * 4), abs=1e-12)


def test_rsu_constant_map_full_cover_and_empty_mask():
    gray = np.full((30, 40), 90, np.uint8)
    square = annotation_mask(gray.shape, [[[5, 5], [14, 5], [14, 14], [5, 14]]])
    # Constant P: L = A / (HW - A) (up to 1e-7), R = (HW - A) / A, so L * R = 1 and Rsu = 1 - exp(-0.707).
    assert rsu(gray, square) == pytest.approx(1 - math.exp(-0.707), abs=1e-6)
    # Mask covering every pixel: R = 0, Rsu = 0 exactly.
    assert rsu(gray, np.ones_like(gray)) == 0.0
    # Empty mask: R = HW / 0 = inf, L = 0, 0 * inf = NaN (numpy warns), as in the original.
    with pytest.warns(RuntimeWarning):
        assert math.isnan(rsu(gray, np.zeros_like(gray)))


def test_window_maximum_by_hand_and_like_scipy():
    # Size 4: offsets -2..+1 clipped to the row; out[i] = max(x[i-2 .. i+1]).
    row = np.array([[0, 0, 9, 0, 0, 0, 5]], np.uint8)
    np.testing.assert_array_equal(window_maximum(row, 4), [[0, 9, 9, 9, 9, 5, 5]])
    rng = np.random.default_rng(0)
    for shape, size in [((7, 9), 1000), ((1100, 1301), 1000), ((40, 33), 7), ((13, 1), 50)]:
        image = rng.integers(0, 256, shape).astype(np.uint8)
        np.testing.assert_array_equal(window_maximum(image, size), maximum_filter(image, size=size))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_window_maximum_on_blocks_and_threads_like_scipy(monkeypatch, workers):
    monkeypatch.setattr(metrics, "WINDOW_BLOCK", 7)  # many blocks, a last partial one
    rng = np.random.default_rng(workers)
    for shape, size in [((61, 45), 20), ((30, 50), 9), ((5, 64), 1000), ((50, 1), 6)]:
        image = rng.integers(0, 256, shape).astype(np.uint8)
        expected = maximum_filter(image, size=size)
        np.testing.assert_array_equal(window_maximum(image, size, workers=workers), expected)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_smoothing_on_row_blocks_equals_five_box_filters_of_the_whole_map(monkeypatch, workers):
    monkeypatch.setattr(metrics, "SMOOTH_BLOCK_ROWS", 16)  # blocks far shorter than the passes' reach
    rng = np.random.default_rng(workers)
    for shape, size in [((203, 37), 6), ((40, 40), 50), ((129, 3), 5), ((1, 20), 4)]:
        gray = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.uint8), (0, 0), 2)
        expected = gray
        for _ in range(5):
            expected = cv2.boxFilter(expected, -1, (size, size))
        np.testing.assert_array_equal(smooth_gray(gray, size, workers=workers), expected)


def test_region_centroids_by_hand():
    binary = np.zeros((5, 6), np.uint8)
    binary[0:2, 4:6] = 1  # 2x2 block: centroid (4.5, 0.5) -> (4, 0); first in raster order
    binary[3, 2] = binary[4, 3] = 1  # diagonal pair, one 8-connected region: (2.5, 3.5) -> (2, 3)
    binary[3, 0] = 1  # single pixel (0, 3): starts on row 3 before the pair (column 0 < 2)
    assert region_centroids(binary) == [(4, 0), (0, 3), (2, 3)]
    assert region_centroids(np.zeros((4, 4), np.uint8)) == []


@pytest.mark.parametrize("workers", [1, 3])
def test_region_centroids_like_skimage_regionprops(workers):
    # The original's labelling (skimage, connectivity 2) and int-truncated regionprops centroids; sparse maps
    # split into many boxes, labelled on the threads in any order.
    rng = np.random.default_rng(1)
    for _ in range(30):
        binary = (rng.random(tuple(rng.integers(5, 90, 2))) < rng.uniform(0.005, 0.6)).astype(np.uint8)
        expected = [(int(r.centroid[1]), int(r.centroid[0]))
                    for r in measure.regionprops(measure.label(binary, connectivity=2))]
        assert region_centroids(binary, workers=workers) == expected


def test_rank_centres_threshold_and_stable_ties():
    gray = np.zeros((3, 6), np.uint8)
    gray[0, 0], gray[0, 5], gray[2, 2], gray[1, 1], gray[1, 3] = 200, 250, 200, 127, 128
    points = [(0, 0), (5, 0), (1, 1), (2, 2), (3, 1)]
    # 127 < 128 dropped; 250 first, the two 200s keep their order, 128 last.
    assert rank_centres(points, gray) == [(5, 0), (0, 0), (2, 2), (3, 1)]


def test_attention_centres_of_constant_maps():
    # A constant map stays constant through the box filters: one tie region, the whole image,
    # centroid ((W - 1) / 2, (H - 1) / 2) truncated = (19, 14) for 30x40.
    assert attention_centres(np.full((30, 40), 200, np.uint8)) == [(19, 14)]
    assert attention_centres(np.full((30, 40), 128, np.uint8)) == [(19, 14)]
    assert attention_centres(np.full((30, 40), 127, np.uint8)) == []  # P < 0.5
    assert attention_centres(np.zeros((30, 40), np.uint8)) == []  # zero maxima are not peaks


def test_annotation_circle_by_hand():
    # Centre (2, 2), every vertex at sqrt(8) = 2.83 from it: r = int(1.5 * 2.83) = int(4.24) = 4.
    assert annotation_circle([[0, 0], [4, 0], [4, 4], [0, 4]]) == (2, 2, 4)
    # Mean x = -7/3 = -2.33 truncates toward zero to -2 (not floor -3); mean y = -8/3 -> -2.
    cx, cy, _ = annotation_circle([[-3, -3], [-2, -3], [-2, -2]])
    assert (cx, cy) == (-2, -2)
    # Repeated vertices count: cx = int(6 / 4) = 1, cy = int(3 / 4) = 0.
    assert annotation_circle([[0, 0], [0, 0], [6, 0], [0, 3]])[:2] == (1, 0)
    with pytest.raises(EvaluationInputError, match="non-finite"):
        annotation_circle([[0, 0], [math.nan, 1], [2, 2]])


def test_ras_by_hand():
    circle = (0, 0, 10)
    assert ras([circle], [(3, 4)]) == pytest.approx((math.exp(1.5) - 1) / E3)  # d = 5: G = 0.5
    assert ras([circle], [(6, 8)]) == pytest.approx(1.0)  # d = 10 <= r: G = 1
    assert ras([circle], [(30, 0)]) == 1.0  # no centre inside: offset = r, G = 1
    # Two circles: G = (5/10 + 20/20) / 2 = 0.75.
    assert ras([circle, (100, 100, 20)], [(3, 4)]) == pytest.approx((math.exp(2.25) - 1) / E3)
    assert ras([circle, (100, 100, 20)], []) == 1.0  # no centre at all: only the first circle counts
    with pytest.warns(RuntimeWarning):  # zero radius with a centre on it: 0.0 / 0 = NaN
        assert math.isnan(ras([(5, 5, 0)], [(5, 5)]))
    with pytest.raises(EvaluationInputError, match="zero-radius"):
        ras([(5, 5, 0)], [(9, 9)])


def test_rda_by_hand():
    circle = (0, 0, 10)
    assert rda([circle], []) == 0.0
    assert rda([circle], [(3, 4), (50, 50)]) == 1.0  # one centre inside
    # Two inside, mean point (0, 0), d = 5: 0.5 * (1 - 5/10) + exp(-0.5 * (2 + 2)).
    assert rda([circle], [(3, 4), (-3, -4)]) == pytest.approx(0.25 + math.exp(-2))
    assert rda([circle, (100, 100, 5)], [(3, 4)]) == 0.5  # mean of 1 and 0


def test_rmi_by_hand():
    assert rmi(1.0, 0.0, 1.0) == pytest.approx(1.0)
    assert rmi(0.5, 0.2, 0.6) == pytest.approx(0.2 + 0.28 + 0.15)


def test_evaluate_gray_on_a_constant_map_by_hand():
    gray = np.full((300, 400), 200, np.uint8)
    square = [[150, 100], [250, 100], [250, 200], [150, 200]]
    score = evaluate_gray(gray, [square])
    # Centre (199, 149) (constant map); circle (200, 150), r = int(1.5 * 70.71) = 106; offset sqrt(2).
    assert score.centers == [(199, 149)] and score.circles == [(200, 150, 106)]
    expected_ras = (math.exp(3 * math.sqrt(2) / 106) - 1) / E3
    assert score.ras == pytest.approx(expected_ras, abs=1e-12)
    assert score.rda == 1.0
    assert score.rsu == pytest.approx(1 - math.exp(-0.707), abs=1e-6)
    assert score.rmi == pytest.approx(0.4 * score.rsu + 0.35 * (1 - expected_ras) + 0.25, abs=1e-12)
    assert list(score.as_dict()) == ["Rsu", "Rda", "Ras", "Rmi"]
    assert isinstance(score, SeloScore)


@pytest.mark.parametrize("polygons, problem", [
    ([], "no annotation polygon"),
    ([[[0, 0], [5, 5]]], "polygon 0: 2 points, at least 3 needed"),
    ([[[0, 0], [5, 0], [5, 5]], [[1, 1], [math.inf, 2], [3, 3]]], "polygon 1: non-finite"),
    ([[[0, 0], [5, 0], [5, 5]], [[1, 1, 1], [2, 2, 2], [3, 3, 3]]], "polygon 1: vertices are not"),
    ([[[500, 10], [600, 10], [600, 20]]], "polygon 0: entirely outside the 40x50 map"),
    ([[[10, 10], [10.2, 10], [10, 10.2]]], "polygon 0: zero-radius annotation circle"),
    ([[[-10, 5], [5, -10], [-20, -20]]], "the polygons cover no pixel"),  # box meets the map, shape does not
])
def test_evaluate_gray_rejects_bad_input(polygons, problem):
    with pytest.raises(EvaluationInputError) as info:
        evaluate_gray(np.full((40, 50), 200, np.uint8), polygons, name="map_7.jpg")
    message = str(info.value)
    assert message.startswith("map_7.jpg: ") and problem in message and "\n" not in message


def test_evaluate_gray_rejects_non_gray_arrays():
    with pytest.raises(EvaluationInputError, match="uint8"):
        evaluate_gray(np.zeros((10, 10, 3), np.uint8), [[[0, 0], [5, 0], [5, 5]]])
