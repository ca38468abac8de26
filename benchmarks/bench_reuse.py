"""Encoder work saved by computing tile vectors once per image, on the real SLM annotation file.

    .venv/bin/python benchmarks/bench_reuse.py [--anno ../shared/slm/anno.json] [--step 256_512_768]

The 59 samples of the SLM testset share 22 images. The original cut and encoded every tile again for
every sample; we encode each image's tiles once. The images themselves are not available, so their
sizes are estimated: at least the extent of their polygons, at least the testset's usual 2300 x 3000
(rows x columns); 20.jpg is 10001 x 10000 (shared/slm/README.md).
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from predict.core import tiling

REPO = Path(__file__).resolve().parent.parent

USUAL_SIZE = (2300, 3000)
KNOWN_SIZES = {"20.jpg": (10001, 10000)}


def estimated_sizes(samples: list) -> dict:
    """``jpg_name -> (height, width)``: the known size, else the polygons' extent rounded up, at least
    ``USUAL_SIZE``."""
    extent = {}
    for sample in samples:
        h, w = extent.get(sample["jpg_name"], USUAL_SIZE)
        for polygon in sample["points"]:
            for x, y in polygon:
                h, w = max(h, math.ceil(y) + 1), max(w, math.ceil(x) + 1)
        extent[sample["jpg_name"]] = (h, w)
    return {name: KNOWN_SIZES.get(name, size) for name, size in extent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anno", default=str(REPO.parent / "shared" / "slm" / "anno.json"))
    parser.add_argument("--step", default="256_512_768")
    args = parser.parse_args()
    with open(args.anno, encoding="utf-8") as f:
        samples = json.load(f)
    steps = tiling.parse_steps(args.step)
    per_image = Counter(s["jpg_name"] for s in samples)
    sizes = estimated_sizes(samples)
    tiles = {name: len(tiling.multiscale_tiles(*sizes[name], steps)) for name in per_image}
    without_reuse = sum(tiles[name] * n for name, n in per_image.items())
    with_reuse = sum(tiles.values())
    print(f"{len(samples)} samples on {len(per_image)} images, steps {args.step}")
    print(f"tiles encoded, one pass per sample (original): {without_reuse}")
    print(f"tiles encoded, once per image (ours):          {with_reuse}")
    print(f"encoder work saved: {without_reuse - with_reuse} tiles ({1 - with_reuse / without_reuse:.1%}),"
          f" {without_reuse / with_reuse:.2f}x fewer")


if __name__ == "__main__":
    main()
