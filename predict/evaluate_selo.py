"""Evaluate the probability maps of a cache folder with the official SeLo indicators (Rsu, Ras, Rda, Rmi).

    python predict/evaluate_selo.py --cache_path cache/X --src_anno_path test_data/annotations/anno.json [--report]

Sample ``idx`` (its position in the annotation file) is scored on ``<cache_path>/probmap_{idx}.jpg``.
Per-sample blocks and the mean are logged as the original does, to the terminal and ``<cache_path>/log.txt``;
results go to ``metrics.json`` / ``metrics.csv``; ``--report`` also writes ``report.html``. A sample that
cannot be scored (missing map, bad polygon...) is one error line; the others are still scored, and the
exit code is 1 (2 when the annotation file itself is unusable).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from tqdm import tqdm

if __package__ in (None, ""):  # run as `python predict/evaluate_selo.py` from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluations.metrics import EvaluationInputError, evaluate_gray, read_probmap  # noqa: E402
from evaluations.results import MetricsStore  # noqa: E402
from evaluations.utils import log_metric_block  # noqa: E402
from predict.dataset import Sample, SampleError, load_annotations  # noqa: E402
from predict.model_encoder import REPO_ROOT  # noqa: E402
from predict.outputs import map_path, setup_logger  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache_path", default=str(REPO_ROOT / "cache/RSITMD_AMFMN"),
                        help="folder holding probmap_{idx}.jpg (generate_selo.py's output); results go there")
    parser.add_argument("--src_anno_path", default=str(REPO_ROOT / "test_data/annotations/anno.json"),
                        help="annotation file in the SLM schema (caption, jpg_name, points)")
    parser.add_argument("--report", action="store_true", help="also write report.html into the cache folder")
    return parser.parse_args(argv)


def evaluate_sample(cache_path: str, sample: Sample, store: MetricsStore, logger: logging.Logger) -> bool:
    """Score one sample's probmap into ``store``; log its block, or its one-line error. True on success."""
    path = map_path(cache_path, "probmap", sample.idx)
    try:
        score = evaluate_gray(read_probmap(path), sample.polygons, name=path)
    except EvaluationInputError as error:
        store.record_error(sample.idx, sample.jpg_name, sample.caption, str(error))
        logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, error)
        return False
    store.record(sample.idx, sample.jpg_name, sample.caption, score)
    log_metric_block(logger, score.as_dict(), path)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.cache_path):
        print(f"{args.cache_path}: cache folder not found", file=sys.stderr)
        return 2
    logger = setup_logger(args.cache_path, console_level=logging.INFO)
    try:
        samples = load_annotations(args.src_anno_path)
    except SampleError as error:
        logger.error("%s", error)
        return 2
    store = MetricsStore(args.cache_path)
    if dropped := store.keep_only(samples):
        logger.warning("%s: dropped %d result(s) of samples not in %s", store.json_path, dropped, args.src_anno_path)
    failures = sum(not evaluate_sample(args.cache_path, sample, store, logger)
                   for sample in tqdm(samples, desc="SeLo evaluation", unit="map", dynamic_ncols=True))
    log_metric_block(logger, store.mean(), None)
    if args.report:
        from predict.report import write_report

        logger.info("Report: %s", write_report(args.cache_path, args.src_anno_path))
    if failures:
        logger.error("%d of %d sample(s) failed; see %s", failures, len(samples),
                     os.path.join(args.cache_path, "log.txt"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
