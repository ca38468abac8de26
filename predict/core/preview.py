"""A SeLo map at screen resolution, fast: the cell map expanded onto a downscaled grid, filtered with the
filter scaled to it. An approximation of the full-resolution map for display; the exact map is
:func:`~predict.core.heatmap.probability_map` of the same cells. (Its attention centres, found by the
evaluator's peak search, are the explorer's: :func:`~predict.explorer.maps.preview_peaks`.)

Scaling the cell edges by ``s`` and the filter size by ``s`` commutes with the filter up to rounding of the
edges (< 1 preview pixel) and of the odd kernel size, so the preview looks like the full map shrunk by ``s``
while costing ``s**2`` of its pixels (5000 x 5000 at 1024 px: 25 times fewer, and a 51 median instead of
251).
"""
from __future__ import annotations

import cv2
import numpy as np

from predict.core.heatmap import CellMap, MapFilter, probability_map


def preview_scale(height: int, width: int, max_side: int) -> float:
    """The factor that brings the longer side of a ``height`` x ``width`` image to at most ``max_side``
    pixels (1.0 when it already fits).

    >>> preview_scale(5000, 2500, 1000), preview_scale(600, 800, 1000)
    (0.2, 1.0)
    """
    return min(1.0, max_side / max(height, width))


def shrink_by(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` averaged over ``factor`` x ``factor`` blocks; the rows and columns past its last whole block
    are left out, so a stripe of a multiple of ``factor`` rows shrinks to exactly its rows of the whole
    image's result.

    >>> shrink_by(np.arange(20, dtype=np.uint8).reshape(4, 5), 2).tolist()
    [[3, 5], [13, 15]]
    """
    if factor == 1:
        return image
    height, width = image.shape[0] // factor, image.shape[1] // factor
    if height == 0 or width == 0:  # a last stripe shorter than a block
        return np.empty((height, width, *image.shape[2:]), image.dtype)
    return cv2.resize(image[:height * factor, :width * factor], (width, height), interpolation=cv2.INTER_AREA)


def odd_size(size: int, scale: float) -> int:
    """``size`` scaled by ``scale``, rounded to the nearest odd integer >= 1.

    >>> odd_size(251, 0.2048), odd_size(255, 0.2), odd_size(3, 0.1)
    (51, 51, 1)
    """
    return max(1, 2 * int(round((size * scale - 1) / 2)) + 1)


def scaled_filter(map_filter: MapFilter, scale: float) -> MapFilter:
    """``map_filter`` with its kernel scaled by ``scale`` (odd).

    >>> scaled_filter(MapFilter(median=251), 0.2048)
    MapFilter(median=51, gaussian=None)
    """
    if map_filter.median is not None:
        return MapFilter(median=odd_size(map_filter.median, scale))
    return MapFilter(gaussian=odd_size(map_filter.gaussian, scale))


def scaled_cells(cells: CellMap, scale: float) -> CellMap:
    """``cells`` on a grid scaled by ``scale``: every edge rounded to the nearest pixel (cells narrower than
    half a preview pixel vanish).

    >>> cells = CellMap(np.array([0, 10, 20]), np.array([0, 5, 20]), np.zeros((2, 2)))
    >>> small = scaled_cells(cells, 0.5)
    >>> small.row_edges.tolist(), small.col_edges.tolist()
    ([0, 5, 10], [0, 2, 10])
    """
    def scale_edges(edges):
        return np.round(np.asarray(edges) * scale).astype(np.int64)
    return CellMap(scale_edges(cells.row_edges), scale_edges(cells.col_edges), cells.values, cells.scored)


def preview_map(cells: CellMap, map_filter: MapFilter, scale: float, name: str = "heat map") -> np.ndarray:
    """The uint8 probability map at ``scale`` of the full size, ``(round(H * s), round(W * s))``: the same
    normalisation as the full map, expanded on the scaled grid, filtered by the scaled filter.

    >>> cells = CellMap(np.array([0, 400]), np.array([0, 200, 400]), np.array([[0.1, 0.3]]))
    >>> preview_map(cells, MapFilter(median=3), 0.5).shape
    (200, 200)
    """
    return probability_map(scaled_cells(cells, scale), scaled_filter(map_filter, scale), name)
