"""The results store of a run: ``<cache_path>/metrics.json`` and ``metrics.csv``, rewritten after each sample.

``metrics.json``::

    {"samples": [{"idx", "jpg_name", "caption", "Rsu", "Rda", "Ras", "Rmi", "centers", "circles", ...}],
     "errors":  [{"idx", "jpg_name", "caption", "error"}],
     "mean":    {"Rsu", "Rda", "Ras", "Rmi"},
     "timings": {"cut", "sim", "gnt", "flt", "total"}}

samples and errors sorted by ``idx``; an index is in at most one of them (the latest outcome). Strict JSON:
a NaN or infinite number is written as ``null`` and read back as NaN. ``metrics.csv`` has one row per
sample (``idx, jpg_name, caption, Rsu, Rda, Ras, Rmi``; NaN as ``nan``) and a last ``mean`` row. Both files
are replaced atomically (temporary file + ``os.replace``), so an interrupted run leaves valid files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings

import numpy as np

from evaluations.metrics import SeloScore
from evaluations.utils import ORIGINAL_KEYS
from predict.io.atomic import write_atomically

INDICATORS = tuple(ORIGINAL_KEYS)  # the original's order: Rsu, Rda, Ras, Rmi
STAGES = ("cut", "sim", "gnt", "flt")  # generation stages, the original's Time-Cut/Sim/Gnt/Flt


def _finite_or_none(value):
    """JSON-safe copy of ``value``: non-finite floats become ``None``, numpy scalars plain Python."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_float(value) -> float:
    """An indicator as stored in JSON (``None`` for NaN) back to a float."""
    return math.nan if value is None else float(value)


class MetricsStore:
    """Per-sample indicators and errors of one cache folder, kept on disk after every change."""

    def __init__(self, cache_path: str):
        self.cache_path = cache_path
        self.json_path = os.path.join(cache_path, "metrics.json")
        self.csv_path = os.path.join(cache_path, "metrics.csv")
        self._samples: dict[int, dict] = {}
        self._errors: dict[int, dict] = {}
        self._timings: dict = {}
        if os.path.isfile(self.json_path):
            self._load()

    def _load(self) -> None:
        try:
            with open(self.json_path, encoding="utf-8") as f:
                data = json.load(f)
            samples = {int(item["idx"]): item for item in data.get("samples", [])}
            errors = {int(item["idx"]): item for item in data.get("errors", [])}
            timings = dict(data.get("timings", {}))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            warnings.warn(f"{self.json_path}: unreadable results file ({exc}); starting with no results")
            return
        self._samples, self._errors, self._timings = samples, errors, timings

    @property
    def samples(self) -> list[dict]:
        """Successful records, sorted by idx."""
        return [self._samples[idx] for idx in sorted(self._samples)]

    @property
    def errors(self) -> list[dict]:
        """Failed samples ``{"idx", "jpg_name", "caption", "error"}``, sorted by idx."""
        return [self._errors[idx] for idx in sorted(self._errors)]

    @property
    def timings(self) -> dict:
        return dict(self._timings)

    def keep_only(self, samples) -> int:
        """Drop the results of samples that are not in ``samples`` (objects with ``idx``, ``jpg_name``,
        ``caption``), e.g. left by a run on another annotation file; returns how many were dropped."""
        current = {int(s.idx): (s.jpg_name, s.caption) for s in samples}
        stale = [idx for idx, item in (*self._samples.items(), *self._errors.items())
                 if current.get(idx) != (item.get("jpg_name"), item.get("caption"))]
        for idx in stale:
            self._samples.pop(idx, None)
            self._errors.pop(idx, None)
        if stale:
            self._save()
        return len(stale)

    def is_done(self, idx: int) -> bool:
        """Whether a successful record exists for sample ``idx``."""
        return int(idx) in self._samples

    def record(self, idx, jpg_name, caption, score: SeloScore, **extra) -> dict:
        """Store sample ``idx``'s indicators (replacing an older record or error) and rewrite the files."""
        idx = int(idx)
        item = {"idx": idx, "jpg_name": jpg_name, "caption": caption, **score.as_dict(),
                "centers": [list(map(int, point)) for point in score.centers],
                "circles": [list(map(int, circle)) for circle in score.circles], **extra}
        self._samples[idx] = _finite_or_none(item)
        self._errors.pop(idx, None)
        self._save()
        return self._samples[idx]

    def record_error(self, idx, jpg_name, caption, message: str) -> dict:
        """Store why sample ``idx`` failed (replacing an older record) and rewrite the files."""
        idx = int(idx)
        self._errors[idx] = {"idx": idx, "jpg_name": jpg_name, "caption": caption, "error": str(message)}
        self._samples.pop(idx, None)
        self._save()
        return self._errors[idx]

    def set_timings(self, timings: dict) -> None:
        """Seconds per stage ``{"cut", "sim", "gnt", "flt", "total"}``; rewrites the files."""
        self._timings = _finite_or_none(dict(timings))
        self._save()

    def mean(self) -> dict:
        """Mean of each indicator over the successful samples, those flagged ``degenerate`` (an all-zero map
        whose indicators mean nothing) left out; NaN when there is none, or one is NaN."""
        valid = [item for item in self._samples.values() if not item.get("degenerate")]
        if not valid:
            return {name: math.nan for name in INDICATORS}
        return {name: float(np.mean([_as_float(item[name]) for item in valid])) for name in INDICATORS}

    def _save(self) -> None:
        os.makedirs(self.cache_path, exist_ok=True)
        data = {"samples": self.samples, "errors": self.errors, "mean": _finite_or_none(self.mean()),
                "timings": self._timings}
        write_atomically(self.json_path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))
        write_atomically(self.csv_path, self._csv_text())

    def _csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["idx", "jpg_name", "caption", *INDICATORS])
        for item in self.samples:
            writer.writerow([item["idx"], item["jpg_name"], item["caption"].strip(),
                             *(repr(_as_float(item[name])) for name in INDICATORS)])
        mean = self.mean()
        writer.writerow(["mean", "", "", *(repr(mean[name]) for name in INDICATORS)])
        return out.getvalue()
