"""Tile geometry of the original SeLo generators, and cutting tiles out of an image in memory.

A tile is ``(r0, r1, c0, c1)`` as the original named its files ``"<r0>_<r1>_<c0>_<c1>.jpg"``; its pixels
are ``image[r0:r1, c0:c1]`` with numpy slice semantics, so a negative start (an axis shorter than the
step) counts from the end: see :func:`effective_box`.
"""
from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from predict.core.notes import warn

Tile = tuple[int, int, int, int]


STEPS_TEXT = re.compile(r"[0-9]+(?:_[0-9]+)*")  # ASCII digits only: int() would also read "२५६" or "２５６"


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # bool is an Integral too


def parse_steps(steps: str | int | Sequence[int]) -> list[int]:
    """``"256_512_768"`` -> ``[256, 512, 768]``; a sequence of integers, or one, as they are. Anything else
    (``256.9``, ``True``, ``"256__512"``, digits of other scripts) is a ValueError naming the value, never
    rounded or skipped.

    >>> parse_steps("256_512_768"), parse_steps((512,)), parse_steps(256)
    ([256, 512, 768], [512], [256])
    >>> parse_steps([256.9])
    Traceback (most recent call last):
    ValueError: steps [256.9]: expected integers joined by '_', e.g. 256_512_768, or a list of integers
    """
    if isinstance(steps, str):
        values = steps.split("_") if STEPS_TEXT.fullmatch(steps) else None
    elif isinstance(steps, numbers.Integral):
        values = [steps]
    else:
        values = list(steps) if isinstance(steps, Iterable) else None
    if values is None or not all(isinstance(steps, str) or _is_integer(value) for value in values):
        raise ValueError(f"steps {steps!r}: expected integers joined by '_', e.g. 256_512_768, or a list of integers")
    values = [int(value) for value in values]
    if not values or min(values) <= 0:
        raise ValueError(f"steps {steps!r}: expected positive integers")
    return values


