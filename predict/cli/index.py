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

from predict.cli.localise import parse_bands, parse_stretch
from predict.cli.ray_session import check_address, interrupts_end_the_run, ray_session
from predict.core.pipelines import PIPELINES, get_pipeline
from predict.encoders.registry import load_encoder
from predict.io.checks import (EXIT_INTERRUPTED, OneLineParser, fail_to_start, first_line, positive_int,
                               prepare_output_folder, tile_steps)
from predict.io.lock import FolderBusyError, folder_lock
from predict.io.logs import setup_logger
from predict.io.raster import DEFAULT_STRETCH
from predict.provenance import vectors_key
from predict.resources import find_yaml, yaml_help
from predict.run.archive import INDEX_NAME, ArchiveSettings, add_address_argument, check_settings, index_archive


def build_parser() -> OneLineParser:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml_path", required=True, help=yaml_help())
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="image files, folders (the images directly in them) or globs")
    parser.add_argument("--archive", required=True, metavar="DIR", help="the archive folder")
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default="v1",
                        help="whose first-stage tiles are indexed (v2's refinement boxes are encoded by the search)")
    parser.add_argument("--step", type=tile_steps, default=None, help="tile steps joined by '_' (default: the pipeline's)")
    parser.add_argument("--bands", type=parse_bands, default=None,
                        help="1-based bands, one (gray) or three (R,G,B), e.g. 4,3,2 (default: the file's RGB)")
    parser.add_argument("--stretch", type=parse_stretch, default=DEFAULT_STRETCH,
                        help="percentiles LOW,HIGH of the stretch of 12/16-bit and float data (default 2,98), or none")
    parser.add_argument("--batch_size", type=positive_int, default=None, help="tiles per encoder call (yaml's by default)")
    add_address_argument(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    archive = os.path.abspath(args.archive)
    try:
        prepare_output_folder(archive)
        with folder_lock(archive, option="--archive"), interrupts_end_the_run():  # one run writes its scenes
            return index(args, archive)
    except (OSError, FolderBusyError) as exc:
        return fail_to_start(first_line(exc))


def index(args, archive: str) -> int:
    """The run of :func:`main`, its archive locked."""
    logger = setup_logger(archive)
    try:
        try:  # everything the run needs, checked before Ray starts
            spec = get_pipeline(args.pipeline, args.step)
            yaml_path = os.path.abspath(find_yaml(args.yaml_path))  # a preset's name: its packaged file
            encoder = load_encoder(yaml_path, device="cpu", batch_size=args.batch_size)
            settings = ArchiveSettings(yaml_path=yaml_path, vectors_key=vectors_key(encoder), tile_size=encoder.tile_size,
                                       pipeline=spec.name, steps=spec.steps, bands=args.bands, stretch=args.stretch)
            check_settings(archive, settings)
            check_address(args.address)
        except Exception as exc:
            return fail_to_start(first_line(exc), logger)
        with ray_session(args.address):
            run = index_archive(args.images, archive, settings, encoder.batch_size, logger)
    except KeyboardInterrupt:
        logger.error("interrupted: every scene written so far is whole; rerun the same command to resume")
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full, read-only folder, no permission
        return fail_to_start(f"{first_line(exc)}; the run stopped, the scenes written before are kept", logger)
    encoded = sum(scene["tiles_encoded"] for scene in run.scenes)
    print(f"{len(run.scenes)} scene(s) in {archive} ({encoded} tiles encoded)")
    if run.errors:
        print(f"{len(run.errors)} failure(s); see {os.path.join(archive, INDEX_NAME)}", file=sys.stderr)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
