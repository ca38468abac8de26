"""``selo-localise`` on scenes of 10k, 20k and 40k pixels a side: wall time, Mpx/s and peak memory, 8-bit RGB
and 16-bit 4-band, within the default memory budget.

    .venv/bin/python benchmarks/bench_huge_scene.py [--sizes 10000,20000,40000] [--kinds rgb8,nir16]
        [--work /tmp/bench_huge] [--pipeline v1] [--memory_mb N] [--keep]

Each scene is a tiled GeoTIFF (512 x 512 blocks, deflate level 1, UTM 33N) written block row by block row
(a 2000 x 2000 synthetic scene, ``predict.demo.synthetic.generate_scene``, repeated with mirror flips, so that
no scene is ever held whole): ``rgb8`` as it is, ``nir16`` as a 12-bit sensor's uint16 (16 x the 8-bit
values plus noise) with a fourth, near-infrared band, read as bands 1, 2, 3 and stretched between the 2 and
98 % percentiles (counted exactly up to ``EXACT_PERCENTILE_PIXELS``, estimated from a grid of the file's
blocks beyond). Each run is ``selo-localise`` (demo encoder, CPU, ``--regions 0.95 --mask 0.95``) in a
subprocess of its own; printed per scene: wall time, Mpx/s, peak resident memory (the child's own ``ru_maxrss``:
:mod:`measured`), how the log says the scene was split, and ``rio cogeo validate --strict``'s verdict on its
probmap. Scenes and outputs go under ``--work`` and are removed at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from measured import run_measured
from predict.demo.synthetic import generate_scene, make_caption

TILE = 2000  # side of the synthetic scene a mosaic repeats
BLOCK = 512


def mosaic_rows(tile: np.ndarray, top: int, rows: int, width: int) -> np.ndarray:
    """Rows ``top:top + rows`` of the mosaic of ``tile`` (h, w, C) repeated with mirror flips, ``(rows, width, C)``:
    tile ``(i, j)`` is flipped up-down when ``i`` is odd and left-right when ``j`` is odd, so edges meet."""
    side = tile.shape[0]
    flipped = [[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]]
    out = np.empty((rows, width, tile.shape[2]), tile.dtype)
    for r in range(top, top + rows):
        i, y = divmod(r, side)
        row = np.concatenate([flipped[i % 2][j % 2][y] for j in range(-(-width // side))])[:width]
        out[r - top] = row
    return out


def write_scene(path: Path, size: int, kind: str, tile: np.ndarray) -> None:
    """The mosaic as a tiled GeoTIFF, a row of blocks at a time."""
    rng = np.random.default_rng(0)
    count, dtype = (3, "uint8") if kind == "rgb8" else (4, "uint16")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=count, dtype=dtype,
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.5, 0.5), tiled=True,
                       blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", zlevel=1, num_threads="all_cpus",
                       bigtiff="yes", **({"photometric": "RGB"} if kind == "rgb8" else {})) as dst:
        for top in range(0, size, BLOCK):
            rows = mosaic_rows(tile, top, min(BLOCK, size - top), size)
            if kind == "nir16":
                deep = rows.astype(np.uint16) * 16 + rng.integers(0, 16, rows.shape, dtype=np.uint16)
                nir = (deep[:, :, 1:2] // 2 + deep[:, :, 0:1] // 4)
                rows = np.concatenate([deep, nir], axis=2)
            dst.write(np.moveaxis(rows, -1, 0), window=((top, top + len(rows)), (0, size)))


def localise(image: Path, out: Path, query: str, pipeline: str, memory_mb: int | None) -> tuple[float, float, str]:
    """Run selo-localise in a subprocess; wall seconds, peak resident MB, its log."""
    command = [sys.executable, "-m", "predict.cli.localise", "--yaml_path", "demo", "--device", "cpu",
               "--image", str(image), "--query", query, "--out", str(out), "--pipeline", pipeline,
               "--regions", "0.95", "--mask", "0.95"] + (["--memory_mb", str(memory_mb)] if memory_mb else [])
    run = run_measured(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stdout[-2000:]}")
    return run.wall, run.peak_mb, (out / "log.txt").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000,40000")
    parser.add_argument("--kinds", default="rgb8,nir16")
    parser.add_argument("--work", default="/tmp/bench_huge")
    parser.add_argument("--pipeline", default="v1")
    parser.add_argument("--memory_mb", type=int, default=None, help="selo-localise's budget (its default when omitted)")
    parser.add_argument("--keep", action="store_true", help="keep the scenes and outputs")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = generate_scene([13, 0], TILE, TILE)
    query = make_caption(np.random.default_rng(13), scene.objects[0].kind, scene.objects[0].attributes)
    print(f"{len(os.sched_getaffinity(0))} CPU cores, pipeline {args.pipeline}, demo encoder on the CPU, "
          f"memory budget {args.memory_mb or 'default'}; query {query!r}")
    print(f"{'scene':>14} {'file GB':>8} {'write s':>8} {'wall s':>8} {'Mpx/s':>7} {'peak MB':>8}  cogeo  split")
    try:
        for size in map(int, args.sizes.split(",")):
            for kind in args.kinds.split(","):
                image = work / f"{kind}_{size}.tif"
                started = time.perf_counter()
                write_scene(image, size, kind, scene.rgb)
                written = time.perf_counter() - started
                out = work / f"out_{kind}_{size}"
                wall, peak, log = localise(image, out, query, args.pipeline, args.memory_mb)
                valid, errors, _ = cog_validate(str(out / f"{image.stem}_q0_probmap.tif"), strict=True)
                split = re.search(r"px (read .*?), maps in stripes of (\d+) rows", log)
                print(f"{kind + ' ' + str(size):>14} {image.stat().st_size / 1e9:8.2f} {written:8.1f} {wall:8.1f} "
                      f"{size * size / 1e6 / wall:7.1f} {peak:8.0f}  {'valid' if valid else errors!s:5}  "
                      f"{split.group(1)}; maps {split.group(2)} rows", flush=True)
                if not args.keep:
                    image.unlink()
                    shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
