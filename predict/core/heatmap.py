"""From tile scores to the SeLo probability map: accumulate, normalise, filter, colour. No file I/O.

The per-pixel mean of the tile scores is constant on the cells of the grid that all tile edges cut
the image into, so it is computed per cell (a few thousand values even for a 10000 x 10001 image)
with the same float64 additions, in the same tile order, as the original's per-pixel arrays, and only
the final uint8 map is expanded to full resolution.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from predict.core.notes import warn
from predict.core.stripes import filter_in_stripes, usable_cores

OVERLAY_WEIGHTS = (0.7, 0.3)  # image, colour map


@dataclass
class CellMap:
    """A piecewise-constant map: ``values[i, j]`` covers rows ``row_edges[i]:row_edges[i+1]`` and columns
    ``col_edges[j]:col_edges[j+1]``."""

    row_edges: np.ndarray  # (R + 1,) int64, from 0 to height
    col_edges: np.ndarray  # (C + 1,) int64, from 0 to width
    values: np.ndarray  # (R, C) float64
    scored: np.ndarray | None = None  # (R, C) bool: cells with at least one finite tile score (None: all)

    def expand(self, cells: np.ndarray, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Full-resolution ``(height, width)`` array of per-cell values ``cells`` (R, C), or its rows
        ``rows = (first, stop)`` alone as ``(stop - first, width)``.

        >>> cells = CellMap(np.array([0, 2, 5]), np.array([0, 1, 3]), np.zeros((2, 2)))
        >>> cells.expand(np.array([[1, 2], [3, 4]]), rows=(1, 3)).tolist()
        [[1, 2, 2], [3, 4, 4]]
        """
        first, stop = rows or (0, int(self.row_edges[-1]))
        heights = np.diff(np.clip(self.row_edges, first, stop))
        expanded = np.repeat(cells, heights, axis=0)
        return np.repeat(expanded, np.diff(self.col_edges), axis=1)


