"""What a sample's numbers depend on, recorded with them in ``metrics.json``, and whether they can be reused.

- :func:`run_settings`: what the whole run shares (pipeline and its parameters, steps, seed where the
  pipeline uses one, the encoder's identity). A folder records its run's settings; a run with other
  settings stops before any work (:func:`settings_differences` names what differs).
- :func:`sample_identity`: per sample, the digest of the settings, the caption, the polygons, the image's
  content and the evaluation code's version.
- :func:`reuse_problem`: why a recorded result cannot be reused (None when it can): another identity, or
  maps that are missing, truncated or of another size than the recorded one.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from functools import lru_cache

from PIL import Image

from predict.encoders.identity import encoder_identity
from predict.io.maps import MAP_KINDS, map_path
from predict.run.vectors import file_digest

NOT_COMPUTED = "not computed yet"
JPEG_END = b"\xff\xd9"


@lru_cache(maxsize=1)
def evaluation_version() -> str:
    """16 hex digits of sha256 of ``evaluations/metrics.py``: a change in the indicators' code recomputes."""
    with open(importlib.util.find_spec("evaluations.metrics").origin, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def run_settings(pipeline, seed: int, encoder) -> dict:
    """The settings every sample of a run shares: ``{"pipeline", "seed", "encoder"}`` (JSON-ready).

    ``seed`` is recorded only for a pipeline that shuffles the query (v2); v1 does not use it.
    """
    identity = encoder.identity() if callable(getattr(encoder, "identity", None)) else encoder_identity(encoder)
    return json.loads(json.dumps({"pipeline": pipeline.as_dict(), "seed": seed if pipeline.shuffled_copies else None,
                                  "encoder": identity}, default=str))


def settings_differences(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two settings dicts.

    >>> settings_differences({"pipeline": {"steps": [256]}, "seed": 0}, {"pipeline": {"steps": [512]}, "seed": 0})
    ['pipeline.steps']
    """
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return [] if recorded == current else [prefix.rstrip(".") or "settings"]
    names = []
    for key in sorted(set(recorded) | set(current), key=str):
        names += settings_differences(recorded.get(key), current.get(key), f"{prefix}{key}.")
    return names


def polygons_digest(polygons) -> str:
    """16 hex digits of sha256 of the polygons' canonical JSON."""
    return hashlib.sha256(json.dumps(polygons, sort_keys=True, default=str).encode()).hexdigest()[:16]


def image_digest(path: str) -> str | None:
    """The image file's sha1 (:attr:`~predict.run.localise.LoadedImage.key`), without decoding it, memoised
    by (path, size, mtime) for the samples sharing an image; None when it cannot be read."""
    try:
        return file_digest(path)
    except OSError:
        return None


def sample_identity(settings_digest: str, sample, image_key: str | None) -> dict:
    """What a sample's numbers depend on beyond the run settings: ``{"settings", "caption", "polygons",
    "image", "evaluation"}``."""
    return {"settings": settings_digest, "caption": sample.caption, "polygons": polygons_digest(sample.polygons),
            "image": image_key, "evaluation": evaluation_version()}


def map_problem(path: str, size) -> str | None:
    """Why the JPEG at ``path`` is not a complete ``(H, W) == size`` map (None when it is); reads the header
    and the last two bytes only."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            f.seek(-2, os.SEEK_END)
            if f.read(2) != JPEG_END:
                return f"{name} is truncated"
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as exc:
        return f"{name} is unreadable ({exc})"
    if [height, width] != list(size):
        return f"{name} is {height}x{width}, recorded {size[0]}x{size[1]}"
    return None


def reuse_problem(record: dict | None, identity: dict, cache_path: str, idx: int) -> str | None:
    """Why the recorded result of sample ``idx`` cannot be reused for ``identity`` (None when it can)."""
    if record is None:
        return NOT_COMPUTED
    recorded = record.get("identity")
    if not isinstance(recorded, dict):
        return "no provenance recorded with its result"
    changed = [key for key in identity if recorded.get(key) != identity[key]]
    if changed:
        return f"{', '.join('run settings' if key == 'settings' else key for key in changed)} changed"
    size = record.get("size")
    if not (isinstance(size, list) and len(size) == 2):
        return "no map size recorded with its result"
    for kind in MAP_KINDS:
        if problem := map_problem(map_path(cache_path, kind, idx), size):
            return problem
    return None


class SettingsMismatchError(RuntimeError):
    """A run's settings differ from those of the results already in its folder; the message is one line."""


def check_settings(cache_path: str, recorded: dict | None, current: dict) -> None:
    """Raise :class:`SettingsMismatchError` naming the differences when the folder holds results of other
    run settings (nothing when it holds none)."""
    if recorded is not None and (differences := settings_differences(recorded, current)):
        raise SettingsMismatchError(f"{cache_path}: holds results of other run settings ({', '.join(differences)} "
                                    "differ); rerun with --overwrite to replace them, or use another --cache_path")


def rescored_identity(record: dict | None, sample, size) -> dict:
    """The identity of a map scored again (``evaluate_selo.py``): the earlier record's, when it was made for
    the same caption and image size, with this scoring's polygons and evaluation code; otherwise only
    those (a later generation run then recomputes the sample)."""
    earlier = (record or {}).get("identity")
    keep = (isinstance(earlier, dict) and earlier.get("caption") == sample.caption
            and (record or {}).get("size") == list(size))
    identity = dict(earlier) if keep else {"caption": sample.caption}
    identity.update(polygons=polygons_digest(sample.polygons), evaluation=evaluation_version())
    return identity


def log_mean_coverage(logger: logging.Logger, store, anno_path: str) -> None:
    """Say which samples the mean covers, and which results the folder keeps without counting them."""
    logger.info("Mean over %d sample(s) of %s", len(store.mean_over), anno_path)
    if others := store.not_counted:
        logger.warning("%s: %d result(s) of samples not in %s kept but not counted in the mean (idx %s)",
                       store.json_path, len(others), anno_path, ", ".join(map(str, others)))
