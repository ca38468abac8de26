"""Test samples: annotation files in the SLM schema.

``anno.json`` is a list of ``{"caption", "jpg_name", "points"}``; ``points`` is a list of polygons, each
a list of ``[x, y]`` pixel coordinates (x = column, y = row).
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

from evaluations.errors import SampleError  # bad input for one sample: one class with the strict JPEG reader's

# what a path that is neither a regular file nor a folder is, by its mode
SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class Sample:
    """One annotated query. ``problem`` is why the sample cannot be run (a bad caption, image name or
    coordinates), or None: such a sample fails alone, with that one line, and the others still run."""

    idx: int
    jpg_name: str
    caption: str
    polygons: list  # list of polygons, each a list of (x, y) floats
    problem: str | None = None


def file_problem(path: str, missing: str, wanted: str) -> str | None:
    """Why ``path`` is not a file to read, or None when it is a regular file (or a link to one): ``missing``
    not found, or what it is instead of ``wanted``. Only the path's status is read, nothing is opened: a
    reader of a FIFO would wait for a writer, one of ``/dev/zero`` would never finish.

    >>> file_problem("/dev/zero", "image", "an image file"), file_problem("/", "annotation file", "an annotation file")
    ('not a regular file (a character device); give an image file', 'is a folder, not an annotation file')
    >>> file_problem("/no/such/file", "annotation file", "an annotation file")
    'annotation file not found'
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL byte in the name
        return f"{missing} not found"
    except OSError as exc:
        return f"cannot read {missing} ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return f"is a folder, not {wanted}"
    if stat.S_ISREG(mode):
        return None
    what = next((name for is_kind, name in SPECIAL_FILES if is_kind(mode)), "a special file")
    return f"not a regular file ({what}); give {wanted}"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sample_problem(item: dict) -> str | None:
    """Why an annotation entry cannot be run, or None: the caption and ``jpg_name`` must be non-empty
    strings, ``points`` a list of polygons of ``[x, y]`` number pairs (a string such as ``"12"`` is not
    a number). Degenerate but well-typed polygons are left to the evaluator.

    >>> sample_problem({"caption": "a field", "jpg_name": "a.jpg", "points": [[[0, 0], [5, 0], [5, 5]]]}) is None
    True
    >>> sample_problem({"caption": "  ", "jpg_name": "a.jpg", "points": []})
    "caption must be a non-empty string, got '  '"
    >>> sample_problem({"caption": "x", "jpg_name": "a.jpg", "points": [[["1", 2]]]})
    "points: polygon 0 vertex 0 is not an [x, y] pair of numbers: ['1', 2]"
    """
    for key in ("caption", "jpg_name"):
        value = item[key]
        if not isinstance(value, str) or not value.strip():
            return f"{key} must be a non-empty string, got {'null' if value is None else repr(value)}"
    points = item["points"]
    if not isinstance(points, list):
        return f"points must be a list of polygons, got {type(points).__name__}"
    for index, polygon in enumerate(points):
        if not isinstance(polygon, list):
            return f"points: polygon {index} is not a list of [x, y] pairs"
        for vertex_index, vertex in enumerate(polygon):
            if not (isinstance(vertex, list) and len(vertex) == 2 and all(map(_is_number, vertex))):
                return f"points: polygon {index} vertex {vertex_index} is not an [x, y] pair of numbers: {vertex!r}"
    return None


def load_annotations(path: str) -> list[Sample]:
    """Read an SLM annotation file. A path that is no file (:func:`file_problem`) and structural errors of the
    file raise :class:`SampleError`, so does a file that holds no sample (empty, ``[]`` or ``{}``): there
    would be nothing to run nor to average.

    A sample with bad values (see :func:`sample_problem`) is returned with its ``problem`` set, so that it
    fails alone; per-polygon problems (too few points, non-finite values) are left to the evaluator.
    """
    if problem := file_problem(path, "annotation file", "an annotation file"):
        raise SampleError(f"{path}: {problem}")
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except UnicodeDecodeError as exc:
        raise SampleError(f"{path}: not valid JSON ({exc})") from None
    if not content.strip():
        raise SampleError(f"{path}: holds no sample (the file is empty)")
    try:
        items = json.loads(content)
    except json.JSONDecodeError as exc:
        raise SampleError(f"{path}: not valid JSON ({exc})") from None
    if items == [] or items == {}:
        raise SampleError(f"{path}: holds no sample ({json.dumps(items)})")
    if not isinstance(items, list):
        raise SampleError(f"{path}: expected a list of samples, got {type(items).__name__}")
    samples = []
    for idx, item in enumerate(items):
        if not isinstance(item, dict) or not {"caption", "jpg_name", "points"} <= set(item):
            raise SampleError(f"{path}: sample {idx} lacks one of 'caption', 'jpg_name', 'points'")
        problem = sample_problem(item)
        text = {key: item[key] if isinstance(item[key], str) else "" for key in ("jpg_name", "caption")}
        samples.append(Sample(idx, text["jpg_name"], text["caption"], item["points"] if problem is None else [],
                              problem and f"{path}: sample {idx}: {problem}"))
    return samples
