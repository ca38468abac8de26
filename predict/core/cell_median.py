"""``cv2.medianBlur`` of a piecewise-constant map, computed from its cells without expanding it.

The unfiltered SeLo map is constant on the cells of the tile grid (:class:`~predict.core.heatmap.CellMap`), a
few thousand cells for a 10000 x 10001 image. For an output pixel the ``k x k`` window covers a few cells,
each with a weight (overlap area) that is the product of a row overlap and a column overlap; the median is
the smallest cell value whose cumulative weight reaches ``k * k // 2 + 1``. Along one output row, between
the columns where the window's left or right edge crosses a cell edge, every column weight is constant or
changes by one pixel per column, so each cumulative weight is linear in the column: where the median
changes is solved for exactly in integers, and each run of equal output is filled at once. The work is
about one pass over the output bytes plus a few operations per (row, cell column), instead of OpenCV's
histogram update per pixel (0.03 s per megapixel for ``k = 251``).

The border rule is OpenCV's: rows and columns beyond the map repeat the first and last ones
(``BORDER_REPLICATE``), which here is the first and last cells reaching ``k // 2`` pixels further.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from predict.core.stripes import usable_cores

VALUES = 256  # uint8
MIN_ROWS_PER_THREAD = 512  # fewer rows are not worth a thread


@numba.njit(cache=True, nogil=True)
def _median_rows(row_edges, col_edges, values, size, out, first_row, stop_row, out_row0):  # pragma: no cover
    """Fill ``out[first_row - out_row0:stop_row - out_row0]`` with the map's median rows ``first_row:stop_row``;
    edges already extended by the radius (int64), ``values`` (R, C) uint8, no empty cell (compiled)."""
    radius = size // 2
    target = size * size // 2 + 1  # the median is the smallest value with this cumulative weight
    n_rows, n_cols = values.shape
    width = out.shape[1]
    weight_at = np.zeros(VALUES, np.int64)  # per value: weight at the segment's first column
    slope_of = np.zeros(VALUES, np.int64)  # per value: weight change per column
    touched = np.empty(VALUES, np.int64)
    sorted_values = np.empty(VALUES, np.int64)
    cumulative = np.empty(VALUES, np.int64)
    slopes = np.empty(VALUES, np.int64)
    row_cells = np.empty(n_rows, np.int64)
    row_weights = np.empty(n_rows, np.int64)
    low_row = 0
    for y in range(first_row, stop_row):
        top, bottom = y - radius, y + radius + 1  # the window's rows [top, bottom)
        while row_edges[low_row + 1] <= top:
            low_row += 1
        n_window_rows = 0
        i = low_row
        while i < n_rows and row_edges[i] < bottom:
            row_cells[n_window_rows] = i
            row_weights[n_window_rows] = min(row_edges[i + 1], bottom) - max(row_edges[i], top)
            n_window_rows += 1
            i += 1
        left_cell, right_cell = 0, 0  # cells holding the window's first and last column
        x = 0
        while x < width:
            while col_edges[left_cell + 1] <= x - radius:
                left_cell += 1
            while col_edges[right_cell + 1] <= x + radius:
                right_cell += 1
            # the segment [x, stop): up to where the window's first or last column enters another cell
            stop = min(col_edges[left_cell + 1] + radius, col_edges[right_cell + 1] - radius, width)
            n_touched = 0
            for j in range(left_cell, right_cell + 1):
                if left_cell == right_cell:
                    column_weight, column_slope = size, 0
                elif j == left_cell:
                    column_weight, column_slope = col_edges[j + 1] - (x - radius), -1
                elif j == right_cell:
                    column_weight, column_slope = x + radius + 1 - col_edges[j], 1
                else:
                    column_weight, column_slope = col_edges[j + 1] - col_edges[j], 0
                for k in range(n_window_rows):
                    value = values[row_cells[k], j]
                    if weight_at[value] == 0:  # first seen: every weight in the window is at least 1
                        touched[n_touched] = value
                        n_touched += 1
                    weight_at[value] += row_weights[k] * column_weight
                    slope_of[value] += row_weights[k] * column_slope
            # the touched values in increasing order (insertion sort: a few to a few dozen)
            for a in range(n_touched):
                value = touched[a]
                b = a
                while b > 0 and sorted_values[b - 1] > value:
                    sorted_values[b] = sorted_values[b - 1]
                    b -= 1
                sorted_values[b] = value
            running_weight, running_slope = 0, 0
            for a in range(n_touched):
                value = sorted_values[a]
                running_weight += weight_at[value]
                running_slope += slope_of[value]
                cumulative[a], slopes[a] = running_weight, running_slope
                weight_at[value], slope_of[value] = 0, 0
            # runs: the median at column x + t is the first value whose cumulative + t * slope >= target
            base = x
            while x < stop:
                t = x - base
                median = 0
                while cumulative[median] + t * slopes[median] < target:
                    median += 1
                run_end = stop
                for a in range(median):  # a smaller value reaches the target further on
                    if slopes[a] > 0:
                        reach = base + (target - cumulative[a] + slopes[a] - 1) // slopes[a]
                        run_end = min(run_end, reach)
                if slopes[median] < 0:  # the median's own weight falls below the target further on
                    run_end = min(run_end, base + (cumulative[median] - target) // -slopes[median] + 1)
                out[y - out_row0, x:run_end] = sorted_values[median]
                x = run_end


def cell_median(row_edges: np.ndarray, col_edges: np.ndarray, values: np.ndarray, size: int,
                workers: int | None = None, rows: tuple[int, int] | None = None) -> np.ndarray:
    """``cv2.medianBlur(expanded, size)`` of the cell map ``values`` (R, C) uint8 on the edges ``row_edges``
    (R + 1,) and ``col_edges`` (C + 1,) (pixels, from 0 to the map's height / width; empty cells allowed),
    bit for bit, as a uint8 ``(H, W)`` array, or its rows ``rows = (first, stop)`` alone as
    ``(stop - first, W)`` (each row is computed on its own, so a map is made stripe by stripe); rows shared
    among ``workers`` threads (default: the usable cores).

    >>> import cv2
    >>> rows, cols = np.array([0, 3, 9]), np.array([0, 4, 5, 11])
    >>> values = np.array([[10, 200, 30], [40, 50, 60]], np.uint8)
    >>> expanded = np.repeat(np.repeat(values, np.diff(rows), axis=0), np.diff(cols), axis=1)
    >>> np.array_equal(cell_median(rows, cols, values, 5), cv2.medianBlur(expanded, 5))
    True
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"median size {size} must be odd and positive")
    row_edges, col_edges = np.asarray(row_edges, np.int64), np.asarray(col_edges, np.int64)
    values = np.asarray(values)
    for name, edges in (("row_edges", row_edges), ("col_edges", col_edges)):
        if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0 or np.any(np.diff(edges) < 0):
            raise ValueError(f"{name}: expected increasing pixel edges from 0, got {edges.tolist()}")
    if values.dtype != np.uint8 or values.shape != (len(row_edges) - 1, len(col_edges) - 1):
        # the compiled kernel does not check its indices: a mismatch would read outside the arrays
        raise ValueError(f"values: expected uint8 ({len(row_edges) - 1}, {len(col_edges) - 1}) for the edges, "
                         f"got {values.dtype} {values.shape}")
    keep_rows, keep_cols = np.diff(row_edges) > 0, np.diff(col_edges) > 0
    row_edges = np.append(row_edges[:-1][keep_rows], row_edges[-1])
    col_edges = np.append(col_edges[:-1][keep_cols], col_edges[-1])
    values = np.ascontiguousarray(values[keep_rows][:, keep_cols])
    height, width = int(row_edges[-1]), int(col_edges[-1])
    first, stop = rows or (0, height)
    out = np.empty((stop - first, width), np.uint8)
    if out.size == 0:
        return out
    radius = size // 2
    # OpenCV's BORDER_REPLICATE: the first and last cells reach the radius beyond the map
    row_edges[0], row_edges[-1] = -radius, height + radius
    col_edges[0], col_edges[-1] = -radius, width + radius
    threads = max(1, min(workers or usable_cores(), (stop - first) // MIN_ROWS_PER_THREAD))
    bounds = np.linspace(first, stop, threads + 1).round().astype(int)
    if len(bounds) == 2:
        _median_rows(row_edges, col_edges, values, size, out, first, stop, first)
        return out
    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        list(pool.map(lambda a, b: _median_rows(row_edges, col_edges, values, size, out, a, b, first),
                      bounds[:-1], bounds[1:]))
    return out


def load_kernel() -> None:
    """Compile the kernel, or load it from numba's cache, now rather than on the first map (LLVM and the
    code take about 100 MB, which a run's memory budget should see from the start)."""
    cell_median(np.array([0, 1]), np.array([0, 1]), np.zeros((1, 1), np.uint8), 1)
