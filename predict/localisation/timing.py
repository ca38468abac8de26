"""Seconds per stage of a sample, accumulated where each stage runs."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class StageTimer:
    """Seconds spent per stage (``cut``, ``sim``, ``gnt``, ``flt``, ``eval``).

    >>> timer = StageTimer()
    >>> with timer.stage("cut"):
    ...     pass
    >>> sorted(timer.seconds)
    ['cut']
    """

    def __init__(self):
        self.seconds = defaultdict(float)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
