"""Map generation without the model: our pipeline against the original's way, measured in the same run.

    .venv/bin/python benchmarks/bench_pipeline.py [--sizes 3000x2300,5000x5000,10000x10001] [--baseline 7c7cea4]

For each image size a synthetic aerial-like JPEG and one annotation are written to a temp folder and
processed with a cheap encoder (mean colour of a tile), so that the framework dominates:

- ``original``: the original v1 as written: every tile resized and written to disk as JPEG, files
  listed and read back with PIL one per encoder call, heat and count maps in float64 at full
  resolution, the per-pixel Python division loop, min-max, uint8, median 251, colour map, overlay,
  three ``cv2.imwrite``.
- ``ours``: ``predict/generate_selo.py`` on the same input (in-memory tiles, batched encoder calls,
  per-cell accumulation), evaluation included in its wall time but reported apart.
- ``floor``: decoding the image, the 251 median on a map of its size and encoding the three JPEGs.
- with ``--baseline COMMIT``: ``predict/generate_selo.py`` of that commit (its files extracted with
  ``git archive``) on the same input; its generation (the log's Time-Cut + Sim + Gnt + Flt) is compared
  with ours.

Each measurement runs in its own subprocess, so peak memory (ru_maxrss) is that of the measured work.
Time excludes the encoder's forward passes (measured inside the encoder and subtracted).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from bench_whole_run import baseline_tree

from predict.model_encoder import EncoderSpecModel

REPO = Path(__file__).resolve().parent.parent

STEPS = (256, 512, 768)


class MeanColourEncoder(EncoderSpecModel):
    """Cheap stand-in encoder: a tile's vector is its mean RGB; the time of its calls is accumulated."""

    name = "mean_colour"
    forward_seconds = 0.0

    def image_encoder(self, tiles):
        start = time.perf_counter()
        vectors = np.asarray(tiles, dtype=np.float32).reshape(len(tiles), -1, 3).mean(axis=1)
        MeanColourEncoder.forward_seconds += time.perf_counter() - start
        return vectors

    def text_encoder(self, text):
        return np.array([1.0, 0.2, 0.2], dtype=np.float32)


