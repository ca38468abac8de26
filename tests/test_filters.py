"""The map filter on row stripes in parallel equals the single OpenCV call on the whole map, bit for bit."""
import cv2
import numpy as np
import pytest

from predict.core.heatmap import MapFilter, filter_in_stripes, stripe_bounds

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