def axis_intervals(length: int, step: int, offset: int) -> list[tuple[int, int]]:
    """The original's cuts along one axis of ``length`` pixels: starts ``offset, offset + step, ...``;
    a cut reaching or crossing the edge (``a + step >= length``) is moved back to ``(length - step, length)``.

    >>> axis_intervals(600, 256, 0)
    [(0, 256), (256, 512), (344, 600)]
    >>> axis_intervals(200, 256, 0)  # shorter than the step: a negative start, as the original named it
    [(-56, 200)]
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


def multiscale_tiles(height: int, width: int, steps: Iterable[int], half_offset: bool = True) -> list[Tile]:
    """Unique tiles of the grids of every step, sorted by ``(r0, r1, c0, c1)``.

    Each step has a grid at offset 0 and, with ``half_offset`` (v1's ``split_image``), a second one at
    ``step - int(0.5 * step)``; coinciding tiles count once (the original overwrote the same file). v2's
    first stage is the 512 grid without the half offset.

    >>> multiscale_tiles(512, 768, [256], half_offset=False)[:3]
    [(0, 256, 0, 256), (0, 256, 256, 512), (0, 256, 512, 768)]
    >>> len(multiscale_tiles(512, 768, [256], half_offset=False)), len(multiscale_tiles(512, 768, [256]))
    (6, 11)
    """
    tiles = set()
    for step in steps:
        for offset in ((0, step - int(0.5 * step)) if half_offset else (0,)):
            tiles.update(grid_tiles(height, width, step, offset))
    return sorted(tiles)


def keep_count(n_tiles: int, fraction: float) -> int:
    """How many of ``n_tiles`` first-stage tiles a refinement keeps: ``int(fraction * n) + 1`` (v2: 0.15).

    >>> keep_count(20, 0.15)
    4
    """
    return int(fraction * n_tiles) + 1


def refinement_boxes(tile: Tile, height: int, width: int, half_sizes: Sequence[int]) -> list[Tile]:
    """v2's second-stage boxes around the 9 points of a kept tile (as named, so possibly a negative start).

    The points are the tile's 4 corners and, for a tile of side s, the offsets (s/4, s/4), (s/4, 3s/4),
    (3s/4, s/4), (3s/4, 3s/4) and (s/2, s/2) from its first corner (128, 384 and 256 for v2's 512 tiles).
    Around each point ``(row, col)`` and each half-size ``h``: start ``p - h`` if positive else 0, end
    ``start + 2h`` if below the edge else the edge (boxes are not moved back inside).

    >>> refinement_boxes((0, 512, 0, 512), 1000, 1000, [64])[:2]
    [(0, 128, 0, 128), (0, 128, 448, 576)]
    """
    r0, r1, c0, c1 = tile
    side = r1 - r0
    q, t, m = side // 4, 3 * side // 4, side // 2
    points = [(r0, c0), (r0, c1), (r1, c0), (r1, c1),
              (r0 + q, c0 + q), (r0 + q, c0 + t), (r0 + t, c0 + q), (r0 + t, c0 + t), (r0 + m, c0 + m)]

    def span(p: int, half: int, length: int) -> tuple[int, int]:
        start = p - half if p - half > 0 else 0
        end = start + 2 * half if start + 2 * half < length else length
        return start, end

    boxes = []
    for row, col in points:
        for half in half_sizes:
            boxes.append(span(row, half, height) + span(col, half, width))
    return boxes


def effective_box(tile: Tile, height: int, width: int) -> Tile:
    """The rows/columns ``image[r0:r1, c0:c1]`` really covers (a negative start counts from the end).

    >>> effective_box((-56, 200, 100, 356), 200, 300)
    (144, 200, 100, 300)
    """
    r0, r1, c0, c1 = tile

    def start(a: int, length: int) -> int:
        return a if a >= 0 else max(length + a, 0)

    return start(r0, height), min(r1, height), start(c0, width), min(c1, width)


def tiles_in_rows(tiles: Sequence[Tile], rows: tuple[int, int], height: int, width: int) -> list[Tile]:
    """The tiles of ``tiles`` whose first covered row (:func:`effective_box`) lies in ``rows`` ``(row0, row1)``:
    a band's share of a scene's tiles, each tile in exactly one of bands that cover the scene.

    >>> tiles_in_rows([(0, 256, 0, 256), (256, 512, 0, 256), (-56, 200, 0, 256)], (0, 256), 300, 300)
    [(0, 256, 0, 256), (-56, 200, 0, 256)]
    """
    return [tile for tile in tiles if rows[0] <= effective_box(tile, height, width)[0] < rows[1]]


def usable_steps(height: int, width: int, steps: Sequence[int], name: str = "image",
                 notes: list[str] | None = None) -> list[int]:
    """The steps that fit in the image; the others are skipped with a warning.

    The original cut a step longer than an axis as a strip stretched to a square (and left pixels
    uncovered, then NaN, when every step was too long); we skip such a scale instead, and raise
    ``ValueError`` when none fits.

    >>> usable_steps(600, 900, [256, 512])
    [256, 512]
    """
    fitting = [s for s in steps if s <= min(height, width)]
    skipped = [s for s in steps if s not in fitting]
    if not fitting:
        raise ValueError(f"{name}: image {height}x{width} is smaller than every tile step {list(steps)}")
    if skipped:
        warn(f"{name}: image {height}x{width} is smaller than step(s) {skipped}; those scales are skipped", notes)
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


def sample_tiles(images_bgr: Iterable[np.ndarray], size: int, count: int, per_image: int = 64) -> np.ndarray:
    """Up to ``count`` tiles of ``images_bgr`` as :func:`cut_tiles` gives them, uint8 RGB ``(N, size, size, 3)``:
    at most ``per_image`` of each image's grid of ``size`` px tiles, evenly spread over it. The images are
    taken one by one and only while tiles are missing (a generator that decodes them lazily stops early).
    What an exported runtime is checked and calibrated on (:mod:`predict.encoders.runtimes`).

    >>> image = np.zeros((64, 96, 3), np.uint8)
    >>> sample_tiles([image, image], 32, 8, per_image=5).shape
    (8, 32, 32, 3)
    """
    chunks, missing = [], count
    for image in images_bgr:
        if missing <= 0:
            break
        height, width = image.shape[:2]
        grid = grid_tiles(height, width, size) if min(height, width) >= size else []
        if grid:
            picked = np.unique(np.linspace(0, len(grid) - 1, min(per_image, missing, len(grid))).round().astype(int))
            chunks.append(cut_tiles(image, [grid[k] for k in picked], size))
            missing -= len(picked)
    return np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)


def tile_sample(paths: Sequence[str], read) -> Callable[[int, int], np.ndarray]:
    """``(count, size) -> tiles``: :func:`sample_tiles` of the images at ``paths``, each decoded by
    ``read(path) -> BGR array`` only when it is reached (the ``sample`` of ``load_encoder``). An image that
    fails to read is left out of the sample: the run that reaches it names it."""
    def readable():
        for path in paths:
            try:
                yield read(path)
            except Exception:  # noqa: BLE001 - reported by the run itself, with its own line
                continue

    return lambda count, size: sample_tiles(readable(), size, count)
