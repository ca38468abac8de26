"""Speed and peak memory of the SeLo evaluator on one 10000 x 10001 probability map (the testset's largest).

    python benchmarks/bench_evaluator.py [--height 10000 --width 10001] [--repeat 1]

Baseline: the original evaluator's algorithm as written (float64 P = gray / 255 and a float64 mask, two
attention-centre searches with scipy's maximum_filter and skimage's label/regionprops). Ours:
``read_probmap`` + ``evaluate_gray``. Each runs in its own subprocess, timed from reading the JPEG to the
four numbers (best of ``--repeat``), with the process's peak resident memory (VmHWM of the child itself:
RUSAGE_CHILDREN would count the parent's memory forked before exec). Prints a table, the
time ratio and whether the numbers are identical (|difference| <= 1e-9, same centres).
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
from functools import reduce

import cv2
import numpy as np


def synthetic_probmap(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, list]:
    """A smooth uint8 map with a few blobs on a low-frequency background, like a v1 map, and two polygons
    around two of the blobs (as anno.json has them)."""
    rng = np.random.default_rng(seed)
    small_h, small_w = height // 25, width // 25
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    field = cv2.resize(rng.random((8, 8)).astype(np.float32), (small_w, small_h), interpolation=cv2.INTER_CUBIC) * 0.35
    blobs = [(0.3, 0.25, 0.9), (0.7, 0.6, 1.0), (0.55, 0.2, 0.6), (0.2, 0.8, 0.7), (0.85, 0.85, 0.45)]
    for fx, fy, peak in blobs:
        sigma = 0.04 * small_w
        field += peak * np.exp(-((xx - fx * small_w) ** 2 + (yy - fy * small_h) ** 2) / (2 * sigma ** 2))
    field = cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)
    gray = np.clip(field / field.max() * 255, 0, 255).astype(np.uint8)
    polygons = []
    for fx, fy, _ in blobs[:2]:
        cx, cy, half = fx * width, fy * height, 0.06 * width
        polygons.append([[cx - half, cy - half * 0.8], [cx + half, cy - half], [cx + half * 0.9, cy + half],
                         [cx - half * 1.1, cy + half * 0.7]])
    return gray, polygons


# ---- baseline: the original evaluator's algorithm, step by step as it was written ----------------------
def original_centres(prob: np.ndarray) -> list:
    from scipy.ndimage import maximum_filter
    from skimage import measure

    gray_img = np.asarray(prob * 255.0, dtype=np.uint8)
    # The original labels the > 150 areas here and never uses them; kept, as the baseline follows it as written.
    continuous_area = np.asarray(gray_img > 150, np.uint8) * 255
    continuous_area = np.uint8(measure.label(continuous_area, connectivity=2))  # noqa: F841
    for _ in range(5):
        gray_img = cv2.boxFilter(gray_img, ddepth=-1, ksize=(50, 50))
    mx = maximum_filter(gray_img, size=1000)
    gray_img = np.where(mx == gray_img, gray_img, 0)
    gray_img = np.asarray(gray_img > 0, np.uint8) * 255
    labels = measure.label(gray_img, connectivity=2)
    centers = [[int(i) for i in region.centroid] for region in measure.regionprops(labels)]
    centers = [[c[1], c[0]] for c in centers]
    v_center = [[c[0], c[1], prob[c[1]][c[0]]] for c in centers]
    v_center.sort(key=lambda x: x[2], reverse=True)
    return [c[:2] for c in v_center if prob[c[1]][c[0]] >= 0.5]


def original_circle(points) -> tuple:
    array = np.array(points)
    mid_x = int(reduce(lambda a, b: a + b, array[:, 0]) / len(points))
    mid_y = int(reduce(lambda a, b: a + b, array[:, 1]) / len(points))
    radius = int(np.mean([np.linalg.norm(np.array(p) - np.array([mid_x, mid_y])) for p in points]) * 1.5)
    return mid_x, mid_y, radius


def original_evaluate(path: str, polygons: list) -> dict:
    prob = cv2.imread(path, cv2.IMREAD_GRAYSCALE) / 255.0
    height, width = prob.shape
    mask = np.zeros((height, width))
    cv2.fillPoly(mask, [np.array(p, np.int32) for p in polygons], 1)
    all_mask_value = np.sum(np.multiply(prob, mask))
    all_value = np.sum(prob)
    all_mask = np.sum(mask)
    left = all_mask_value / (all_value - all_mask_value + 1e-7)
    right = (height * width - all_mask) / all_mask
    rsu = -np.exp(-1 * 0.707 * left * right) + 1

    circles = [original_circle(p) for p in polygons]  # Ras, with its own centre search
    centres = original_centres(prob)
    if len(centres) == 0:
        offsets = [circles[0][2]]
    else:
        offsets = []
        for x, y, r in circles:
            dises = [d for d in (np.linalg.norm(np.array([x, y]) - np.array(p)) for p in centres) if d <= r]
            offsets.append(np.mean(dises) if dises else r)
    granular = np.mean([off / c[2] for off, c in zip(offsets, circles)])
    ras = (np.exp(3 * granular) - 1) / (np.exp(3) - 1)

    circles = [original_circle(p) for p in polygons]  # Rda, searching the centres again
    centres = original_centres(prob)
    values = []
    for x, y, r in circles:
        backup = [p for p in centres if np.linalg.norm(np.array([x, y]) - np.array(p)) <= r]
        if len(backup) <= 1:
            values.append(float(len(backup)))
            continue
        mean_point = np.average(backup, axis=0)
        spread = np.mean([np.linalg.norm(mean_point - np.array(p)) for p in backup]) / r
        values.append(0.5 * (1 - spread) + np.exp(-0.5 * (len(backup) + 2)))
    rda = np.mean(values)
    rmi = 0.4 * rsu + 0.35 * (1 - ras) + 0.25 * rda
    return {"Rsu": float(rsu), "Rda": float(rda), "Ras": float(ras), "Rmi": float(rmi),
            "centers": [list(map(int, c)) for c in centres]}


def ours_evaluate(path: str, polygons: list) -> dict:
    from evaluations.metrics import evaluate_gray, read_probmap

    score = evaluate_gray(read_probmap(path), polygons, name=path)
    return {**score.as_dict(), "centers": [list(c) for c in score.centers]}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(which: str, path: str, polygons_path: str, repeat: int) -> None:
    with open(polygons_path) as f:
        polygons = json.load(f)
    evaluate = original_evaluate if which == "baseline" else ours_evaluate
    if repeat > 1:  # warm-up run, only when timing several
        evaluate(path, polygons)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = evaluate(path, polygons)
        best = min(best, time.perf_counter() - started)
    print(json.dumps({"seconds": best, "peak_mb": peak_rss_mb(), **result}))


def run_child(which: str, path: str, polygons_path: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", which, path, polygons_path,
                          "--repeat", str(repeat)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=10000)
    parser.add_argument("--width", type=int, default=10001)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per implementation (best kept)")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "MAP", "POLYGONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.repeat)
        return

    with tempfile.TemporaryDirectory() as tmp:
        gray, polygons = synthetic_probmap(args.height, args.width)
        path, polygons_path = os.path.join(tmp, "probmap_0.jpg"), os.path.join(tmp, "polygons.json")
        cv2.imwrite(path, gray)  # JPEG quality 95, as the pipeline stores probmaps
        del gray
        with open(polygons_path, "w") as f:
            json.dump(polygons, f)
        ours = run_child("ours", path, polygons_path, args.repeat)
        base = run_child("baseline", path, polygons_path, args.repeat)

    names = ("Rsu", "Ras", "Rda", "Rmi")
    print(f"SeLo evaluator, {args.height} x {args.width} map, {len(polygons)} polygons, best of {args.repeat}")
    print(f"{'':10s} {'seconds':>9s} {'peak MiB':>9s}  " + "  ".join(f"{n:>10s}" for n in names) + "  centres")
    for label, result in (("baseline", base), ("ours", ours)):
        print(f"{label:10s} {result['seconds']:9.2f} {result['peak_mb']:9.0f}  "
              + "  ".join(f"{result[n]:10.6f}" for n in names) + f"  {len(result['centers'])}")
    max_diff = max(abs(ours[n] - base[n]) for n in names)
    identical = max_diff <= 1e-9 and ours["centers"] == base["centers"]
    print(f"speed-up {base['seconds'] / ours['seconds']:.1f}x (target >= 4); ours peak {ours['peak_mb']:.0f} MiB "
          f"(target <= 1536); max |diff| {max_diff:.1e}, "
          f"same centres {ours['centers'] == base['centers']}: {'IDENTICAL' if identical else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