def mean_tile_scores(boxes: np.ndarray, scores: Sequence[float], height: int, width: int) -> CellMap:
    """Per-pixel mean of the finite scores of the boxes covering each pixel, as a :class:`CellMap`.

    Args:
        boxes: ``(K, 4)`` int ``(r0, r1, c0, c1)`` of the pixels each tile covers (``effective_box``),
            half-open, inside the image.
        scores: ``(K,)`` similarity of each tile; NaN and infinite scores are left out of the mean.
        height, width: image size in pixels.

    Cells no box covers get the value 0 (the v2 convention); cells covered only by boxes whose score is
    not finite get the minimum of the other covered cells (0 when no score is finite).

    >>> cells = mean_tile_scores([(0, 2, 0, 2), (0, 2, 1, 3)], [1.0, 3.0], 2, 4)
    >>> cells.col_edges.tolist(), cells.values.tolist()
    ([0, 1, 2, 3, 4], [[1.0, 2.0, 3.0, 0.0]])
    >>> mean_tile_scores([(0, 2, 0, 2), (0, 2, 1, 3)], [2.0, np.nan], 2, 4).values.tolist()
    [[2.0, 2.0, 2.0, 0.0]]
    >>> cells.expand(cells.values).shape
    (2, 4)
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    row_edges = np.unique(np.concatenate([[0, height], boxes[:, 0], boxes[:, 1]]))
    col_edges = np.unique(np.concatenate([[0, width], boxes[:, 2], boxes[:, 3]]))
    rows = np.searchsorted(row_edges, boxes[:, :2])
    cols = np.searchsorted(col_edges, boxes[:, 2:])
    sums = np.zeros((len(row_edges) - 1, len(col_edges) - 1))
    counts = np.zeros(sums.shape, dtype=np.int64)
    covered = np.zeros(sums.shape, dtype=bool)
    for (ra, rb), (ca, cb), score, finite in zip(rows, cols, scores, np.isfinite(scores)):
        covered[ra:rb, ca:cb] = True
        if finite:
            sums[ra:rb, ca:cb] += score
            counts[ra:rb, ca:cb] += 1
    scored = counts > 0
    values = np.divide(sums, counts, out=np.zeros_like(sums), where=scored)
    if scored.any():
        values[covered & ~scored] = values[scored].min()
    return CellMap(row_edges, col_edges, values, scored)


def scene_score(cells: CellMap) -> float:
    """The scene score: the maximum over pixels of the per-pixel mean of raw tile scores, before the
    per-image normalisation (NaN when no cell has a finite score).

    The map itself is normalised per image, so its peak is 1 whether or not the scene holds what was
    asked; the raw score is comparable across the queries of one image and across images scored by one
    encoder. Cells that no scored tile covers (v2's outside) are left out.

    >>> scene_score(mean_tile_scores([(0, 2, 0, 2), (0, 2, 1, 3)], [-1.0, -3.0], 2, 4))
    -1.0
    """
    values = cells.values if cells.scored is None else cells.values[cells.scored]
    return float(values.max()) if values.size else float("nan")


def is_flat(values: np.ndarray) -> bool:
    """Whether all ``values`` are equal (or not finite): a map normalisation cannot spread.

    >>> is_flat(np.zeros(3)), is_flat(np.array([0.0, 1.0]))
    (True, False)
    """
    return not np.ptp(values) > 0


def normalise_to_uint8(values: np.ndarray, name: str = "heat map", notes: list[str] | None = None) -> np.ndarray:
    """``uint8(255 * (v - min) / max(v - min))`` with truncation, as the original.

    When every value is equal the original divided 0 by 0; here the map is all zero, with a warning.

    >>> normalise_to_uint8(np.array([0.1, 0.2, 0.3]))
    array([  0, 127, 255], dtype=uint8)
    """
    if is_flat(values):
        warn(f"{name}: all tile scores are equal; the probability map is all zero", notes)
        return np.zeros(values.shape, dtype=np.uint8)
    shifted = values - np.min(values)
    return (shifted / np.max(shifted) * 255).astype(np.uint8)


@dataclass(frozen=True)
class MapFilter:
    """The denoising filter of the uint8 map: ``cv2.medianBlur`` (v1: 251) or ``cv2.GaussianBlur`` with
    sigma from the size (v2: 255 x 255), run on row stripes in parallel (:func:`filter_in_stripes`) with
    the output of the single call on the whole map.

    >>> MapFilter(median=3)(np.array([[0, 0, 0], [0, 255, 0], [0, 0, 0]], np.uint8)).max()
    np.uint8(0)
    """

    median: int | None = None
    gaussian: int | None = None

    def __post_init__(self):
        if (self.median is None) == (self.gaussian is None):
            raise ValueError("MapFilter takes exactly one of median=, gaussian=")
        size = self.median or self.gaussian
        if size < 1 or size % 2 == 0:
            raise ValueError(f"filter size {size} must be odd and positive")

    @property
    def radius(self) -> int:
        """Rows on each side an output pixel depends on."""
        return (self.median or self.gaussian) // 2

    def whole(self, gray: np.ndarray) -> np.ndarray:
        """The single OpenCV call on the whole uint8 ``(H, W)`` map (the original's)."""
        if self.median is not None:
            return cv2.medianBlur(gray, self.median)
        return cv2.GaussianBlur(gray, (self.gaussian, self.gaussian), 0, 0)

    def __call__(self, gray: np.ndarray, workers: int | None = None) -> np.ndarray:
        """The filtered uint8 ``(H, W)`` map, on ``workers`` threads (default: the usable cores)."""
        return filter_in_stripes(gray, self.whole, self.radius, workers or usable_cores())


def probability_map(cells: CellMap, map_filter: MapFilter, name: str = "heat map",
                    notes: list[str] | None = None) -> np.ndarray:
    """The filtered uint8 probability map ``(height, width)`` of a cell map: normalised, expanded, filtered.

    A median is computed from the cells themselves (:func:`~predict.core.cell_median.cell_median`, the same
    bytes as ``cv2.medianBlur`` on the expanded map, about 15 times less work at 251 and without the
    full-size input); a Gaussian filters the expanded map.
    """
    gray = normalise_to_uint8(cells.values, name, notes)
    if map_filter.median is not None:
        from predict.core.cell_median import cell_median  # numba: compiled (or loaded) on first use
        return cell_median(cells.row_edges, cells.col_edges, gray, map_filter.median)
    return map_filter(cells.expand(gray))


def probability_rows(cells: CellMap, gray: np.ndarray, map_filter: MapFilter, rows: tuple[int, int]) -> np.ndarray:
    """Rows ``rows = (first, stop)`` of :func:`probability_map`, uint8 ``(stop - first, width)``, from the
    normalised cells ``gray`` (R, C) uint8: the same bytes as those rows of the whole map (each output row of
    the median is computed on its own; the Gaussian's carry its radius of real rows, as
    :func:`~predict.core.stripes.filter_in_stripes`' stripes), so a map of any size is made stripe by stripe.
    """
    first, stop = rows
    if map_filter.median is not None:
        from predict.core.cell_median import cell_median  # numba: compiled (or loaded) on first use
        return cell_median(cells.row_edges, cells.col_edges, gray, map_filter.median, rows=rows)
    height = int(cells.row_edges[-1])
    top, bottom = max(0, first - map_filter.radius), min(height, stop + map_filter.radius)
    return map_filter(cells.expand(gray, rows=(top, bottom)))[first - top:stop - top]


# Full-size outputs are allocated by numpy and handed to OpenCV: numpy asks the kernel for huge pages, so
# the first write into 300 MB costs a few hundred page faults, not 70 000 (0.03 s of system time, not 0.5).


def colour_heatmap(probmap: np.ndarray) -> np.ndarray:
    """JET colour map of the uint8 probability map, BGR ``(H, W, 3)``."""
    return cv2.applyColorMap(probmap, cv2.COLORMAP_JET, dst=np.empty((*probmap.shape, 3), np.uint8))


def overlay(image_bgr: np.ndarray, heatmap_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``cv2.addWeighted(image, 0.7, heatmap, 0.3, 0)``, the original's addmap (into ``out`` if given,
    which may be ``heatmap_bgr`` itself)."""
    out = np.empty_like(image_bgr) if out is None else out
    return cv2.addWeighted(image_bgr, OVERLAY_WEIGHTS[0], heatmap_bgr, OVERLAY_WEIGHTS[1], 0, dst=out)
