"""Scoring the probability maps of a cache folder against an annotation file (``evaluate_selo.py``)."""
from __future__ import annotations

import logging
import os

from tqdm import tqdm

from evaluations.metrics import EvaluationInputError, evaluate_gray, read_probmap
from evaluations.utils import log_metric_block
from predict.io.annotations import Sample
from predict.io.maps import map_path
from predict.io.lock import folder_lock
from predict.io.results import MetricsStore
from predict.run.provenance import log_mean_coverage, rescored_identity


def evaluate_sample(cache_path: str, sample: Sample, store: MetricsStore, logger: logging.Logger) -> bool:
    """Score one sample's probmap into ``store``; log its block, or its one-line error. True on success."""
    path = map_path(cache_path, "probmap", sample.idx)
    try:
        gray = read_probmap(path)
        score = evaluate_gray(gray, sample.polygons, name=path)
    except EvaluationInputError as error:
        store.record_error(sample.idx, sample.jpg_name, sample.caption, str(error))
        logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, error)
        return False
    previous = store.get(sample.idx)
    store.record(sample.idx, sample.jpg_name, sample.caption, score,
                 identity=rescored_identity(previous, sample, gray.shape), size=list(gray.shape))
    log_metric_block(logger, score.as_dict(), path)
    return True


def evaluate_folder(cache_path: str, samples: list[Sample], logger: logging.Logger, anno_path: str = "") -> int:
    """Score ``probmap_{idx}.jpg`` of every sample into ``<cache_path>/metrics.json``, log the mean block;
    return the number of samples that could not be scored."""
    with folder_lock(cache_path):  # one writer per folder (raises FolderBusyError)
        store = MetricsStore(cache_path)
        store.set_current(samples, anno_path)
        failures = sum(not evaluate_sample(cache_path, sample, store, logger)
                       for sample in tqdm(samples, desc="SeLo evaluation", unit="map", dynamic_ncols=True))
    log_metric_block(logger, store.mean(), None)
    log_mean_coverage(logger, store, anno_path)
    if failures:
        logger.error("%d of %d sample(s) failed; see %s", failures, len(samples), os.path.join(cache_path, "log.txt"))
    return failures