def make_scene(height: int, width: int, path: str) -> list:
    """A smooth textured JPEG with a reddish field; returns its polygon."""
    rng = np.random.default_rng(height * 7 + width)
    small = rng.integers(60, 200, size=(max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    image = cv2.add(image, rng.integers(0, 20, size=(height, width, 3), dtype=np.uint8))
    r0, c0, side = height // 3, width // 3, min(height, width) // 5
    image[r0:r0 + side, c0:c0 + side] = (40, 40, 200)
    cv2.imwrite(path, image)
    return [[c0, r0], [c0 + side, r0], [c0 + side, r0 + side], [c0, r0 + side]]


def run_original(image_path: str, work: str) -> dict:
    """The original v1 generation (split to JPEG files, per-file encoding, per-pixel division)."""
    from PIL import Image

    from predict.core import tiling

    encoder = MeanColourEncoder()
    text_vector = encoder.text_encoder("a red field")
    timings = {}
    start = time.perf_counter()
    image = cv2.imread(image_path)
    height, width = image.shape[:2]
    tile_dir = os.path.join(work, "subimages")
    os.makedirs(tile_dir, exist_ok=True)
    for step in STEPS:
        for offset in (0, step - int(0.5 * step)):
            for r0, r1, c0, c1 in tiling.grid_tiles(height, width, step, offset):
                tile = cv2.resize(image[r0:r1, c0:c1], (256, 256), interpolation=cv2.INTER_CUBIC)
                cv2.imwrite(os.path.join(tile_dir, f"{r0}_{r1}_{c0}_{c1}.jpg"), tile)
    timings["cut"] = time.perf_counter() - start

    start = time.perf_counter()
    scores = {}
    for name in os.listdir(tile_dir):
        tile = np.asarray(Image.open(os.path.join(tile_dir, name)).convert("RGB"))
        scores[name] = float(encoder.cosine_sim(encoder.image_encoder(tile[None]), text_vector)[0])
    timings["sim"] = time.perf_counter() - start

    start = time.perf_counter()
    heat = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for name, score in scores.items():
        r0, r1, c0, c1 = (int(v) for v in name[:-4].split("_"))
        heat[r0:r1, c0:c1] += score
        count[r0:r1, c0:c1] += 1
    for i in range(height):  # the original's per-pixel division
        for j in range(width):
            heat[i][j] = heat[i][j] / count[i][j]
    timings["gnt"] = time.perf_counter() - start

    start = time.perf_counter()
    heat = heat - np.min(heat)
    heat = heat / np.max(heat)
    probmap = cv2.medianBlur(np.uint8(255 * heat), 251)
    del heat, count
    heatmap = cv2.applyColorMap(probmap, cv2.COLORMAP_JET)
    addmap = cv2.addWeighted(image, 0.7, heatmap, 0.3, 0)
    for kind, array in (("probmap", probmap), ("heatmap", heatmap), ("addmap", addmap)):
        cv2.imwrite(os.path.join(work, f"{kind}_0.jpg"), array)
    timings["flt"] = time.perf_counter() - start
    timings["encoder"] = MeanColourEncoder.forward_seconds
    timings["n_tiles"] = len(scores)
    return timings


def run_ours(image_path: str, polygon: list, work: str) -> dict:
    """predict/generate_selo.py on one sample with the cheap encoder (timings from metrics.json)."""
    import yaml

    from predict import generate_selo

    anno = os.path.join(work, "anno.json")
    with open(anno, "w") as f:
        json.dump([{"caption": "a red field", "jpg_name": os.path.basename(image_path), "points": [polygon]}], f)
    options = os.path.join(work, "bench.yaml")
    with open(options, "w") as f:
        yaml.safe_dump({"model": {"name": "bench_pipeline:MeanColourEncoder", "batch_size": 64}}, f)
    cache = os.path.join(work, "cache")
    start = time.perf_counter()
    code = generate_selo.main(["--yaml_path", options, "--cache_path", cache, "--src_data_path",
                               os.path.dirname(image_path), "--src_anno_path", anno, "--device", "cpu",
                               "--no_vector_cache"])
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"generate_selo failed with code {code}")
    with open(os.path.join(cache, "metrics.json")) as f:
        result = json.load(f)
    timings = {k: result["timings"][k] for k in ("cut", "sim", "gnt", "flt")}
    # the yaml loads the class from the module `bench_pipeline`, not from this `__main__`
    timings["encoder"] = sys.modules["bench_pipeline"].MeanColourEncoder.forward_seconds
    timings["n_tiles"] = result["samples"][0]["n_tiles"]
    timings["wall_incl_eval"] = wall
    return timings


def run_floor(image_path: str, work: str) -> dict:
    """Decode the image, one 251 median on a map of its size, encode the three JPEG outputs."""
    start = time.perf_counter()
    image = cv2.imread(image_path)
    height, width = image.shape[:2]
    ramp = (np.arange(width, dtype=np.uint32)[None, :] * 255 // width).astype(np.uint8)
    probmap = cv2.medianBlur(np.repeat(ramp, height, axis=0), 251)
    heatmap = cv2.applyColorMap(probmap, cv2.COLORMAP_JET)
    cv2.imencode(".jpg", probmap)
    cv2.imencode(".jpg", heatmap)
    cv2.imencode(".jpg", cv2.addWeighted(image, 0.7, heatmap, 0.3, 0))
    return {"total": time.perf_counter() - start}


def measure_one(kind: str, image_path: str, polygon: list) -> None:
    """Child process: run one measurement and print it as JSON with the peak RSS."""
    with tempfile.TemporaryDirectory() as work:
        if kind == "original":
            result = run_original(image_path, work)
        elif kind == "ours":
            result = run_ours(image_path, polygon, work)
        else:
            result = run_floor(image_path, work)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def child(kind: str, image_path: str, polygon: list, tree: Path = REPO) -> dict:
    # PYTHONPATH comes before the editable install: a baseline's files are what the child imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(tree)])}
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--image", image_path,
                          "--polygon", json.dumps(polygon)], env=env, capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def generation_seconds(t: dict) -> float:
    """The log's Time-Cut + Sim + Gnt + Flt."""
    return t["cut"] + t["sim"] + t["gnt"] + t["flt"]


def framework_seconds(t: dict) -> float:
    """Everything but the encoder's forward passes."""
    return t["cut"] + t["sim"] + t["gnt"] + t["flt"] - t["encoder"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3000x2300,5000x5000,10000x10001", help="HxW list")
    parser.add_argument("--child", choices=("original", "ours", "floor"))
    parser.add_argument("--image")
    parser.add_argument("--polygon")
    parser.add_argument("--baseline", help="also run generate_selo.py of this commit and compare generation times")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --baseline: run it and ours this many times, alternately, and keep each one's "
                             "fastest generation (a shared machine's load varies)")
    args = parser.parse_args()
    if args.child:
        measure_one(args.child, args.image, json.loads(args.polygon))
        return
    print(f"{'image':>12} {'original s':>11} {'ours s':>8} {'speed-up':>9} {'floor s':>8} "
          f"{'ours/floor':>10} {'orig MB':>8} {'ours MB':>8} {'tiles':>6}")
    with tempfile.TemporaryDirectory() as data:
        tree = baseline_tree(Path(data), args.baseline) if args.baseline else None
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.split("x"))
            image_path = os.path.join(data, f"scene_{height}x{width}.jpg")
            polygon = make_scene(height, width, image_path)
            original = child("original", image_path, polygon)
            ours = child("ours", image_path, polygon)
            floor = child("floor", image_path, polygon)
            t_orig, t_ours = framework_seconds(original), framework_seconds(ours)
            print(f"{size:>12} {t_orig:11.2f} {t_ours:8.2f} {t_orig / t_ours:8.1f}x {floor['total']:8.2f} "
                  f"{t_ours / floor['total']:9.2f}x {original['peak_rss_mb']:8.0f} {ours['peak_rss_mb']:8.0f} "
                  f"{ours['n_tiles']:6d}", flush=True)
            print(f"{'':>12} stages ours: " + ", ".join(f"{k} {ours[k]:.2f}s" for k in ("cut", "sim", "gnt", "flt"))
                  + f" (encoder {ours['encoder']:.2f}s, wall incl. evaluation {ours['wall_incl_eval']:.2f}s);"
                  + " original: " + ", ".join(f"{k} {original[k]:.2f}s" for k in ("cut", "sim", "gnt", "flt")),
                  flush=True)
            if tree:
                runs = {"base": [], "ours": [ours]}
                for attempt in range(args.repeat):
                    runs["base"].append(child("ours", image_path, polygon, tree))
                    if attempt:
                        runs["ours"].append(child("ours", image_path, polygon))
                base, ours = (min(runs[k], key=generation_seconds) for k in ("base", "ours"))
                print(f"{'':>12} generation (cut+sim+gnt+flt), fastest of {args.repeat}: {args.baseline} "
                      f"{generation_seconds(base):.2f}s ({base['peak_rss_mb']:.0f} MB; "
                      + ", ".join(f"{k} {base[k]:.2f}s" for k in ("cut", "sim", "gnt", "flt"))
                      + f"), ours {generation_seconds(ours):.2f}s ({ours['peak_rss_mb']:.0f} MB; "
                      + ", ".join(f"{k} {ours[k]:.2f}s" for k in ("cut", "sim", "gnt", "flt"))
                      + f"): {generation_seconds(base) / generation_seconds(ours):.2f}x", flush=True)


if __name__ == "__main__":
    main()
