"""The testset run's records: what a sample's numbers depend on, a seal over each record, the digests of its
maps, and why a recorded result cannot be reused."""
from __future__ import annotations

import json
import logging
import os
from functools import lru_cache

from predict.errors import SettingsMismatchError
from predict.provenance.code import code_digest
from predict.provenance.digests import canonical_json, digest_of, file_digest, short
from predict.provenance.encoders import encoder_identity

NOT_COMPUTED = "not computed yet"


def run_settings(pipeline, seed: int, encoder) -> dict:
    """What every sample of a run shares: ``{"pipeline", "seed", "encoder"}`` (JSON-ready); the seed only
    for a pipeline that shuffles the query (v2)."""
    return json.loads(canonical_json({"pipeline": pipeline.as_dict(), "seed": seed if pipeline.shuffled_copies else None,
                                      "encoder": encoder_identity(encoder)}))


def settings_differences(recorded, current, prefix: str = "") -> list[str]:
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


def check_run_settings(cache_path: str, recorded: dict | None, current: dict) -> None:
    """Raise :class:`SettingsMismatchError` naming the differences when the folder holds results of other
    run settings (nothing when it holds none)."""
    if recorded is not None and (differences := settings_differences(recorded, current)):
        raise SettingsMismatchError(f"{cache_path}: holds results of other run settings ({', '.join(differences)} "
                                    "differ); rerun with --overwrite to replace them, or use another --cache_path")


def polygons_digest(polygons) -> str:
    """Short digest of the polygons' canonical JSON."""
    return short(digest_of(polygons))


@lru_cache(maxsize=None)
def code_version(*modules: str) -> str:
    """Short digest of the code of ``modules`` and all they import (:func:`~predict.provenance.code_digest`),
    taken once per process: the code a record names is the code that runs, which a process does not change.
    The module that runs a computation passes its own name: the testset run's engine for a sample's maps,
    its evaluation for a written map's numbers."""
    return short(code_digest(*modules))


def sample_identity(settings_digest: str | None, caption: str, polygons, image: str | None, *, maps: str,
                    evaluation: str) -> dict:
    """What a sample's numbers depend on beyond the run settings: ``{"settings", "caption", "polygons",
    "image", "maps", "evaluation"}`` (the last two: the code versions of the maps and of their evaluation,
    :func:`code_version`)."""
    return {"settings": settings_digest, "caption": caption, "polygons": polygons_digest(polygons), "image": image,
            "maps": maps, "evaluation": evaluation}


SAMPLE_KEYS = ("caption", "polygons", "image")  # what makes a sample the same sample, whatever its name or place


def same_sample(identity: dict | None, current: dict, keys=SAMPLE_KEYS) -> bool:
    """Whether a recorded identity is of the sample ``current`` describes, on ``keys`` (by default caption,
    polygons and image content; the image only where both know it).

    >>> same_sample({"caption": "a", "polygons": "p1", "image": "i"}, {"caption": "a", "polygons": "p2", "image": None},
    ...             keys=("caption", "image"))
    True
    """
    if not isinstance(identity, dict):
        return False
    keys = [key for key in keys if key != "image" or (identity.get("image") and current.get("image"))]
    return all(identity.get(key) == current.get(key) for key in keys)


def seal(record: dict) -> str:
    """Short digest over a record's values and identity (all but its ``seal``): a record whose seal no
    longer matches was changed outside the program, and is recomputed."""
    return short(digest_of({key: value for key, value in record.items() if key != "seal"}))


def seal_problem(record: dict) -> str | None:
    """Why a stored record's seal does not hold (None when it does)."""
    if "seal" not in record:
        return "no seal recorded with its result"
    if record["seal"] != seal(record):
        return "its record in metrics.json was changed after it was written (seal mismatch)"
    return None


def map_digests(paths: dict[str, str]) -> dict[str, str]:
    """``{kind: short digest}`` of the map files ``{kind: path}``."""
    return {kind: short(file_digest(path)) for kind, path in paths.items()}


def maps_problem(recorded, paths: dict[str, str]) -> str | None:
    """Why the map files ``{kind: path}`` are not those recorded (None when they are): missing, or of
    other content (truncated, rewritten, another sample's)."""
    if not isinstance(recorded, dict):
        return "no map digests recorded with its result"
    for kind, path in paths.items():
        name = os.path.basename(path)
        try:
            digest = short(file_digest(path))
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            return f"{name} is unreadable ({exc})"
        if recorded.get(kind) != digest:
            return f"{name} is not the map recorded with its result (changed, truncated or replaced)"
    return None


def reuse_problem(record: dict | None, identity: dict, map_paths: dict[str, str]) -> str | None:
    """Why a recorded result cannot be reused for ``identity`` (None when it can): not computed, another
    identity (named part by part), or maps that are not the recorded ones."""
    if record is None:
        return NOT_COMPUTED
    recorded = record.get("identity")
    if not isinstance(recorded, dict):
        return "no provenance recorded with its result"
    changed = [key for key in identity if recorded.get(key) != identity[key]]
    if changed:
        names = {"settings": "run settings", "maps": "map code", "evaluation": "evaluation code"}
        return f"{', '.join(names.get(key, key) for key in changed)} changed"
    return maps_problem(record.get("maps"), map_paths)


def log_mean_coverage(logger: logging.Logger, store, anno_path: str) -> None:
    """Say which samples the mean covers, and which results the folder keeps without counting them."""
    logger.info("Mean over %d sample(s) of %s", len(store.mean_over), anno_path)
    if others := store.not_counted:
        logger.warning("%s: %d result(s) of samples not in %s kept but not counted in the mean (idx %s)",
                       store.json_path, len(others), anno_path, ", ".join(map(str, others)))
