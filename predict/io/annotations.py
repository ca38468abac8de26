"""Test samples: annotation files in the SLM schema.

``anno.json`` is a list of ``{"caption", "jpg_name", "points"}``; ``points`` is a list of polygons, each
a list of ``[x, y]`` pixel coordinates (x = column, y = row).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass


class SampleError(ValueError):
    """Bad input for one sample; ``str(error)`` is one line naming the file and the problem."""


@dataclass(frozen=True)
class Sample:
    idx: int
    jpg_name: str
    caption: str
    polygons: list  # list of polygons, each a list of (x, y) floats


def load_annotations(path: str) -> list[Sample]:
    """Read an SLM annotation file. Structural errors of the file raise :class:`SampleError`.

    Per-polygon problems (too few points, non-finite values) are left to the evaluator, so that one bad
    sample does not stop the others.
    """
    if not os.path.isfile(path):
        raise SampleError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SampleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(items, list):
        raise SampleError(f"{path}: expected a list of samples, got {type(items).__name__}")
    samples = []
    for idx, item in enumerate(items):
        if not isinstance(item, dict) or not {"caption", "jpg_name", "points"} <= set(item):
            raise SampleError(f"{path}: sample {idx} lacks one of 'caption', 'jpg_name', 'points'")
        samples.append(Sample(idx, str(item["jpg_name"]), str(item["caption"]), item["points"]))
    return samples
