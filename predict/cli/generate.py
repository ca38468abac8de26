"""Generate SeLo maps for every sample of an SLM-style testset and evaluate them (Rsu, Ras, Rda, Rmi).

    selo-generate --yaml_path RSITMD_AMFMN --cache_path cache/X
    python predict/generate_selo.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml --cache_path cache/X

v1 (default): tiles of every step at two grid offsets, per-pixel mean of the tile scores, median 251.
v2 (``--pipeline v2``, or ``selo-generate-v2`` / ``generate_selo_v2.py``): 512 tiles, the best 15 % refined
by boxes around 9 points each, a query averaged with 4 word-shuffled copies, Gaussian 255.
Results are written per sample as they are produced (maps, log.txt, metrics.json/csv), report.html at
the end; a rerun skips the samples whose recorded provenance still holds (and recomputes the others,
saying why) unless ``--overwrite``; a folder holding results of other run settings, or written by a live
run, stops the run before any work. Arguments, paths and the yaml are checked before any model loads.
The default folders are the original's, relative to the current folder. Exit code 1 when any sample
failed, 2 when the run cannot start (or stops: disk full, read-only folder), 130 on Ctrl-C (what is saved
is kept; rerun to resume).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from predict.core.pipelines import PIPELINES, get_pipeline
from predict.encoders.registry import load_encoder
from predict.io.annotations import load_annotations
from predict.io.checks import (EXIT_INTERRUPTED, OneLineParser, fail_to_start, first_line, interrupted_line,
                               positive_int, prepare_output_folder, require_folder, tile_steps)
from predict.io.lock import FolderBusyError, folder_lock
from predict.io.logs import setup_logger
from predict.resources import yaml_help
from predict.run.engine import RunConfig, SettingsMismatchError, run_testset
from predict.run.memory import default_memory_limit
from predict.runtime import configure_process


def build_parser(pipeline: str = "v1") -> argparse.ArgumentParser:
    """The original's arguments and ours; ``pipeline`` is the default of ``--pipeline``."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml_path", default="RSITMD_AMFMN", help=yaml_help("RSITMD_AMFMN"))
    parser.add_argument("--cache_path", default="cache/RSITMD_AMFMN",
                        help="output folder: maps, log.txt, metrics.json/csv (default %(default)s)")
    parser.add_argument("--src_data_path", default="test_data/imgs", help="folder of the images (default %(default)s)")
    parser.add_argument("--src_anno_path", default="test_data/annotations/anno.json",
                        help="annotation file in the SLM schema (default %(default)s)")
    parser.add_argument("--step", type=tile_steps, default=None,
                        help="tile steps joined by '_' (default: the pipeline's, v1 256_512_768, v2 512)")
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default=pipeline)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (CUDA when available by default)")
    parser.add_argument("--batch_size", type=positive_int, default=None, help="tiles per encoder call (yaml's by default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of v2's word shuffling")
    parser.add_argument("--overwrite", action="store_true", help="recompute samples that are already complete")
    parser.add_argument("--no_report", action="store_true", help="do not write <cache_path>/report.html")
    parser.add_argument("--no_vector_cache", action="store_true",
                        help="do not keep tile vectors on disk under <cache_path>/tile_vectors")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads finishing samples (filter, maps, indicators, report) while the encoder runs "
                             "and the next image is decoded; 1: one step after another; default: the usable cores")
    parser.add_argument("--memory_mb", type=positive_int, default=None,
                        help="resident memory (MB) the run aims to stay under: decoding ahead and parallel "
                             f"finishing wait for room (default here {default_memory_limit() // 10**6}: 700 per "
                             "core, at most half the available memory)")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """The library's run configuration of parsed arguments."""
    return RunConfig(cache_path=args.cache_path, src_data_path=args.src_data_path, src_anno_path=args.src_anno_path,
                     pipeline=get_pipeline(args.pipeline, args.step), seed=args.seed, overwrite=args.overwrite,
                     vector_cache=not args.no_vector_cache, report=not args.no_report,
                     workers=args.workers or 0,
                     memory_limit=default_memory_limit() if args.memory_mb is None else args.memory_mb * 10**6)


def main(argv=None, pipeline: str = "v1") -> int:
    args = build_parser(pipeline).parse_args(argv)
    configure_process(parallel=args.workers != 1)  # before the model loads
    try:
        prepare_output_folder(args.cache_path)
    except OSError as exc:
        return fail_to_start(str(exc))
    try:
        with folder_lock(args.cache_path):  # before anything is loaded or written: one run per folder
            return generate(args)
    except FolderBusyError as exc:
        return fail_to_start(str(exc))


def generate(args: argparse.Namespace) -> int:
    """The run of :func:`main`, its folder locked."""
    logger = setup_logger(args.cache_path)
    started = time.perf_counter()
    try:
        try:  # everything a run needs, checked before any model loads
            config = run_config(args)
            require_folder(config.src_data_path, "image folder (--src_data_path)")
            samples = load_annotations(config.src_anno_path)
            encoder = load_encoder(args.yaml_path, device=args.device, batch_size=args.batch_size)
        except Exception as exc:
            return fail_to_start(first_line(exc), logger)
        run, failures = run_testset(config, encoder, logger, samples)
    except SettingsMismatchError as exc:
        return fail_to_start(str(exc), logger)
    except KeyboardInterrupt:
        logger.error("%s", interrupted_line(args.cache_path))
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full, read-only folder, no permission
        return fail_to_start(f"{exc}; the run stopped, the results saved before are kept", logger)
    mean = run.store.mean()
    print(f"Mean over {len(run.store.mean_over)} samples: "
          + "  ".join(f"{name} {value:.4f}" for name, value in mean.items())
          + f"  ({time.perf_counter() - started:.1f}s; tiles encoded {run.vectors.tiles_encoded}"
          + f" of {run.vectors.tiles_requested} requested)")
    if failures:
        print(f"{failures} sample(s) failed; see {os.path.join(args.cache_path, 'log.txt')}", file=sys.stderr)
    return 1 if failures else 0


def main_v2(argv=None) -> int:
    """:func:`main` with the v2 pipeline by default (``selo-generate-v2``, ``generate_selo_v2.py``)."""
    return main(argv, pipeline="v2")


if __name__ == "__main__":
    sys.exit(main())
