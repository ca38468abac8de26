"""Effect on the indicators of keeping tiles in memory instead of the original's JPEG round trip.

    .venv/bin/python benchmarks/bench_jpeg_roundtrip.py [--yaml predict/options/demo/demo_encoder.yaml]
        [--data test_data/demo/imgs --anno test_data/demo/annotations/anno.json] [--pipeline v1]

The original wrote every resized tile to disk as a JPEG (OpenCV, quality 95) and the encoder read it
back with PIL. This script runs predict/generate_selo.py twice on the same testset and encoder: once as
we do (tiles in memory) and once with every tile JPEG-encoded and decoded with PIL before the encoder,
and prints the per-sample and mean differences of Rsu, Ras, Rda, Rmi and of the probability maps.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from evaluations.metrics import INDICATORS
from predict import generate_selo
from predict.model_encoder import EncoderSpecModel, load_encoder

REPO = Path(__file__).resolve().parent.parent


def jpeg_round_trip(tiles: np.ndarray) -> np.ndarray:
    """uint8 RGB tiles ``(N, S, S, 3)`` through OpenCV's JPEG (quality 95) and PIL's decoder, as the original."""
    out = np.empty_like(tiles)
    for k, tile in enumerate(tiles):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
        out[k] = np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    return out


class JpegRoundTripEncoder(EncoderSpecModel):
    """Wraps the encoder of the yaml ``inner_yaml``, passing every tile through a JPEG round trip first."""

    def __init__(self, options, device=None):
        super().__init__(options, device)
        self.inner = load_encoder(options["inner_yaml"], device=device)
        self.name = f"{self.inner.name}+jpeg"
        self.tile_size, self.batch_size = self.inner.tile_size, self.inner.batch_size

    def image_encoder(self, tiles):
        return self.inner.image_encoder(jpeg_round_trip(np.asarray(tiles)))

    def text_encoder(self, text):
        return self.inner.text_encoder(text)

    def cosine_sim(self, image_vectors, text_vector):
        return self.inner.cosine_sim(image_vectors, text_vector)


def run(yaml_path: str, args, cache: str) -> dict:
    code = generate_selo.main(["--yaml_path", yaml_path, "--cache_path", cache, "--src_data_path", args.data,
                               "--src_anno_path", args.anno, "--pipeline", args.pipeline, "--step", args.step,
                               "--no_report", "--no_vector_cache"])
    if code == 2:
        raise SystemExit(f"generate_selo could not start with {yaml_path}")
    with open(os.path.join(cache, "metrics.json")) as f:
        return {s["idx"]: s for s in json.load(f)["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", default=str(REPO / "predict/options/demo/demo_encoder.yaml"))
    parser.add_argument("--data", default=str(REPO / "test_data/demo/imgs"))
    parser.add_argument("--anno", default=str(REPO / "test_data/demo/annotations/anno.json"))
    parser.add_argument("--pipeline", default="v1", choices=("v1", "v2"))
    parser.add_argument("--step", default="256_512_768")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        wrapper = os.path.join(work, "jpeg.yaml")
        with open(wrapper, "w") as f:
            yaml.safe_dump({"model": {"name": "bench_jpeg_roundtrip:JpegRoundTripEncoder"},
                            "inner_yaml": os.path.abspath(args.yaml)}, f)
        ours = run(args.yaml, args, os.path.join(work, "memory"))
        original = run(wrapper, args, os.path.join(work, "jpeg"))
        common = sorted(set(ours) & set(original))
        print(f"{len(common)} samples, encoder {args.yaml}, pipeline {args.pipeline}")
        print(f"{'idx':>4} " + " ".join(f"{'d' + k:>8}" for k in INDICATORS) + f" {'map MAD':>8}")
        diffs = []
        for idx in common:
            row = [ours[idx][k] - original[idx][k] for k in INDICATORS]
            maps = [cv2.imread(os.path.join(work, d, f"probmap_{idx}.jpg"), cv2.IMREAD_GRAYSCALE)
                    for d in ("memory", "jpeg")]
            mad = float(np.abs(maps[0].astype(np.int16) - maps[1]).mean())
            diffs.append(row + [mad])
            print(f"{idx:>4} " + " ".join(f"{v:8.4f}" for v in row) + f" {mad:8.3f}")
        diffs = np.abs(np.array(diffs))
        print("mean |difference|: " + ", ".join(f"{k} {v:.4f}" for k, v in zip(INDICATORS, diffs.mean(axis=0)))
              + f", map {diffs[:, 4].mean():.3f} gray levels")
        print("mean indicators, in memory: " + ", ".join(
            f"{k} {np.mean([ours[i][k] for i in common]):.4f}" for k in INDICATORS))
        print("mean indicators, JPEG trip: " + ", ".join(
            f"{k} {np.mean([original[i][k] for i in common]):.4f}" for k in INDICATORS))


if __name__ == "__main__":
    main()
