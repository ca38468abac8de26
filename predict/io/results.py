"""The results store of a run: ``<cache_path>/metrics.json`` and ``metrics.csv``, rewritten after each sample.

``metrics.json``::

    {"samples":   [{"idx", "jpg_name", "caption", "Rsu", "Rda", "Ras", "Rmi", "centers", "circles",
                    "identity": {...what produced the numbers...}, "size": [H, W], ...}],
     "errors":    [{"idx", "jpg_name", "caption", "error", "identity": {"caption", "polygons", "image"}}],
     "settings":  {<digest>: {"pipeline", "seed", "encoder"}},   the run settings the identities refer to
     "run":       {"settings": <digest of the current settings>, "annotations": path},
     "mean":      {"Rsu", "Rda", "Ras", "Rmi"},
     "mean_over": [idx, ...],   the samples of the current annotation file the mean covers
     "timings":   {"cut", "sim", "gnt", "flt", "total"}}

samples and errors sorted by ``idx``; an index is in at most one of them (the latest outcome). Results of
samples that are not in the current annotation file are kept but not counted in the mean. A record that
cannot be used (no idx, a missing, non-numeric or out-of-range indicator, a ``seal`` that no longer matches
its values: see :func:`~predict.provenance.seal`) is listed in :attr:`MetricsStore.unusable` with why, and
treated as not done. Which records the mean counts is decided by content: a record counts when its
identity is of the current annotation file's sample at its index (caption, polygons, image content), so
a renamed image with the same bytes still counts and a reordered file's records do not. Strict JSON: a NaN or infinite number is written as ``null`` and read back
as NaN. ``metrics.csv`` has one row per sample (``idx, jpg_name, caption, Rsu, Rda, Ras, Rmi``; NaN as
``nan``) and a last ``mean`` row. Both files are replaced atomically (a temporary file of each writer's
own + ``os.replace``), so an interrupted run leaves valid files; an unreadable ``metrics.json`` is moved
aside to ``metrics.json.unreadable`` before it is replaced, never lost.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings

import numpy as np

from evaluations.metrics import ORIGINAL_ORDER, SeloScore
from predict.provenance import polygons_digest, same_sample, seal, seal_problem
from predict.provenance.store import write_atomically

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


def record_problem(item) -> str | None:
    """Why a ``samples`` entry of ``metrics.json`` cannot be used (None when it can): a missing field, an
    indicator that is not a number in [0, 1] (or null for NaN), or a seal that does not match.

    >>> record_problem({"idx": 3, "jpg_name": "a.jpg", "caption": "c", "Rsu": 0.5, "Rda": 1.0, "Ras": None})
    'no Rmi'
    >>> record_problem({"idx": 3, "jpg_name": "a.jpg", "caption": "c", "Rsu": 7.5, "Rda": 1.0, "Ras": 0, "Rmi": 0.5})
    'Rsu 7.5 is outside [0, 1]'
    """
    if not isinstance(item, dict):
        return "not a record"
    for key in ("jpg_name", "caption"):
        if not isinstance(item.get(key), str):
            return f"no {key}"
    for name in ORIGINAL_ORDER:
        if name not in item:
            return f"no {name}"
        value = item[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{name} is not a number"
        if value is not None and not 0 <= value <= 1:
            return f"{name} {value} is outside [0, 1]"
    return None


def _index(item) -> int | None:
    try:
        return int(item["idx"])
    except (TypeError, KeyError, ValueError):
        return None


class MetricsStore:
    """Per-sample indicators and errors of one cache folder, kept on disk after every change.

    Attributes:
        unusable: ``{idx: why}`` for records found in the file that cannot be used (they count as not done).
    """

    def __init__(self, cache_path: str):
        self.cache_path = cache_path
        self.json_path = os.path.join(cache_path, "metrics.json")
        self.csv_path = os.path.join(cache_path, "metrics.csv")
        self._samples: dict[int, dict] = {}
        self._errors: dict[int, dict] = {}
        self._timings: dict = {}
        self._settings: dict[str, dict] = {}
        self._run: dict = {}
        self._current: dict[int, dict] | None = None  # idx -> what the current annotation file's sample is
        self._mean_over: list[int] | None = None  # as recorded in the file, until set_current() is called
        self._unreadable = False
        self.unusable: dict[int, str] = {}
        if os.path.isfile(self.json_path):
            self._load()

    def _load(self) -> None:
        try:
            with open(self.json_path, encoding="utf-8") as f:
                data = json.load(f)
            samples, errors = list(data.get("samples", [])), list(data.get("errors", []))
            timings, settings = dict(data.get("timings", {})), dict(data.get("settings", {}))
            run, mean_over = dict(data.get("run", {})), data.get("mean_over")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self._unreadable = True
            warnings.warn(f"{self.json_path}: unreadable results file ({exc}); starting with no results "
                          "(the file is kept as metrics.json.unreadable)")
            return
        for item in samples:
            idx, problem = _index(item), record_problem(item)
            problem = f"its record in metrics.json is unusable ({problem})" if problem else seal_problem(item)
            if idx is None:
                warnings.warn(f"{self.json_path}: a sample record without a valid idx is ignored")
            elif problem:
                self.unusable[idx] = problem
            else:
                self._samples[idx] = item
        self._errors = {idx: {"idx": idx, **{key: str(item.get(key, "")) for key in ("jpg_name", "caption", "error")},
                              **({"identity": item["identity"]} if isinstance(item.get("identity"), dict) else {})}
                        for item in errors if (idx := _index(item)) is not None and idx not in self._samples}
        self._timings, self._settings, self._run = timings, settings, run
        if isinstance(mean_over, list):
            self._mean_over = [idx for idx in mean_over if isinstance(idx, int)]

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

    def get(self, idx: int) -> dict | None:
        """The successful record of sample ``idx``, or None."""
        return self._samples.get(int(idx))

    @property
    def settings(self) -> dict | None:
        """The run settings recorded as the folder's current ones (None for a folder without any)."""
        return self._settings.get(self._run.get("settings"))

    def set_settings(self, digest: str, settings: dict) -> None:
        """Record ``settings`` (under ``digest``) as the folder's current run settings; earlier settings stay
        while a kept record refers to them. Rewrites the files."""
        self._settings[digest] = _finite_or_none(settings)
        self._run["settings"] = digest
        self._save()

    def set_current(self, samples, anno_path: str = "", identities: dict[int, dict] | None = None) -> None:
        """Count in the mean only the records of ``samples`` (objects with ``idx``, ``jpg_name``, ``caption``,
        ``polygons``: the current annotation file ``anno_path``) whose identity is of that sample (see
        :func:`~predict.provenance.same_sample`; ``identities[idx]`` adds the image's content key where it is
        known); the others are kept."""
        identities = identities or {}
        self._current = {int(s.idx): {"jpg_name": s.jpg_name, "caption": s.caption,
                                      "polygons": polygons_digest(s.polygons),
                                      "image": (identities.get(int(s.idx)) or {}).get("image")} for s in samples}
        self._run["annotations"] = str(anno_path)

    def current_identity(self, idx: int) -> dict | None:
        """What the current annotation file's sample ``idx`` is: ``{"caption", "polygons", "image"}`` (the
        image where known), or None outside :meth:`set_current`."""
        current = (self._current or {}).get(int(idx))
        return {key: current[key] for key in ("caption", "polygons", "image")} if current else None

    def set_current_image(self, idx: int, image: str | None) -> None:
        """The content key of sample ``idx``'s image, once it is known (see :meth:`set_current`)."""
        if self._current is not None and int(idx) in self._current:
            self._current[int(idx)]["image"] = image

    @property
    def not_counted(self) -> list[int]:
        """idx of the results and errors kept in the folder that are not of the current annotation file."""
        if self._current is None:
            return []
        return sorted(idx for idx in {*self._samples, *self._errors} if not self._counts(idx))

    def _counts(self, idx: int) -> bool:
        current = self._current.get(idx)
        if current is None:
            return False
        if idx in self._samples:
            return same_sample(self._samples[idx].get("identity"), current)
        error = self._errors.get(idx)
        return error is not None and (error.get("jpg_name"), error.get("caption")) == (current["jpg_name"],
                                                                                       current["caption"])

    @property
    def mean_over(self) -> list[int]:
        """idx of the records the mean covers: those of the current annotation file (see :meth:`set_current`),
        as recorded in the file when it was not set, all of them for a file that never recorded it; records
        flagged ``degenerate`` (an all-equal map whose indicators mean nothing) are left out."""
        if self._current is not None:
            over = [idx for idx in sorted(self._samples) if self._counts(idx)]
        elif self._mean_over is not None:
            over = [idx for idx in self._mean_over if idx in self._samples]
        else:
            over = sorted(self._samples)
        return [idx for idx in over if not self._samples[idx].get("degenerate")]

    def is_done(self, idx: int) -> bool:
        """Whether a successful record exists for sample ``idx``."""
        return int(idx) in self._samples

    def record(self, idx, jpg_name, caption, score: SeloScore, **extra) -> dict:
        """Store sample ``idx``'s indicators (replacing an older record or error) and rewrite the files."""
        idx = int(idx)
        item = _finite_or_none({"idx": idx, "jpg_name": jpg_name, "caption": caption, **score.as_dict(),
                                "centers": [list(map(int, point)) for point in score.centers],
                                "circles": [list(map(int, circle)) for circle in score.circles], **extra})
        item["seal"] = seal(item)
        self._samples[idx] = item
        self._errors.pop(idx, None)
        self.unusable.pop(idx, None)
        self._save()
        return self._samples[idx]

    def rename(self, idx: int, jpg_name: str) -> None:
        """Sample ``idx``'s image is now named ``jpg_name`` (same content): its record follows, resealed."""
        item = self._samples.get(int(idx))
        if item is not None and item.get("jpg_name") != jpg_name:
            item["jpg_name"] = jpg_name
            item["seal"] = seal(item)
            self._save()

    def record_error(self, idx, jpg_name, caption, message: str, identity: dict | None = None) -> dict:
        """Store why sample ``idx`` failed (replacing an older record), with what the sample is where known
        (``identity``: caption, polygons, image), and rewrite the files."""
        idx = int(idx)
        self._errors[idx] = {"idx": idx, "jpg_name": jpg_name, "caption": caption, "error": str(message),
                             **({"identity": identity} if identity else {})}
        self._samples.pop(idx, None)
        self.unusable.pop(idx, None)
        self._save()
        return self._errors[idx]

    def set_timings(self, timings: dict) -> None:
        """Seconds per stage ``{"cut", "sim", "gnt", "flt", "total"}``; rewrites the files."""
        self._timings = _finite_or_none(dict(timings))
        self._save()

    def mean(self) -> dict:
        """Mean of each indicator over the records of :attr:`mean_over` (NaN when there is none, or one is NaN)."""
        over = self.mean_over
        if not over:
            return {name: math.nan for name in ORIGINAL_ORDER}
        return {name: float(np.mean([_as_float(self._samples[idx][name]) for idx in over])) for name in ORIGINAL_ORDER}

    def _save(self) -> None:
        os.makedirs(self.cache_path, exist_ok=True)
        if self._unreadable and os.path.isfile(self.json_path):
            os.replace(self.json_path, self.json_path + ".unreadable")
        self._unreadable = False
        referred = {(item.get("identity") or {}).get("settings") for item in self._samples.values()}
        settings = {digest: value for digest, value in self._settings.items()
                    if digest in referred or digest == self._run.get("settings")}
        data = {"samples": self.samples, "errors": self.errors, "settings": settings, "run": self._run,
                "mean": _finite_or_none(self.mean()), "mean_over": self.mean_over, "timings": self._timings}
        write_atomically(self.json_path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))
        write_atomically(self.csv_path, self._csv_text())

    def _csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["idx", "jpg_name", "caption", *ORIGINAL_ORDER])
        for item in self.samples:
            writer.writerow([item["idx"], item.get("jpg_name", ""), str(item.get("caption", "")).strip(),
                             *(repr(_as_float(item[name])) for name in ORIGINAL_ORDER)])
        mean = self.mean()
        writer.writerow(["mean", "", "", *(repr(mean[name]) for name in ORIGINAL_ORDER)])
        return out.getvalue()
