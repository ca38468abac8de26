"""Search an archive of scenes on Ray: "where is X?" answered across every scene ``selo-index`` indexed.

    selo-search --archive archive/ --query "four tennis courts next to a green lawn" --top 5 --out hits/

(or ``python -m predict.cli.search ...``). Each query's text vector is computed once; every tile of the archive is scored in
parallel Ray tasks; each scene gets its scene score (the maximum over pixels of the per-pixel mean of the raw
tile scores, before the per-image normalisation: comparable across scenes) and the scenes are ranked by it.
For the ``--top`` scenes of each query the full SeLo maps are made in parallel and written as
``selo-localise`` writes them (``<stem>_q<k>_probmap.tif``, ``_overlay.jpg``, ``_peaks.geojson``); in
``--out`` also ``hits_q<k>.geojson`` (one point per top scene at its best peak) and ``summary.json``, which
lists every output: a search into the same ``--out`` first removes those of the previous one (only those).
Every scene is checked before any is ranked: a scene file damaged, copied from elsewhere or over another,
or whose image changed since it was indexed is left out with one line (run ``selo-index`` again); a query
with no word the encoder knows is one line, the others answered. ``--yaml_path`` names the encoder's yaml
when it moved since the archive was indexed (its vectors key must be the archive's).
Exit code 1 when a scene or query failed, 2 when the search cannot start, 130 on Ctrl-C.
"""
from __future__ import annotations

import os
import sys

from predict.archive import SUMMARY_NAME, open_search, run_search
from predict.cli.options import (OneLineParser, add_address_argument, add_progress_argument, add_query_arguments,
                                 add_yaml_argument, positive_int, read_queries)
from predict.cli.ray_session import check_address, ray_session
from predict.cli.runner import fail_to_start, logged_run, run_in_folder
from predict.encoders.base import PRECISIONS, RUNTIMES
from predict.io.logs import setup_logger
from predict.resources import find_yaml


def build_parser() -> OneLineParser:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, metavar="DIR", help="an archive folder made by selo-index")
    add_query_arguments(parser)
    parser.add_argument("--top", type=positive_int, default=5, metavar="K", help="scenes mapped per query (default 5)")
    parser.add_argument("--out", required=True, help="output folder")
    add_yaml_argument(parser, required=False, purpose="the encoder's yaml, when it moved since the archive was "
                                                      "indexed (default: the one it was indexed with); ")
    add_address_argument(parser)
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="checked against the archive's: its scenes are searched and mapped with the runtime "
                             "and precision they were indexed with")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="checked as --runtime is")
    add_progress_argument(parser)
    return parser


def check_runtime(args, encoder) -> None:
    """A one-line ``ValueError`` when ``--runtime`` or ``--precision`` names another than the archive's."""
    for flag, asked, indexed in (("--runtime", args.runtime, encoder.runtime),
                                 ("--precision", args.precision, encoder.precision)):
        if asked not in (None, "auto", indexed):
            raise ValueError(f"{flag} {asked}: {args.archive} was indexed with {indexed}; its vectors are searched "
                             f"and mapped as they were made (index into another --archive for {asked})")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = os.path.abspath(args.out)
    return run_in_folder(out, "--out", lambda: search(args, out), progress=args.progress)


def search(args, out: str) -> int:
    """The run of :func:`main`, its output folder locked."""
    logger = setup_logger(out)

    def start():  # everything the search needs, checked before Ray starts
        queries = read_queries(args)
        yaml_path = None if args.yaml_path is None else os.path.abspath(find_yaml(args.yaml_path))
        opened = open_search(args.archive, out, yaml_path)
        check_runtime(args, opened.encoder)
        check_address(args.address)
        return opened, queries

    def work(started) -> int:
        opened, queries = started
        try:
            with ray_session(args.address):
                run = run_search(opened, queries, args.top, logger)
        except ValueError as exc:  # a stored file that changed since it was checked (the folder's summary)
            return fail_to_start(str(exc).splitlines()[0], logger)
        print(f"{len(run.results)} map(s) in {out} (scoring {run.seconds['scoring']:.1f}s, maps {run.seconds['maps']:.1f}s)")
        if run.errors:
            print(f"{len(run.errors)} failure(s); see {os.path.join(out, SUMMARY_NAME)}", file=sys.stderr)
        return 1 if run.errors else 0

    return logged_run(logger, start, work, stopped="the search stopped, the outputs written before are kept",
                      interrupted=lambda: "interrupted: the maps written so far are whole; rerun the same command")


if __name__ == "__main__":
    sys.exit(main())
