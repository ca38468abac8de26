"""Write a synthetic SLM-style testset: ``DIR/imgs/<i>.jpg`` and ``DIR/annotations/anno.json``.

The annotation file has the real testset's schema: a list of ``{"caption", "jpg_name", "points"}``,
``points`` being a list of polygons of ``[x, y]`` pixel vertices (x = column, y = row). Scene ``i`` is
generated from the seed sequence ``[seed, i]``; the demo encoder trains on scenes from
``[TRAIN_SEED, i]`` (see ``train_demo_encoder.py``), so any ``--seed`` other than that is held out.

    python predict/demo/make_testset.py --out test_data/demo                 # 8 scenes, the demo default
    python predict/demo/make_testset.py --out test_data/slm_like --like-slm  # 22 images, 59 samples
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from predict.demo.synthetic import JPEG_QUALITY, TRAIN_SEED, generate_scene, scene_samples

DEMO_DIR = "test_data/demo"


def demo_layout(rng: np.random.Generator, scenes: int) -> list[tuple[int, int, int]]:
    """``(height, width, captions)`` per scene for the demo: 2000-3000 px sides, 3 captions each."""
    return [(int(rng.integers(2000, 3001)), int(rng.integers(2000, 3001)), 3) for _ in range(scenes)]


def slm_layout(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """The real testset's shape: 22 images, 59 samples; 20 of about 2300 x 3000, one 10001 x 10000 and
    one about 7000 x 8000 (rows x columns), the two large ones with 5 captions each."""
    layout = [(int(rng.integers(2200, 2401)), int(rng.integers(2900, 3101)), 3 if i < 9 else 2) for i in range(20)]
    layout.insert(7, (10001, 10000, 5))
    layout.insert(15, (int(rng.integers(6900, 7101)), int(rng.integers(7900, 8101)), 5))
    return layout


def write_testset(out_dir: str, seed: int, layout: list[tuple[int, int, int]]) -> list[dict]:
    """Generate one scene per ``layout`` entry, write the JPEGs and ``anno.json``; returns the annotations."""
    img_dir = Path(out_dir) / "imgs"
    anno_dir = Path(out_dir) / "annotations"
    img_dir.mkdir(parents=True, exist_ok=True)
    anno_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for i, (height, width, captions) in enumerate(tqdm(layout, desc="scenes", unit="scene")):
        scene = generate_scene([seed, i], height, width)
        name = f"{i}.jpg"
        if not cv2.imwrite(str(img_dir / name), cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"{img_dir / name}: cannot write image")
        rng = np.random.default_rng([seed, i, 1])  # captions: own stream, independent of the drawing
        for sample in scene_samples(rng, scene, captions):
            points = [[[round(float(x), 2), round(float(y), 2)] for x, y in poly] for poly in sample.polygons]
            annotations.append({"caption": sample.caption, "jpg_name": name, "points": points})
    with open(anno_dir / "anno.json", "w", encoding="utf-8") as f:  # one sample per line
        f.write("[\n" + ",\n".join(json.dumps(a) for a in annotations) + "\n]\n")
    return annotations


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEMO_DIR, help="output folder (imgs/ and annotations/ inside)")
    parser.add_argument("--seed", type=int, default=0, help="testset seed (scene i uses [seed, i])")
    parser.add_argument("--scenes", type=int, default=8, help="number of scenes (ignored with --like-slm)")
    parser.add_argument("--like-slm", action="store_true",
                        help="22 images with the real SLM size distribution and 59 samples")
    args = parser.parse_args(argv)
    if args.seed == TRAIN_SEED:
        parser.error(f"--seed {TRAIN_SEED} is the demo encoder's training seed; pick another for a testset")
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    rng = np.random.default_rng([args.seed, 10**6])  # sizes: own stream
    layout = slm_layout(rng) if args.like_slm else demo_layout(rng, args.scenes)
    annotations = write_testset(args.out, args.seed, layout)
    print(f"wrote {len(layout)} images and {len(annotations)} samples to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
