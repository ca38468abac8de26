"""Scoring the probability maps of a cache folder against an annotation file (``evaluate_selo.py``).

Each map is paired with the sample it was made for, by content: the folder's records say which caption
and image content each ``probmap_{idx}.jpg`` (by its digest) was made for, so a reordered or edited
annotation file never has a map scored against another sample's polygons. Maps without any record (made
by the original code) are paired by position, as the original evaluator did, with a warning.

:func:`evaluate_written_map` scores the map a testset run has just written, as the original's evaluator
read it from its JPEG; short of memory, without keeping it through the peak search.
"""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
from tqdm import tqdm

from evaluations.metrics import (EvaluationInputError, SeloScore, checked_rsu, evaluate_gray, rank_centres,
                                 region_centroids, score_of, smooth_gray, smooth_maxima)
from evaluations.utils import log_metric_block
from predict.io.annotations import Sample, SampleError
from predict.io.images import decode_strictly, image_size
from predict.io.lock import folder_lock
from predict.io.maps import decode_probmap, map_path
from predict.io.results import MetricsStore
from predict.provenance import (code_version, file_digest, image_key, log_mean_coverage, polygons_digest, same_sample,
                                short)

EVALUATION_CODE = (__name__,)  # a written map's evaluation, as selo-generate and selo-evaluate run it: this module
GRAY_TOLERANCE = 2  # gray levels by which the channels of a gray map saved as colour JPEG may differ


