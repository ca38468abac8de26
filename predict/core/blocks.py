"""Stripes of a scene too large to hold whole: how it is split for a memory budget, and the attention
centres' regions joined across row stripes. Pure arrays, no file I/O.

SeLo's structure is what makes a split exact: a tile's vector needs only its own pixels (a stripe is read
with the largest tile beyond it, so every tile whose first row lies in it is cut whole), the
per-pixel mean of the tile scores is constant on the cells of the tile grid (a few hundred thousand cells
even for a 40000 x 40000 scene, held whole), the normalisation needs only the cells' extremes, and every
filter after it needs only a margin of rows around each stripe of output rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

STRIPE_BYTES_PER_PIXEL = 4  # a reading stripe: BGR and the valid mask
MAP_BYTES_PER_PIXEL = 16  # a map stripe: its rows, the peak search's buffers and labels, the overlay's colours
ROWS_ALIGN = 256  # stripes are whole numbers of the maps' 256-row tiles


@dataclass(frozen=True)
class StripePlan:
    """How a scene is read and its maps made within a memory budget.

    Attributes:
        rows: rows of a reading stripe (the scene's height: one block, decoded once and kept).
        margin: rows read beyond a stripe (the largest tile or box), kept for the next one.
        map_rows: rows of a map stripe (filter, COG, peaks, overlay).
    """

    rows: int
    margin: int
    map_rows: int


def plan_stripes(height: int, width: int, room: int, margin: int, block_rows: int = 1) -> StripePlan:
    """The stripes of a ``height`` x ``width`` scene whose buffers fit ``room`` bytes: one block when the
    scene's 8-bit pixels take at most half of it; else reading stripes such that the stripe being cut with
    its margin and the new rows of the next two, decoded meanwhile, fit (``3 rows + margin`` rows of
    :data:`STRIPE_BYTES_PER_PIXEL`); map stripes of
    :data:`MAP_BYTES_PER_PIXEL`. Stripes and the margin are multiples of 256 rows and of the file's
    ``block_rows`` (so that every read starts and ends on the file's block rows, each decoded once), a
    stripe at least one such multiple (a budget too small for that is exceeded rather than refused). The
    plan changes the memory and the speed, never a byte.

    >>> plan_stripes(10000, 10000, 950 * 10**6, 768)
    StripePlan(rows=10000, margin=768, map_rows=5888)
    >>> plan_stripes(40000, 40000, 950 * 10**6, 768, block_rows=512)
    StripePlan(rows=1536, margin=1024, map_rows=1280)
    """
    align = math.lcm(ROWS_ALIGN, max(1, block_rows))
    margin = -(-margin // align) * align
    row_bytes = width * STRIPE_BYTES_PER_PIXEL
    map_rows = min(height, max(ROWS_ALIGN, room // (width * MAP_BYTES_PER_PIXEL) // ROWS_ALIGN * ROWS_ALIGN))
    if 2 * height * row_bytes <= room:
        return StripePlan(height, margin, map_rows)
    rows = max(align, (room // row_bytes - margin) // 3 // align * align)
    return StripePlan(min(rows, height), margin, map_rows)


def row_stripes(height: int, rows: int) -> list[tuple[int, int]]:
    """``(row0, row1)`` stripes of ``rows`` (the last shorter) covering ``height`` rows.

    >>> row_stripes(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(top, min(top + rows, height)) for top in range(0, height, rows)]


@dataclass
class StripeRegions:
    """The 8-connected non-zero regions of a map seen stripe by stripe, joined where they cross stripes:
    each region's first pixel (raster order), area and coordinate sums, so that its centroid is exact."""

    def __post_init__(self):
        self.parent: list[int] = []
        self.first: list[tuple[int, int]] = []  # (row, col) of the first pixel
        self.area: list[int] = []
        self.sum_x: list[int] = []
        self.sum_y: list[int] = []
        self.last_row_labels: np.ndarray | None = None  # the previous stripe's last row, as global labels

    def _root(self, label: int) -> int:
        while self.parent[label] != label:
            self.parent[label] = self.parent[self.parent[label]]
            label = self.parent[label]
        return label

    def _join(self, a: int, b: int) -> None:
        a, b = self._root(a), self._root(b)
        if a != b:
            keep, gone = (a, b) if self.first[a] <= self.first[b] else (b, a)
            self.parent[gone] = keep
            self.first[keep] = min(self.first[keep], self.first[gone])
            self.area[keep] += self.area[gone]
            self.sum_x[keep] += self.sum_x[gone]
            self.sum_y[keep] += self.sum_y[gone]

    def add(self, binary: np.ndarray, top: int) -> None:
        """The next stripe: uint8 ``(rows, W)``, its first row being the map's row ``top`` (stripes come in
        order, without gaps)."""
        count, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(binary), connectivity=8,
                                                                 ltype=cv2.CV_32S)
        base = len(self.parent)
        if count > 1:
            rows, cols = np.nonzero(labels)
            found = labels[rows, cols]
            sums_x = np.bincount(found, weights=cols, minlength=count)  # exact: integers below 2**53
            sums_y = np.bincount(found, weights=rows, minlength=count)
            for label in range(1, count):
                row, col, width, area = (int(stats[label, cv2.CC_STAT_TOP]), int(stats[label, cv2.CC_STAT_LEFT]),
                                         int(stats[label, cv2.CC_STAT_WIDTH]), int(stats[label, cv2.CC_STAT_AREA]))
                first_col = col + int(np.argmax(labels[row, col:col + width] == label))
                self.parent.append(len(self.parent))
                self.first.append((row + top, first_col))
                self.area.append(area)
                self.sum_x.append(int(sums_x[label]))
                self.sum_y.append(int(sums_y[label]) + top * area)
        if self.last_row_labels is not None:
            above, below = self.last_row_labels, self._global(labels[0], base)
            for shift in (-1, 0, 1):  # 8-connectivity: a pixel touches the three below it
                a = above[max(0, -shift):len(above) - max(0, shift)]
                b = below[max(0, shift):len(below) - max(0, -shift)]
                both = (a >= 0) & (b >= 0)
                for x, y in set(zip(a[both].tolist(), b[both].tolist())):
                    self._join(x, y)
        self.last_row_labels = self._global(labels[-1], base)

    @staticmethod
    def _global(row_labels: np.ndarray, base: int) -> np.ndarray:
        """A row of a stripe's labels as the regions' numbers (-1 outside any region)."""
        return np.where(row_labels > 0, row_labels.astype(np.int64) - 1 + base, -1)

    def centroids(self) -> list[tuple[int, int]]:
        """Int-truncated centroids ``(x, y)`` of the regions, in raster order of their first pixels (as
        ``evaluations.metrics.region_centroids`` of the whole map)."""
        roots = sorted({self._root(label) for label in range(len(self.parent))}, key=lambda r: self.first[r])
        return [(self.sum_x[r] // self.area[r], self.sum_y[r] // self.area[r]) for r in roots]
