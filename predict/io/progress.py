"""The progress of a long run, one mechanism: the library reports its stages (:func:`progress`), the command
chooses how they show (:func:`reporting_progress`): tqdm bars on the terminal (``bar``, the default), one JSON
line per step on stderr for a program that runs the command (``json``: the QGIS plugin), or nothing
(``none``).

A JSON line is an object on a line of its own::

    {"event": "progress", "stage": "queries", "done": 3, "total": 8, "unit": "query", "depth": 0}

``stage``: what is counted (``queries``: image x query of ``selo-localise``; ``tiles``: the tiles an image's
queries encode; ``scenes``: the scenes ``selo-index`` indexes; ``scored`` and ``maps``: the scenes
``selo-search`` scores and maps); ``done`` of ``total`` steps (a line with ``done`` 0 when the stage opens);
``depth``: 0 for a stage of the run, 1 for a stage within the one open at depth 0 (a query's tiles), and so
on. Every other line on stderr is a log line.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm import tqdm

PROGRESS_STYLES = ("bar", "json", "none")
_style: ContextVar[str] = ContextVar("selo_progress_style", default="bar")
_depth: ContextVar[int] = ContextVar("selo_progress_depth", default=0)  # stages open around the current one


@contextmanager
def reporting_progress(style: str) -> Iterator[None]:
    """Within the block, stages show as ``style`` (one of :data:`PROGRESS_STYLES`): the command's choice."""
    if style not in PROGRESS_STYLES:
        raise ValueError(f"progress style must be one of {', '.join(PROGRESS_STYLES)}, got {style!r}")
    token = _style.set(style)
    try:
        yield
    finally:
        _style.reset(token)


@contextmanager
def progress(stage: str, total: int, unit: str, *, desc: str | None = None,
             leave: bool = True) -> Iterator[Callable[[int], None]]:
    """A stage of ``total`` steps of ``unit``; yields ``advance(n=1)``, called as steps are done. Shown as
    the command chose (:func:`reporting_progress`): a tqdm bar named ``desc`` (``stage`` by default, left on
    the terminal when ``leave``), a JSON line per call (see the module), or nothing."""
    style = _style.get()
    if style == "bar":
        with tqdm(total=total, desc=desc or stage, unit=unit, leave=leave, dynamic_ncols=True) as bar:
            yield lambda n=1: bar.update(n)
    elif style == "json":
        depth = _depth.get()
        token = _depth.set(depth + 1)
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            if n:  # a line per step done, none for nothing done
                done += n
                json_line(stage, done, total, unit, depth)

        json_line(stage, done, total, unit, depth)
        try:
            yield advance
        finally:
            _depth.reset(token)
    else:
        yield lambda n=1: None


def json_line(stage: str, done: int, total: int, unit: str, depth: int) -> None:
    """One progress line on stderr, flushed: the program reading it sees each step as it happens."""
    line = {"event": "progress", "stage": stage, "done": done, "total": total, "unit": unit, "depth": depth}
    print(json.dumps(line), file=sys.stderr, flush=True)
