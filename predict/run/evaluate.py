"""Scoring the probability maps of a cache folder against an annotation file (``evaluate_selo.py``)."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
from tqdm import tqdm

from evaluations.metrics import EvaluationInputError, evaluate_gray
from evaluations.utils import log_metric_block
from predict.io.annotations import Sample, SampleError
from predict.io.images import decode_strictly, image_size
from predict.io.maps import map_path
from predict.io.lock import folder_lock
from predict.io.results import MetricsStore
from predict.run.provenance import log_mean_coverage, rescored_identity

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


def evaluate_sample(cache_path: str, sample: Sample, store: MetricsStore, logger: logging.Logger,
                    images_path: str | None = None) -> bool:
    """Score one sample's probmap into ``store``; log its block, or its one-line error. True on success.

    With ``images_path`` (the folder of the images) the map must have the size of the sample's image."""
    path = map_path(cache_path, "probmap", sample.idx)
    try:
        if sample.problem:
            raise SampleError(sample.problem)
        shape = image_size(os.path.join(images_path, sample.jpg_name)) if images_path else None
        gray = read_map(path, shape)
        score = evaluate_gray(gray, sample.polygons, name=path)
    except (EvaluationInputError, SampleError) as error:
        store.record_error(sample.idx, sample.jpg_name, sample.caption, str(error))
        logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, error)
        return False
    previous = store.get(sample.idx)
    store.record(sample.idx, sample.jpg_name, sample.caption, score,
                 identity=rescored_identity(previous, sample, gray.shape), size=list(gray.shape))
    log_metric_block(logger, score.as_dict(), path)
    return True


def evaluate_folder(cache_path: str, samples: list[Sample], logger: logging.Logger, anno_path: str = "",
                    images_path: str | None = None) -> int:
    """Score ``probmap_{idx}.jpg`` of every sample into ``<cache_path>/metrics.json``, log the mean block;
    return the number of samples that could not be scored. ``images_path``: see :func:`evaluate_sample`."""
    with folder_lock(cache_path):  # one writer per folder (raises FolderBusyError)
        store = MetricsStore(cache_path)
        store.set_current(samples, anno_path)
        failures = sum(not evaluate_sample(cache_path, sample, store, logger, images_path)
                       for sample in tqdm(samples, desc="SeLo evaluation", unit="map", dynamic_ncols=True))
    log_metric_block(logger, store.mean(), None)
    log_mean_coverage(logger, store, anno_path)
    if failures:
        logger.error("%d of %d sample(s) failed; see %s", failures, len(samples), os.path.join(cache_path, "log.txt"))
    return failures
