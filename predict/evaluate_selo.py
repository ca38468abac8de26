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

from predict import REPO_ROOT
from predict.io.annotations import SampleError, load_annotations
from predict.io.lock import FolderBusyError, folder_lock
from predict.io.logs import setup_logger
from predict.run.evaluate import evaluate_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache_path", default=str(REPO_ROOT / "cache/RSITMD_AMFMN"),
                        help="folder holding probmap_{idx}.jpg (generate_selo.py's output); results go there")
    parser.add_argument("--src_anno_path", default=str(REPO_ROOT / "test_data/annotations/anno.json"),
                        help="annotation file in the SLM schema (caption, jpg_name, points)")
    parser.add_argument("--report", action="store_true", help="also write report.html into the cache folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.cache_path):
        print(f"{args.cache_path}: cache folder not found", file=sys.stderr)
        return 2
    try:
        with folder_lock(args.cache_path):  # before the log is touched: one writer per folder
            return evaluate(args)
    except FolderBusyError as error:
        print(error, file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace) -> int:
    """The evaluation of :func:`main`, its folder locked."""
    logger = setup_logger(args.cache_path, console_level=logging.INFO)
    try:
        samples = load_annotations(args.src_anno_path)
    except SampleError as error:
        logger.error("%s", error)
        return 2
    failures = evaluate_folder(args.cache_path, samples, logger, args.src_anno_path)
    if args.report:
        from predict.io.report import write_report

        logger.info("Report: %s", write_report(args.cache_path, args.src_anno_path))
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
