"""``selo-index`` on one huge scene, cut by one Ray task and then by several (a band of rows each:
``predict.archive.index.part_rows``): wall time, the peak memory of the cutting tasks and of the encoder
actor, and whether the two archives hold the same scene file.

    .venv/bin/python benchmarks/bench_index_parts.py [--size 20000] [--kind rgb8] [--work /tmp/bench_index_parts]
        [--keep]

The scene is ``bench_huge_scene.py``'s tiled GeoTIFF (``rgb8`` or ``nir16``). Both runs use a local Ray on
this machine (as ``selo-index`` starts it), the demo encoder on the CPU, v1, and the default memory budget
per cutting task; "one task" sets ``part_pixels`` above the scene's pixels, "parts" keeps the default
(:data:`~predict.archive.index.PART_PIXELS`, 2^27 px). Peak memory: the largest resident set of each kind of
Ray worker (``bench_archive.WorkerMemory``, sampled every 0.2 s). The scene and archives go under ``--work``,
removed at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: nodes on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np

from bench_archive import WorkerMemory
from bench_huge_scene import TILE, write_scene
from predict.archive import ArchiveSettings, index_archive, read_scene, scene_path
from predict.archive.index import scene_parts
from predict.cli.ray_session import ray_session
from predict.core.pipelines import get_pipeline
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder
from predict.provenance import vectors_key
from predict.resources import find_yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="the scene's side, pixels")
    parser.add_argument("--kind", default="rgb8", choices=("rgb8", "nir16"))
    parser.add_argument("--work", default="/tmp/bench_index_parts")
    parser.add_argument("--keep", action="store_true", help="keep the scene and the archives")
    args = parser.parse_args()
    logging.getLogger("selo").addHandler(logging.NullHandler())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    image = str(work / f"{args.kind}_{args.size}.tif")
    try:
        if not os.path.isfile(image):
            write_scene(Path(image), args.size, args.kind, generate_scene([13, 0], TILE, TILE).rgb)
        encoder = load_encoder("demo", device="cpu")
        spec = get_pipeline("v1")
        settings = ArchiveSettings(os.path.abspath(find_yaml("demo")), vectors_key(encoder), encoder.tile_size,
                                   spec.name, spec.steps)
        print(f"{args.kind} {args.size} x {args.size} px, v1, demo encoder, {len(os.sched_getaffinity(0))} CPU "
              f"cores; parts by default: {scene_parts(image)}")
        print(f"{'run':>9} {'tasks':>5} {'wall s':>7} {'tiles':>7} {'cut_scene MB':>12} {'encoder MB':>10}")
        archives = {}
        for label, part_pixels in (("one task", 2 * args.size ** 2), ("parts", None)):
            archive = str(work / label.replace(" ", "_"))
            shutil.rmtree(archive, ignore_errors=True)
            with ray_session(None), WorkerMemory() as memory:
                started = time.perf_counter()
                run = index_archive([image], archive, settings, encoder.batch_size,
                                    **({"part_pixels": part_pixels} if part_pixels else {}))
                wall = time.perf_counter() - started
            if run.errors:
                raise SystemExit(f"{label}: {run.errors}")
            peaks = memory.by_kind()
            scene = run.scenes[0]
            print(f"{label:>9} {scene.get('parts', 1):5d} {wall:7.1f} {scene['tiles']:7d} "
                  f"{peaks.get('cut_scene task', float('nan')):12.0f} {peaks.get('encoder actor', float('nan')):10.0f}",
                  flush=True)
            archives[label] = read_scene(scene_path(archive, image), settings.vectors_key)
        (header, tiles, vectors), (header_p, tiles_p, vectors_p) = archives["one task"], archives["parts"]
        print(f"same header and tiles: {header == header_p and tiles == tiles_p}; largest vector difference: "
              f"{float(np.abs(vectors - vectors_p).max()):.2e}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