def read_map(path: str, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """The probability map at ``path`` as uint8 ``(H, W)``, as the original's ``cv2.imread(path,
    IMREAD_GRAYSCALE)``, after checking that the file is complete, holds one gray channel (a colour
    heatmap saved under a probmap's name is refused) and, when ``image_shape`` ``(H, W)`` is given, has its
    image's size. Each problem is an :class:`EvaluationInputError` naming ``path``."""
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: probability map not found")
    try:
        stored = decode_strictly(path)
    except SampleError as error:
        raise EvaluationInputError(str(error)) from None
    if stored.dtype != np.uint8:
        raise EvaluationInputError(f"{path}: {stored.dtype} pixels; a probability map is 8-bit gray")
    if stored.ndim == 3:
        spread = max(int(np.abs(stored[:, :, k].astype(np.int16) - stored[:, :, 0]).max()) for k in (1, 2))
        if spread > GRAY_TOLERANCE:
            raise EvaluationInputError(f"{path}: a colour image (channels differ by up to {spread} levels), not a "
                                       "single-channel probability map (a heatmap saved as probmap?)")
        stored = cv2.imread(path, cv2.IMREAD_GRAYSCALE)  # the original's reading of a 3-channel gray file
    if image_shape is not None and stored.shape[:2] != tuple(image_shape):
        raise EvaluationInputError(f"{path}: map is {stored.shape[0]}x{stored.shape[1]} but its image is "
                                   f"{image_shape[0]}x{image_shape[1]}")
    return stored


def evaluate_written_map(data: np.ndarray, polygons: list, name: str, keep_map: bool) -> SeloScore:
    """:func:`~evaluations.metrics.evaluate_gray` of the probmap whose JPEG bytes are ``data``, decoded as the
    original's evaluator read the file (:func:`~predict.io.maps.decode_probmap`); the same numbers either way.

    With ``keep_map`` False the map is let go while the attention centres are searched and decoded again for
    their values: the map and the search's two full-size buffers are never alive together (2 bytes per pixel
    at the peak instead of 3, for one more decoding).
    """
    gray = decode_probmap(data)
    if keep_map:
        return evaluate_gray(gray, polygons, name)
    circles, rsu_value = checked_rsu(gray, polygons, name)
    smooth = smooth_gray(gray)
    del gray
    points = region_centroids(smooth_maxima(smooth))
    del smooth
    return score_of(circles, rsu_value, rank_centres(points, decode_probmap(data)))


def current_identity(sample: Sample, images_path: str | None) -> dict:
    """What makes ``sample`` itself: caption, polygons and, with the images' folder, its image's content."""
    image = None
    if images_path:
        try:
            image = image_key(os.path.join(images_path, sample.jpg_name))
        except OSError:
            pass  # reported when its size is read
    return {"caption": sample.caption, "polygons": polygons_digest(sample.polygons), "image": image}


def recorded_maps(cache_path: str, store: MetricsStore) -> dict[int, dict]:
    """``{idx: record}`` of the folder's records whose ``probmap_{idx}.jpg`` is still the recorded file."""
    paired = {}
    for record in store.samples:
        path = map_path(cache_path, "probmap", record["idx"])
        recorded = (record.get("maps") or {}).get("probmap")
        try:
            if recorded and short(file_digest(path)) == recorded:
                paired[record["idx"]] = record
        except OSError:
            pass
    return paired


def map_for(sample: Sample, current: dict, made: dict[int, dict]) -> int | None:
    """The idx of the map made for ``sample`` among ``made`` (see :func:`recorded_maps`): one made for its
    caption and image (its polygons may have been edited since: scoring them is the point), the one made
    with its polygons and at its own position first; None when none was."""
    candidates = [idx for idx, record in made.items()
                  if same_sample(record.get("identity"), current, keys=("caption", "image"))]
    return min(candidates, default=None,
               key=lambda idx: (made[idx]["identity"].get("polygons") != current["polygons"], idx != sample.idx, idx))


def evaluate_sample(cache_path: str, sample: Sample, store: MetricsStore, logger: logging.Logger,
                    images_path: str | None = None, made: dict[int, dict] | None = None,
                    current: dict | None = None) -> bool:
    """Score the map made for one sample into ``store``; log its block, or its one-line error. True on success.

    ``made``: the folder's maps by the sample they were made for (:func:`recorded_maps`); None (no record
    at all) pairs by position. With ``images_path`` (the folder of the images) the map must have the size
    of the sample's image; ``current``: its :func:`current_identity`, when already taken."""
    current = current or current_identity(sample, images_path)
    try:
        if sample.problem:
            raise SampleError(sample.problem)
        source = sample.idx if made is None else map_for(sample, current, made)
        if source is None:
            made_for = (made.get(sample.idx) or {}).get("caption")
            raise EvaluationInputError(
                f"no probability map in {cache_path} was made for this sample"
                + (f" (probmap_{sample.idx}.jpg was made for {made_for!r})" if made_for else "")
                + "; generate it with generate_selo.py")
        path = map_path(cache_path, "probmap", source)
        shape = image_size(os.path.join(images_path, sample.jpg_name)) if images_path else None
        gray = read_map(path, shape)
        score = evaluate_gray(gray, sample.polygons, name=path)
    except (EvaluationInputError, SampleError) as error:
        store.record_error(sample.idx, sample.jpg_name, sample.caption, str(error), identity=current)
        logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, error)
        return False
    earlier = (made or {}).get(source, {})
    identity = {**(earlier.get("identity") or {}), **{key: value for key, value in current.items() if value},
                "evaluation": code_version(*EVALUATION_CODE)}
    maps = dict(earlier.get("maps") or {}) if source == sample.idx else {}
    maps["probmap"] = short(file_digest(path))
    store.record(sample.idx, sample.jpg_name, sample.caption, score, identity=identity, size=list(gray.shape),
                 maps=maps, **({"map_of": source} if source != sample.idx else {}))
    log_metric_block(logger, score.as_dict(), path)
    return True


def evaluate_folder(cache_path: str, samples: list[Sample], logger: logging.Logger, anno_path: str = "",
                    images_path: str | None = None) -> int:
    """Score the map made for every sample into ``<cache_path>/metrics.json``, log the mean block; return
    the number of samples that could not be scored. ``images_path``: see :func:`evaluate_sample`."""
    with folder_lock(cache_path):  # one writer per folder (raises FolderBusyError)
        store = MetricsStore(cache_path)
        store.set_current(samples, anno_path)
        # which sample each map was made for, read before any record is replaced
        made = recorded_maps(cache_path, store) if any("maps" in r for r in store.samples) else None
        if made is None:
            logger.warning("%s: no record says which sample each map was made for; paired by position, as the "
                           "original evaluator did", cache_path)
        failures = 0
        for sample in tqdm(samples, desc="SeLo evaluation", unit="map", dynamic_ncols=True):
            current = current_identity(sample, images_path)
            store.set_current_image(sample.idx, current["image"])
            failures += not evaluate_sample(cache_path, sample, store, logger, images_path, made, current)
    log_metric_block(logger, store.mean(), None)
    log_mean_coverage(logger, store, anno_path)
    if failures:
        logger.error("%d of %d sample(s) failed; see %s", failures, len(samples), os.path.join(cache_path, "log.txt"))
    return failures
