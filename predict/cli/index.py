"""Index scenes into an archive on Ray: every scene's tile vectors computed once, for ``selo-search``.

    selo-index --yaml_path demo --images scenes/ more/*.tif --archive archive/

(or ``python -m predict.cli.index ...``). PATH: image files, folders (the images directly in them) or globs.
Decoding and tile cutting run in Ray CPU tasks, encoding in a pool of Ray actors (one per GPU when the
cluster has GPUs); each scene is written whole as ``<archive>/scenes/<stem>-<id>.parquet``. A rerun keeps the scenes
indexed with the same key and re-indexes changed ones; ``<archive>/index.json`` lists the run's scenes and
errors; a scene file that is damaged, truncated, copied over another or made with another encoder is
indexed again, with one line naming it. ``--address`` joins a running Ray cluster (one line when nothing
answers there); by default a local Ray of its own starts and stops with the command. Exit code 1 when a
scene failed, 2 when the run cannot start, 130 on Ctrl-C (the scenes written are whole: rerun to resume).
"""
from __future__ import annotations

import os
import sys

from predict.archive import INDEX_NAME, ArchiveSettings, check_archive_settings, expand_images, index_archive
from predict.cli.options import (OneLineParser, add_address_argument, add_band_arguments, add_progress_argument,
                                 add_runtime_arguments, add_yaml_argument, positive_int, runtime_options, tile_steps)
from predict.cli.ray_session import check_address, ray_session
from predict.cli.runner import logged_run, run_in_folder
from predict.core.pipelines import PIPELINES, get_pipeline
from predict.core.tiling import tile_sample
from predict.encoders.registry import load_encoder
from predict.io.logs import setup_logger
from predict.io.scene_blocks import middle_rows
from predict.provenance import canonical_json, vectors_key
from predict.resources import find_yaml


def build_parser() -> OneLineParser:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_yaml_argument(parser)
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="image files, folders (the images directly in them) or globs")
    parser.add_argument("--archive", required=True, metavar="DIR", help="the archive folder")
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default="v1",
                        help="whose first-stage tiles are indexed (v2's refinement boxes are encoded by the search)")
    parser.add_argument("--step", type=tile_steps, default=None, help="tile steps joined by '_' (default: the pipeline's)")
    add_band_arguments(parser)
    parser.add_argument("--batch_size", type=positive_int, default=None, help="tiles per encoder call (yaml's by default)")
    parser.add_argument("--memory_mb", type=positive_int, default=None,
                        help="memory (MB) a task cutting a scene's tiles stays within, whatever the scene's size: it "
                             "is read in stripes (default: 700 MB, a task holds one CPU); never changes the archive")
    add_runtime_arguments(parser)
    add_address_argument(parser)
    add_progress_argument(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    archive = os.path.abspath(args.archive)
    return run_in_folder(archive, "--archive", lambda: index(args, archive), progress=args.progress)


def index(args, archive: str) -> int:
    """The run of :func:`main`, its archive locked."""
    logger = setup_logger(archive)

    def start():  # everything the run needs, checked before Ray starts
        spec = get_pipeline(args.pipeline, args.step)
        yaml_path = os.path.abspath(find_yaml(args.yaml_path))  # a preset's name: its packaged file
        sample = tile_sample(expand_images(args.images)[0],
                             lambda path: middle_rows(path, bands=args.bands, stretch=args.stretch))
        encoder = load_encoder(yaml_path, device="cpu", batch_size=args.batch_size, sample=sample,
                               **runtime_options(args))
        settings = ArchiveSettings(yaml_path=yaml_path, vectors_key=vectors_key(encoder), tile_size=encoder.tile_size,
                                   pipeline=spec.name, steps=spec.steps, bands=args.bands, stretch=args.stretch,
                                   runtime_choice=canonical_json(encoder.runtime_choice))
        check_archive_settings(archive, settings)
        check_address(args.address)
        return settings, encoder.batch_size

    def work(started) -> int:
        settings, batch_size = started
        with ray_session(args.address):
            run = index_archive(args.images, archive, settings, batch_size, logger, args.memory_mb)
        encoded = sum(scene["tiles_encoded"] for scene in run.scenes)
        print(f"{len(run.scenes)} scene(s) in {archive} ({encoded} tiles encoded)")
        if run.errors:
            print(f"{len(run.errors)} failure(s); see {os.path.join(archive, INDEX_NAME)}", file=sys.stderr)
        return 1 if run.errors else 0

    return logged_run(logger, start, work, stopped="the run stopped, the scenes written before are kept",
                      interrupted=lambda: "interrupted: every scene written so far is whole; rerun the same command "
                                          "to resume")


if __name__ == "__main__":
    sys.exit(main())
