"""The map filter on row stripes in parallel equals the single OpenCV call on the whole map, bit for bit."""
import cv2
import numpy as np
import pytest

from predict.core.cell_median import cell_median
from predict.core.heatmap import MapFilter, mean_tile_scores, normalise_to_uint8, probability_map
from predict.core.stripes import filter_in_stripes, stripe_bounds

FILTERS = [MapFilter(median=251), MapFilter(gaussian=255), MapFilter(median=5), MapFilter(median=3),
           MapFilter(gaussian=31)]


def random_map(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)


def piecewise_constant_map(height, width, cell=128, seed=1):
    """What the filter gets in a run: a per-cell map expanded to full resolution (cells cut at odd sizes)."""
    cells = np.random.default_rng(seed).integers(0, 256, size=(-(-height // cell), -(-width // cell)), dtype=np.uint8)
    return np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[:height, :width]


@pytest.mark.parametrize("map_filter", FILTERS, ids=str)
@pytest.mark.parametrize("shape", [(1201, 777), (2048, 301), (1000, 1000)])
@pytest.mark.parametrize("make", [random_map, piecewise_constant_map])
@pytest.mark.parametrize("workers", [2, 3, 7])
def test_stripes_equal_the_whole_map_call(map_filter, shape, make, workers):
    gray = make(*shape)
    expected = (cv2.medianBlur(gray, map_filter.median) if map_filter.median
                else cv2.GaussianBlur(gray, (map_filter.gaussian,) * 2, 0, 0))
    np.testing.assert_array_equal(map_filter(gray, workers=workers), expected)


@pytest.mark.parametrize("map_filter", FILTERS, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (250, 9), (100, 100), (252, 2000)])
def test_maps_smaller_than_the_kernel(map_filter, shape):
    gray = piecewise_constant_map(*shape, cell=3)
    np.testing.assert_array_equal(map_filter(gray, workers=4), map_filter.whole(gray))


def test_more_stripes_than_a_short_map_allows_still_cover_every_row():
    """Forced thin stripes (radius 1 on a tall map): each output row comes from exactly one stripe."""
    gray = random_map(97, 50, seed=3)
    blur = lambda g: cv2.medianBlur(g, 3)  # noqa: E731
    np.testing.assert_array_equal(filter_in_stripes(gray, blur, 1, workers=16), blur(gray))
    bounds = stripe_bounds(97, 1, 16)
    assert [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]] and bounds[0][0] == 0 and bounds[-1][1] == 97


def random_cells(rng, max_cells=7, max_size=15, allow_empty=False):
    """Random cell edges (empty cells too with ``allow_empty``) and uint8 values, few or many distinct."""
    low = 0 if allow_empty else 1
    rows = np.concatenate([[0], np.cumsum(rng.integers(low, max_size, rng.integers(1, max_cells)))])
    cols = np.concatenate([[0], np.cumsum(rng.integers(low, max_size, rng.integers(1, max_cells)))])
    shape = (len(rows) - 1, len(cols) - 1)
    values = rng.integers(0, 256, shape) if rng.random() < 0.5 else rng.integers(0, 4, shape) * 60
    return rows, cols, values.astype(np.uint8)


def expand_cells(rows, cols, values):
    return np.repeat(np.repeat(values, np.diff(rows), axis=0), np.diff(cols), axis=1)


def test_cell_median_is_opencv_median_of_the_expanded_map():
    """Small random cell maps (empty cells, ties, windows larger than the map): every size, every border."""
    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(1500):
        rows, cols, values = random_cells(rng, allow_empty=trial % 4 == 0)
        if rows[-1] == 0 or cols[-1] == 0:
            continue
        size = int(rng.choice([1, 3, 5, 7, 9, 21, 51]))
        expanded = expand_cells(rows, cols, values)
        np.testing.assert_array_equal(cell_median(rows, cols, values, size), cv2.medianBlur(expanded, size),
                                      err_msg=f"trial {trial}: size {size}, rows {rows}, cols {cols}")
        checked += 1
    assert checked > 1000


@pytest.mark.parametrize("height, width", [(2233, 3058), (1000, 120), (700, 4001)])
def test_cell_median_on_a_tile_grid_at_the_v1_size(height, width):
    """The v1 case: the per-cell mean of half-offset tiles of 256, 512 and 768, filtered by a 251 median."""
    rng = np.random.default_rng(height)
    boxes = [(r, min(height, r + step), c, min(width, c + step))
             for step in (256, 512, 768) for offset in (0, step // 2)
             for r in range(offset, height, step) for c in range(offset, width, step)]
    cells = mean_tile_scores(boxes, rng.random(len(boxes)), height, width)
    gray = normalise_to_uint8(cells.values)
    expected = cv2.medianBlur(cells.expand(gray), 251)
    np.testing.assert_array_equal(cell_median(cells.row_edges, cells.col_edges, gray, 251), expected)
    np.testing.assert_array_equal(probability_map(cells, MapFilter(median=251)), expected)


def test_cell_median_rejects_what_its_kernel_cannot_take():
    """Bad sizes, edges and values raise one clear error instead of reaching the unchecked compiled loop."""
    rows, cols, values = np.array([0, 2, 5]), np.array([0, 3]), np.zeros((2, 1), np.uint8)
    with pytest.raises(ValueError, match="odd"):
        cell_median(rows, cols, values, 4)
    with pytest.raises(ValueError, match=r"values: expected uint8 \(2, 1\)"):
        cell_median(rows, cols, np.zeros((3, 1), np.uint8), 3)
    with pytest.raises(ValueError, match="values: expected uint8"):
        cell_median(rows, cols, np.zeros((2, 1)), 3)
    with pytest.raises(ValueError, match="row_edges: expected increasing"):
        cell_median(np.array([0, 5, 2]), cols, values, 3)
    with pytest.raises(ValueError, match="col_edges: expected increasing"):
        cell_median(rows, np.array([1, 3]), values, 3)
