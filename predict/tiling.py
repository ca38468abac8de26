"""Tile geometry of the original SeLo generators, and cutting tiles out of an image in memory.

A tile is ``(r0, r1, c0, c1)`` as the original named its files ``"<r0>_<r1>_<c0>_<c1>.jpg"``; its pixels
are ``image[r0:r1, c0:c1]`` with numpy slice semantics, so a negative start (an axis shorter than the
step) counts from the end: see :func:`effective_box`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np

Tile = tuple[int, int, int, int]

V2_STAGE1_STEP = 512
V2_KEEP_FRACTION = 0.15
V2_POINT_OFFSETS = (128, 384, 256)  # quarter, three quarters and centre of a 512 tile
V2_BOX_HALF_SIZES = (64, 128)


def parse_steps(steps: str | Sequence[int]) -> list[int]:
    """``"256_512_768"`` -> ``[256, 512, 768]``."""
    if isinstance(steps, str):
        try:
            values = [int(s) for s in steps.split("_") if s]
        except ValueError:
            raise ValueError(f"--step {steps!r}: expected integers joined by '_', e.g. 256_512_768") from None
    else:
        values = [int(s) for s in steps]
    if not values or min(values) <= 0:
        raise ValueError(f"--step {steps!r}: steps must be positive integers")
    return values


def axis_intervals(length: int, step: int, offset: int) -> list[tuple[int, int]]:
    """The original's cuts along one axis of ``length`` pixels: starts ``offset, offset + step, ...``;
    a cut reaching or crossing the edge (``a + step >= length``) is moved back to ``(length - step, length)``.
    """
    cuts = []
    for start in range(offset, length, step):
        cuts.append((start, start + step) if start + step < length else (length - step, length))
    return cuts


def grid_tiles(height: int, width: int, step: int, offset: int = 0) -> list[Tile]:
    """Tiles of one grid: every row interval with every column interval (duplicates kept)."""
    rows = axis_intervals(height, step, offset)
    cols = axis_intervals(width, step, offset)
    return [(r0, r1, c0, c1) for c0, c1 in cols for r0, r1 in rows]


def v1_tiles(height: int, width: int, steps: Iterable[int]) -> list[Tile]:
    """Unique tiles of the original v1 ``split_image``: for each step two grids, at offsets 0 and
    ``step - int(0.5 * step)``; coinciding tiles count once (the original overwrote the same file).
    Sorted by ``(r0, r1, c0, c1)``."""
    tiles = set()
    for step in steps:
        for offset in (0, step - int(0.5 * step)):
            tiles.update(grid_tiles(height, width, step, offset))
    return sorted(tiles)


def v2_stage1_tiles(height: int, width: int) -> list[Tile]:
    """Stage-1 tiles of the original v2: one 512 grid from offset 0, sorted."""
    return sorted(set(grid_tiles(height, width, V2_STAGE1_STEP, 0)))


def v2_keep_count(n_tiles: int) -> int:
    """How many stage-1 tiles v2 keeps: ``int(0.15 * n) + 1``."""
    return int(V2_KEEP_FRACTION * n_tiles) + 1


def v2_boxes(tile: Tile, height: int, width: int) -> list[Tile]:
    """Stage-2 boxes of v2 around the 9 points of a kept tile (as named, so possibly a negative start).

    Around each point ``(row, col)`` and each half-size ``h`` in (64, 128): start ``p - h`` if positive
    else 0, end ``start + 2h`` if below the edge else the edge (boxes are not moved back inside).
    """
    r0, r1, c0, c1 = tile
    q, t, m = V2_POINT_OFFSETS
    points = [(r0, c0), (r0, c1), (r1, c0), (r1, c1),
              (r0 + q, c0 + q), (r0 + q, c0 + t), (r0 + t, c0 + q), (r0 + t, c0 + t), (r0 + m, c0 + m)]

    def span(p: int, half: int, length: int) -> tuple[int, int]:
        start = p - half if p - half > 0 else 0
        end = start + 2 * half if start + 2 * half < length else length
        return start, end

    boxes = []
    for row, col in points:
        for half in V2_BOX_HALF_SIZES:
            boxes.append(span(row, half, height) + span(col, half, width))
    return boxes


def effective_box(tile: Tile, height: int, width: int) -> Tile:
    """The rows/columns ``image[r0:r1, c0:c1]`` really covers (a negative start counts from the end)."""
    r0, r1, c0, c1 = tile

    def start(a: int, length: int) -> int:
        return a if a >= 0 else max(length + a, 0)

    return start(r0, height), min(r1, height), start(c0, width), min(c1, width)


def usable_steps(height: int, width: int, steps: Sequence[int], name: str = "image") -> list[int]:
    """The steps that fit in the image; the others are skipped with a warning.

    The original cut a step longer than an axis as a strip stretched to a square (and left pixels
    uncovered, then NaN, when every step was too long); we skip such a scale instead, and raise
    ``ValueError`` when none fits.
    """
    fitting = [s for s in steps if s <= min(height, width)]
    skipped = [s for s in steps if s not in fitting]
    if not fitting:
        raise ValueError(f"{name}: image {height}x{width} is smaller than every tile step {list(steps)}")
    if skipped:
        warnings.warn(f"{name}: image {height}x{width} is smaller than step(s) {skipped}; those scales are skipped",
                      stacklevel=2)
    return fitting


def cut_tiles(image_bgr: np.ndarray, tiles: Sequence[Tile], size: int) -> np.ndarray:
    """Cut ``tiles`` out of a BGR image, resize each to ``size`` x ``size`` (``cv2.INTER_CUBIC``, as the
    original) and return them as uint8 RGB ``(len(tiles), size, size, 3)``."""
    height, width = image_bgr.shape[:2]
    out = np.empty((len(tiles), size, size, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r0, r1, c0, c1 = effective_box(tile, height, width)
        crop = image_bgr[r0:r1, c0:c1]
        if crop.shape[0] == size and crop.shape[1] == size:
            resized = crop
        else:
            resized = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=out[k])
    return out


def tile_batches(image_bgr: np.ndarray, tiles: Sequence[Tile], size: int, batch_size: int) -> Iterator[np.ndarray]:
    """``cut_tiles`` in consecutive batches of at most ``batch_size`` tiles."""
    for start in range(0, len(tiles), batch_size):
        yield cut_tiles(image_bgr, tiles[start:start + batch_size], size)
