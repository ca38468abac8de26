"""Row stripes: a 2-D filter of a map computed on horizontal stripes in parallel threads, bit for bit.

An output row of a filter of vertical radius ``r`` depends only on the input rows within ``r`` of it, so
stripes carrying ``r`` real rows beyond their own compute their own rows exactly; at the map's top and
bottom a stripe's edge is the map's edge, where the filter applies its own border rule as on the whole
map. OpenCV and numba release the GIL, so the stripes run in parallel.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np


def usable_cores() -> int:
    """Threads for work on one map: the cores this process may use (the evaluator counts them alike in
    ``evaluations.metrics``, which imports nothing from predict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def results_ahead(pool: Executor, function: Callable, items: Iterable, depth: int) -> Iterator:
    """``function(item)`` of each item in order, computed in ``pool`` up to ``depth`` items ahead of the one
    the caller is using, so at most ``depth + 1`` results are alive at once.

    >>> with ThreadPoolExecutor(2) as pool:
    ...     list(results_ahead(pool, lambda x: x * x, range(5), depth=2))
    [0, 1, 4, 9, 16]
    """
    ahead: deque[Future] = deque()
    for item in items:
        ahead.append(pool.submit(function, item))
        if len(ahead) > depth:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def stripe_bounds(height: int, radius: int, stripes: int) -> list[tuple[int, int, int, int]]:
    """Row stripes of a ``height``-row map for a filter of ``radius``: ``(out0, out1, in0, in1)`` each,
    the output rows ``out0:out1`` (a partition of the map) and the input rows ``in0:in1`` they depend on
    (``radius`` more on each side, clipped to the map).

    >>> stripe_bounds(10, 2, 2)
    [(0, 5, 0, 7), (5, 10, 3, 10)]
    """
    edges = np.linspace(0, height, stripes + 1).round().astype(int)
    return [(int(a), int(b), max(0, int(a) - radius), min(height, int(b) + radius))
            for a, b in zip(edges[:-1], edges[1:]) if b > a]


def filter_in_stripes(gray: np.ndarray, filter_2d, radius: int, workers: int) -> np.ndarray:
    """``filter_2d(gray)`` computed on row stripes in ``workers`` threads, bit for bit the same.

    Each stripe carries the ``radius`` real neighbouring rows its output depends on; at the map's own top
    and bottom the stripe's edge is the map's edge, so ``filter_2d`` applies its border rule there as on
    the whole map. Stripes are at least ``4 * radius`` rows high, so padding costs at most half the work.
    OpenCV releases the GIL, so the threads run in parallel.
    """
    stripes = max(1, min(workers, gray.shape[0] // (4 * max(radius, 1))))
    if stripes == 1:
        return filter_2d(gray)
    out = np.empty_like(gray)

    def run(bounds):
        out0, out1, in0, in1 = bounds
        out[out0:out1] = filter_2d(gray[in0:in1])[out0 - in0:out1 - in0]

    with ThreadPoolExecutor(stripes) as pool:
        list(pool.map(run, stripe_bounds(gray.shape[0], radius, stripes)))
    return out

