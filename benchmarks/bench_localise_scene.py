"""Wall time of each query of ``selo-localise`` on one large synthetic GeoTIFF: the first query reads the
image and encodes its tiles, the later ones reuse the tile vectors (v2: its first stage; the refinement
boxes of each query are counted apart).

    .venv/bin/python benchmarks/bench_localise_scene.py [--size 10000] [--queries 5] [--pipeline v1] [--device cpu]

The scene (``predict.demo.synthetic.generate_scene``) is written as an 8-bit RGB GeoTIFF in UTM 33N
(tiled, deflate) and localised with the demo encoder for captions of its objects; a second run with the
first query alone then finds the tile vectors on disk. Times are per query as ``summary.json``
records them (the first includes reading the image; each includes writing the outputs: the COG map with
its overviews, the overlay, the peaks), and as a ratio to the first query of the same run.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time

import numpy as np
import rasterio
from rasterio.transform import from_origin

from predict.core.pipelines import PIPELINES, get_pipeline
from predict.demo.synthetic import generate_scene, make_caption
from predict.encoders.registry import load_encoder
from predict.scenes.run import SceneConfig, localise_scenes


def write_scene(path: str, size: int, seed: int) -> list[str]:
    """Write the scene as a GeoTIFF; return one caption per object."""
    scene = generate_scene([seed, 0], size, size)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.5, 0.5), photometric="RGB",
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate") as dst:
        dst.write(np.moveaxis(scene.rgb, -1, 0))
    rng = np.random.default_rng(seed)
    return [make_caption(rng, o.kind, o.attributes) for o in scene.objects]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="scene side, pixels")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default="v1")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--device", default="cpu", help="the encoder's device: cpu, cuda ...")
    args = parser.parse_args()
    logging.getLogger("selo").addHandler(logging.NullHandler())
    encoder = load_encoder("demo", device=args.device)
    with tempfile.TemporaryDirectory() as folder:
        image = os.path.join(folder, "scene.tif")
        started = time.perf_counter()
        captions = write_scene(image, args.size, args.seed)
        print(f"scene {args.size} x {args.size} written in {time.perf_counter() - started:.1f}s "
              f"({os.path.getsize(image) / 2**20:.0f} MiB); pipeline {args.pipeline}, demo encoder on {args.device}, "
              f"{len(os.sched_getaffinity(0))} CPU cores")
        queries = (captions * args.queries)[:args.queries]
        config = SceneConfig(out_dir=os.path.join(folder, "out"), pipeline=get_pipeline(args.pipeline))
        first_run = localise_scenes([image], queries, encoder, config).results
        second_run = localise_scenes([image], queries[:1], encoder, config).results
        first = first_run[0]["seconds"]
        print(f"{'run':>4} {'query':>5} {'seconds':>8} {'x first':>8} {'tiles encoded':>14} {'boxes':>6} "
              f"{'scene score':>11}  text")
        for run, results in (("1", first_run), ("2", second_run)):
            for result in results:
                print(f"{run:>4} {result['k']:>5} {result['seconds']:8.2f} {result['seconds'] / first:8.2f} "
                      f"{result['tiles_encoded']:>14} {result['boxes_encoded']:>6} {result['scene_score'] or float('nan'):11.4f}  "
                      f"{result['query']}")
        later = [r["seconds"] for r in first_run[1:]]
        if later:
            print(f"later queries: mean {np.mean(later):.2f}s = {np.mean(later) / first:.2f} x the first "
                  f"({first / np.mean(later):.1f}x faster)")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    main()
