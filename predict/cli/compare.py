"""Compare SeLo runs as a paper does: paired statistics over the same samples, refusing what is not comparable.

    selo-compare RUN [RUN ...] [--baseline RUN] [--out DIR] [--format text|md|latex|csv|json]
                 [--bootstrap N] [--seed S] [--common]
    (or: python -m predict.cli.compare ...)

A RUN is a cache folder written by ``selo-generate`` (or ``selo-evaluate``): its ``metrics.json``. The first
RUN is the baseline unless ``--baseline`` names another. What is compared, and how, is
:mod:`predict.compare.runs`; the tables and ``compare.html`` are :mod:`predict.compare.report`.
Outputs: the table on the terminal (``--format``); with ``--out DIR``: ``compare.json``, the table as a file
(``compare.txt``/``.md``/``.tex``/``.csv``) and ``compare.html``.
Exit codes: 0 compared; 2 the runs cannot be read or compared, or a bad argument.
"""
from __future__ import annotations

import argparse
import os
import sys

from predict.cli.options import EXIT_CANNOT_START, OneLineParser, positive_int
from predict.cli.runner import prepare_output_folder
from predict.compare import (DEFAULT_RESAMPLES, FORMATS, CompareError, compare_runs, load_run, render_table,
                             write_outputs)


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(prog="selo-compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="cache folders with metrics.json")
    parser.add_argument("--baseline", metavar="RUN",
                        help="the run the others are compared with (default: the first RUN)")
    parser.add_argument("--out", metavar="DIR", help="folder for compare.json, the table file and compare.html")
    parser.add_argument("--format", choices=FORMATS, default="text", help="table format (terminal and --out)")
    parser.add_argument("--bootstrap", type=positive_int, default=DEFAULT_RESAMPLES, metavar="N",
                        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling")
    parser.add_argument("--common", action="store_true",
                        help="compare the samples all runs share, listing the others (default: refuse)")
    args = parser.parse_args(argv)
    paths = [os.path.normpath(path) for path in args.runs]
    if args.baseline is not None:
        baseline = os.path.normpath(args.baseline)
        paths = [baseline] + [path for path in paths if path != baseline]
    if len(paths) < 2:
        parser.error("give at least two runs to compare")
    if len(set(map(os.path.realpath, paths))) < len(paths):
        parser.error("a run is given twice")
    args.runs = paths
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        runs = [load_run(path) for path in args.runs]
        comparison = compare_runs(runs, args.common, args.bootstrap, args.seed)
        if args.out:
            prepare_output_folder(args.out)
    except (CompareError, OSError) as error:
        print(f"selo-compare: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    print(render_table(comparison, args.format), end="")
    if args.out:
        try:
            written = write_outputs(comparison, args.out, args.format)
        except OSError as error:
            print(f"selo-compare: {error}", file=sys.stderr)
            return EXIT_CANNOT_START
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
