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

from predict.cli.options import (OneLineParser, add_band_arguments, add_progress_argument, add_query_arguments,
                                 add_runtime_arguments, add_yaml_argument, parse_quantile, positive_int, read_queries,
                                 runtime_options, tile_steps)
from predict.cli.runner import logged_run, run_in_folder
from predict.core.pipelines import PIPELINES, get_pipeline
from predict.core.tiling import tile_sample
from predict.encoders.registry import load_encoder, read_options
from predict.io.logs import notes_logged, setup_logger
from predict.io.scene_blocks import middle_rows
from predict.runtime import configure_process
from predict.scenes import FolderSummary, SceneConfig, localise_scenes


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_yaml_argument(parser)
    parser.add_argument("--image", action="append", required=True, help="an image file; repeat for more")
    add_query_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default="v1")
    parser.add_argument("--step", type=tile_steps, default=None, help="tile steps joined by '_' (default: the pipeline's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (CUDA when available by default)")
    parser.add_argument("--batch_size", type=positive_int, default=None, help="tiles per encoder call (yaml's by default)")
    add_runtime_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of v2's word shuffling")
    add_band_arguments(parser)
    parser.add_argument("--regions", type=parse_quantile, default=None,
                        help="also write polygons of the map above this quantile, e.g. 0.95")
    parser.add_argument("--mask", type=parse_quantile, default=None,
                        help="also write a binary mask GeoTIFF of the map above this quantile, e.g. 0.95")
    parser.add_argument("--vector_cache", default=None, help="tile-vector folder (default <out>/tile_vectors)")
    parser.add_argument("--memory_mb", type=positive_int, default=None,
                        help="memory (MB) a scene's reading and maps stay within, whatever its size: it is read and "
                             "its maps written in stripes (default: 700 MB per usable core); never changes the outputs")
    add_progress_argument(parser)
    return parser


def scene_config(args: argparse.Namespace) -> SceneConfig:
    """The library's configuration of parsed arguments."""
    return SceneConfig(out_dir=args.out, pipeline=get_pipeline(args.pipeline, args.step), bands=args.bands,
                       stretch=args.stretch, regions=args.regions, mask=args.mask, vector_cache=args.vector_cache,
                       seed=args.seed, memory_mb=args.memory_mb)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process(parallel=False, tuned_torch=False)  # before the model loads: freed stripes go back
    return run_in_folder(args.out, "--out", lambda: locked_main(args), progress=args.progress)


def locked_main(args: argparse.Namespace) -> int:
    """The run of :func:`main`, its output folder locked."""
    logger = setup_logger(args.out)

    def start():  # everything the run needs, checked before any model loads
        config, queries = scene_config(args), read_queries(args)
        with notes_logged(logger) as notes:  # a summary this run can continue; changed outputs dropped
            FolderSummary(args.out, notes)
        read_options(args.yaml_path)
        sample = tile_sample(args.image, lambda path: middle_rows(path, bands=config.bands, stretch=config.stretch))
        return config, queries, load_encoder(args.yaml_path, device=args.device, batch_size=args.batch_size,
                                             sample=sample, **runtime_options(args))

    def work(loaded) -> int:
        config, queries, encoder = loaded
        run = localise_scenes(args.image, queries, encoder, config, logger)
        encoded = sum(r["tiles_encoded"] + r["boxes_encoded"] for r in run.results)
        print(f"{len(run.results)} map(s) in {args.out} ({encoded} tiles encoded)")
        if run.errors:
            print(f"{len(run.errors)} failure(s); see {os.path.join(args.out, 'log.txt')}", file=sys.stderr)
        return 1 if run.errors else 0

    return logged_run(logger, start, work, stopped="the run stopped, the outputs written before are kept",
                      interrupted=lambda: f"interrupted: the results so far are listed in "
                                          f"{os.path.join(args.out, 'summary.json')}")


if __name__ == "__main__":
    sys.exit(main())
