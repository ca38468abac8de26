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

from predict.cli.options import (OneLineParser, add_runtime_arguments, add_yaml_argument, positive_int, require_folder,
                                 runtime_options, tile_steps)
from predict.cli.runner import fail_to_start, logged_run, run_in_folder
from predict.core.pipelines import PIPELINES, get_pipeline
from predict.core.tiling import tile_sample
from predict.encoders.registry import load_encoder
from predict.errors import SettingsMismatchError
from predict.io.annotations import load_annotations
from predict.io.images import read_image
from predict.io.logs import setup_logger
from predict.io.results import MetricsStore
from predict.runtime import configure_process
from predict.testset import RunConfig, default_memory_limit, run_testset


def build_parser(pipeline: str = "v1") -> argparse.ArgumentParser:
    """The original's arguments and ours; ``pipeline`` is the default of ``--pipeline``."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_yaml_argument(parser, "RSITMD_AMFMN")
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
    add_runtime_arguments(parser)
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


def interrupted_line(cache_path: str) -> str:
    """What a Ctrl-C leaves: the samples saved in ``metrics.json`` and how to resume."""
    saved = len(MetricsStore(cache_path).samples)
    return (f"interrupted: {saved} sample(s) saved in {os.path.join(cache_path, 'metrics.json')}; "
            "rerun the same command to resume")


def main(argv=None, pipeline: str = "v1") -> int:
    args = build_parser(pipeline).parse_args(argv)
    configure_process(parallel=args.workers != 1)  # before the model loads
    return run_in_folder(args.cache_path, "--cache_path", lambda: generate(args))


def generate(args: argparse.Namespace) -> int:
    """The run of :func:`main`, its folder locked."""
    logger = setup_logger(args.cache_path)
    started = time.perf_counter()

    def start():  # everything a run needs, checked before any model loads
        config = run_config(args)
        require_folder(config.src_data_path, "image folder (--src_data_path)")
        samples = load_annotations(config.src_anno_path)
        images = list(dict.fromkeys(os.path.join(config.src_data_path, sample.jpg_name) for sample in samples))
        return config, samples, load_encoder(args.yaml_path, device=args.device, batch_size=args.batch_size,
                                             sample=tile_sample(images, read_image), **runtime_options(args))

    def work(loaded) -> int:
        config, samples, encoder = loaded
        try:
            run, failures = run_testset(config, encoder, logger, samples)
        except SettingsMismatchError as exc:
            return fail_to_start(str(exc), logger)
        mean = run.store.mean()
        print(f"Mean over {len(run.store.mean_over)} samples: "
              + "  ".join(f"{name} {value:.4f}" for name, value in mean.items())
              + f"  ({time.perf_counter() - started:.1f}s; tiles encoded {run.vectors.tiles_encoded}"
              + f" of {run.vectors.tiles_requested} requested)")
        if failures:
            print(f"{failures} sample(s) failed; see {os.path.join(args.cache_path, 'log.txt')}", file=sys.stderr)
        return 1 if failures else 0

    return logged_run(logger, start, work, interrupted=lambda: interrupted_line(args.cache_path),
                      stopped="the run stopped, the results saved before are kept")


def main_v2(argv=None) -> int:
    """:func:`main` with the v2 pipeline by default (``selo-generate-v2``, ``generate_selo_v2.py``)."""
    return main(argv, pipeline="v2")


if __name__ == "__main__":
    sys.exit(main())
