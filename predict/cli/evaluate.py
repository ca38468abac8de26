"""Evaluate the probability maps of a cache folder with the official SeLo indicators (Rsu, Ras, Rda, Rmi).

    selo-evaluate --cache_path cache/X --src_anno_path test_data/annotations/anno.json [--report]
    python predict/evaluate_selo.py ...   (the same, under the original's name)

Sample ``idx`` (its position in the annotation file) is scored on ``<cache_path>/probmap_{idx}.jpg``.
Per-sample blocks and the mean are logged as the original does, to the terminal and ``<cache_path>/log.txt``;
results go to ``metrics.json`` / ``metrics.csv``; ``--report`` also writes ``report.html``. A sample that
cannot be scored (missing, truncated or colour map, a map of another size than its image with
``--src_data_path``, bad caption or polygon...) is one error line; the others are still scored, and the
exit code is 1 (2 when the run cannot start or stops, 130 on Ctrl-C). The original's ``--yaml_path`` is
accepted and ignored.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from predict.cli.generate import interrupted_line
from predict.cli.options import OneLineParser, require_folder
from predict.cli.runner import fail_to_start, logged_run, run_in_folder
from predict.io.annotations import load_annotations
from predict.io.logs import setup_logger
from predict.io.report import write_report
from predict.testset import evaluate_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache_path", default="cache/RSITMD_AMFMN",
                        help="folder holding probmap_{idx}.jpg (selo-generate's output); results go there "
                             "(default %(default)s)")
    parser.add_argument("--src_anno_path", default="test_data/annotations/anno.json",
                        help="annotation file in the SLM schema (caption, jpg_name, points) (default %(default)s)")
    parser.add_argument("--src_data_path", default=None,
                        help="folder of the images; when given, each map must have its image's size")
    parser.add_argument("--yaml_path", default=None,
                        help="accepted and ignored, as the original's evaluation took it (no encoder is needed)")
    parser.add_argument("--report", action="store_true", help="also write report.html into the cache folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.cache_path):
        return fail_to_start(f"{args.cache_path}: cache folder not found")
    return run_in_folder(args.cache_path, "--cache_path", lambda: evaluate(args), create=False)


def evaluate(args: argparse.Namespace) -> int:
    """The evaluation of :func:`main`, its folder locked."""
    logger = setup_logger(args.cache_path, console_level=logging.INFO)

    def start():
        if args.src_data_path is not None:
            require_folder(args.src_data_path, "image folder (--src_data_path)")
        return load_annotations(args.src_anno_path)

    def work(samples) -> int:
        failures = evaluate_folder(args.cache_path, samples, logger, args.src_anno_path, args.src_data_path)
        if args.report:
            logger.info("Report: %s", write_report(args.cache_path, args.src_anno_path))
        return 1 if failures else 0

    return logged_run(logger, start, work, interrupted=lambda: interrupted_line(args.cache_path),
                      stopped="the evaluation stopped, the results saved before are kept")


if __name__ == "__main__":
    sys.exit(main())
