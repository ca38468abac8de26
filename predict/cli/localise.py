"""Localise text queries in your own scenes (GeoTIFF/COG, PNG, JPEG): georeferenced maps and peaks out.

    selo-localise --yaml_path demo --image scene.tif --query "a red-roofed factory next to a river" --out results/

(or ``python -m predict.cli.localise ...``; ``--yaml_path`` takes a yaml path or a built-in preset's name).
Per image x query, in ``--out`` (``<k>``: the query's number in that folder): ``<stem>_q<k>_probmap.tif`` (a
COG with the input's georeferencing, masked on nodata), ``<stem>_q<k>_overlay.jpg`` (with a world file and
``.aux.xml``), ``<stem>_q<k>_peaks.geojson`` (attention centres, WGS84 when the input has a CRS), with
``--regions Q`` ``<stem>_q<k>_regions.geojson``, with ``--mask Q`` ``<stem>_q<k>_mask.tif``; ``summary.json``
(every output in the folder, across runs), ``all_peaks.geojson``, ``log.txt``. Tile vectors are kept in
``<out>/tile_vectors`` (or ``--vector_cache``): a later query on an image, in this run or a later one, encodes
no first-stage tile. Exit code 1 when an image or query failed, 2 when the run cannot start (another run
writing ``--out`` included).
"""
from __future__ import annotations

import argparse
import os
import sys

from predict.core.pipelines import PIPELINES, get_pipeline
from predict.encoders.registry import load_encoder, read_options
from predict.core.stretch import Stretch
from predict.io.checks import (EXIT_INTERRUPTED, OneLineParser, fail_to_start, first_line, positive_int,
                               prepare_output_folder, tile_steps)
from predict.io.lock import FolderBusyError, folder_lock
from predict.io.logs import notes_logged, setup_logger
from predict.io.raster import DEFAULT_STRETCH
from predict.resources import yaml_help
from predict.run.scenes import FolderSummary, SceneConfig, localise_scenes


def parse_bands(text: str) -> tuple[int, ...]:
    """``"4,3,2"`` -> ``(4, 3, 2)`` (1-based band numbers)."""
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers joined by ',', e.g. 4,3,2, got {text!r}") from None


def parse_stretch(text: str) -> Stretch | None:
    """``"2,98"`` -> one range for all bands; ``"2,98,per-band"`` -> a range per band; ``"none"`` -> None
    (scaled from the data type's range)."""
    if text.lower() in ("none", "off"):
        return None
    try:
        return Stretch.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_quantile(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a quantile in [0, 1), e.g. 0.95, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml_path", required=True, help=yaml_help())
    parser.add_argument("--image", action="append", required=True, help="an image file; repeat for more")
    parser.add_argument("--query", action="append", default=[], help="a text query; repeat for more")
    parser.add_argument("--queries", help="a text file of queries, one per line (blank lines skipped)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default="v1")
    parser.add_argument("--step", type=tile_steps, default=None, help="tile steps joined by '_' (default: the pipeline's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (CUDA when available by default)")
    parser.add_argument("--batch_size", type=positive_int, default=None, help="tiles per encoder call (yaml's by default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of v2's word shuffling")
    parser.add_argument("--bands", type=parse_bands, default=None,
                        help="1-based bands, one (gray) or three (R,G,B), e.g. 4,3,2 (default: the file's RGB)")
    parser.add_argument("--stretch", type=parse_stretch, default=DEFAULT_STRETCH,
                        help="percentiles LOW,HIGH of the stretch of 12/16-bit and float data, one range for all "
                             "bands (default 2,98); LOW,HIGH,per-band for a range per band (colours shift); none "
                             "for the data type's range. 8-bit data are never stretched")
    parser.add_argument("--regions", type=parse_quantile, default=None,
                        help="also write polygons of the map above this quantile, e.g. 0.95")
    parser.add_argument("--mask", type=parse_quantile, default=None,
                        help="also write a binary mask GeoTIFF of the map above this quantile, e.g. 0.95")
    parser.add_argument("--vector_cache", default=None, help="tile-vector folder (default <out>/tile_vectors)")
    return parser


def read_queries(args: argparse.Namespace) -> list[str]:
    """``--query`` values, then the lines of ``--queries``, in that order."""
    queries = list(args.query)
    if args.queries:
        with open(args.queries, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first query
            queries += [line.strip() for line in f if line.strip()]
    if not queries:
        raise ValueError("no query: give --query TEXT or --queries FILE")
    return queries


def scene_config(args: argparse.Namespace) -> SceneConfig:
    """The library's configuration of parsed arguments."""
    return SceneConfig(out_dir=args.out, pipeline=get_pipeline(args.pipeline, args.step), bands=args.bands,
                       stretch=args.stretch, regions=args.regions, mask=args.mask, vector_cache=args.vector_cache,
                       seed=args.seed)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prepare_output_folder(args.out)
        with folder_lock(args.out, option="--out"):  # before anything is loaded or written: one run per folder
            return locked_main(args)
    except (OSError, FolderBusyError) as exc:
        return fail_to_start(first_line(exc))


def locked_main(args: argparse.Namespace) -> int:
    """The run of :func:`main`, its output folder locked."""
    logger = setup_logger(args.out)
    try:
        try:  # everything the run needs, checked before any model loads
            config = scene_config(args)
            queries = read_queries(args)
            with notes_logged(logger) as notes:  # a summary this run can continue; changed outputs dropped
                FolderSummary(args.out, notes)
            read_options(args.yaml_path)
            encoder = load_encoder(args.yaml_path, device=args.device, batch_size=args.batch_size)
        except Exception as exc:
            return fail_to_start(first_line(exc), logger)
        run = localise_scenes(args.image, queries, encoder, config, logger)
    except KeyboardInterrupt:
        logger.error("interrupted: the results so far are listed in %s", os.path.join(args.out, "summary.json"))
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full, read-only folder, no permission
        return fail_to_start(f"{exc}; the run stopped, the outputs written before are kept", logger)
    encoded = sum(r["tiles_encoded"] + r["boxes_encoded"] for r in run.results)
    print(f"{len(run.results)} map(s) in {args.out} ({encoded} tiles encoded)")
    if run.errors:
        print(f"{len(run.errors)} failure(s); see {os.path.join(args.out, 'log.txt')}", file=sys.stderr)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
