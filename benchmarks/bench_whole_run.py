"""The whole run over a like-SLM testset, before and after the run engine, in one benchmark run.

    .venv/bin/python benchmarks/bench_whole_run.py [--work cache/bench_whole_run] [--runs 7c7cea4,d7bedac,serial,default]

The like-SLM testset (``make_testset.py --like-slm``: 22 images up to 10000 x 10001, 59 samples) is
generated once and kept under ``--work``. Each run is ``generate_selo.py`` in a subprocess of its own on
a fresh cache folder, with the demo encoder on the CPU (``--yaml``/``--device`` for another):

- a commit (e.g. 7c7cea4, the code before the first engine; ``baseline``: ``--baseline``), extracted with
  ``git archive`` under ``--work`` and run with ``PYTHONPATH`` on it;
- ``serial``: ours with ``--workers 1``;
- ``default``: ours with the default workers and memory budget;
- a runtime, ``torch``, ``auto``, ``onnxruntime``, ``openvino``, or one of the last two with ``:int8``: ours
  with ``--runtime`` (and ``--precision int8``), on a fresh runtime cache of its own (the export and its
  check, or the calibration, are part of the run).

Printed per run: wall time, the log's Time-Cut/Sim/Gnt/Flt and Time-Eval (sums of each sample's own
wall-clock work, so with overlap they add up to more than the wall time), Sim's share of the wall time
(Sim is the encoder's forward passes and the scoring), the encoder's tiles/s (tiles encoded / Time-Sim),
peak resident memory (the child's own ``ru_maxrss``: :mod:`measured`), the wall-time ratio to the first run,
whether its indicators (every sample's Rsu/Ras/Rda/Rmi, centres, circles, errors) and probmap JPEGs equal
the first run's, the mean indicators, and the mean absolute difference of its probmaps to the first run's
(grey levels, decoded JPEGs).

For an encoder with fixture weights (issue 34's AMFMN runs), ``--yaml`` takes an absolute path, e.g. the yaml
``benchmarks/bench_runtimes.py`` writes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from measured import run_measured

REPO = Path(__file__).resolve().parent.parent
DEMO_YAML = "predict/options/demo/demo_encoder.yaml"
TESTSET_STAMP = ".complete"


def like_slm_testset(work: Path, scenes: int | None) -> Path:
    """The testset under ``work`` (made once): the like-SLM layout, or ``scenes`` demo scenes."""
    folder = work / ("testset_like_slm" if scenes is None else f"testset_{scenes}_scenes")
    if not (folder / TESTSET_STAMP).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        layout = ["--like-slm"] if scenes is None else ["--scenes", str(scenes)]
        subprocess.run([sys.executable, str(REPO / "predict/demo/make_testset.py"), "--out", str(folder), *layout],
                       check=True, cwd=REPO)
        (folder / TESTSET_STAMP).write_text("")
    return folder


def baseline_tree(work: Path, commit: str) -> Path:
    """The files of ``commit`` under ``work`` (extracted once), the demo checkpoint included."""
    tree = work / f"tree_{commit}"
    if not (tree / TESTSET_STAMP).is_file():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (tree / TESTSET_STAMP).write_text("")
    return tree


def run_child(command: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """Run ``command``; return its wall seconds, its peak resident memory (MB) and its stdout."""
    run = run_measured(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if run.returncode not in (0, 1):  # 1: some samples failed, which the comparison shows
        raise RuntimeError(f"{' '.join(command)} exited with {run.returncode}")
    return run.wall, run.peak_mb, run.stdout


def indicators(cache: Path) -> tuple[list, list]:
    """Every sample's numbers and every error of a run's metrics.json, timings left out."""
    result = json.loads((cache / "metrics.json").read_text())
    keep = ("idx", "jpg_name", "Rsu", "Ras", "Rda", "Rmi", "centers", "circles")
    return ([{k: sample.get(k) for k in keep} for sample in result["samples"]],
            [(e["idx"], e["error"]) for e in result.get("errors", [])])


def probmap_digests(cache: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(cache.glob("probmap_*.jpg"))}


RUNTIMES = ("torch", "auto", "onnxruntime", "openvino")


def mean_indicators(cache: Path) -> dict[str, float]:
    samples = json.loads((cache / "metrics.json").read_text())["samples"]
    return {name: sum(s[name] for s in samples) / len(samples) for name in ("Rsu", "Ras", "Rda", "Rmi")}


def probmap_difference(cache: Path, first: Path) -> float:
    """Mean over the probmaps of the mean absolute grey-level difference to ``first``'s map of the same name."""
    import cv2
    import numpy as np

    differences = [np.abs(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(float)
                          - cv2.imread(str(first / p.name), cv2.IMREAD_UNCHANGED).astype(float)).mean()
                   for p in sorted(cache.glob("probmap_*.jpg")) if (first / p.name).is_file()]
    return float(np.mean(differences)) if differences else float("nan")


def run_one(kind: str, args, testset: Path, work: Path) -> dict:
    cache = work / f"run_{kind.replace(':', '_')}"
    shutil.rmtree(cache, ignore_errors=True)
    runtime, _, precision = kind.partition(":")
    ours = kind in ("serial", "default") or runtime in RUNTIMES
    tree = REPO if ours else baseline_tree(work, args.baseline if kind == "baseline" else kind)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if runtime in RUNTIMES:
        env["SELO_RUNTIME_CACHE"] = str(work / f"runtimes_{kind.replace(':', '_')}")
        shutil.rmtree(env["SELO_RUNTIME_CACHE"], ignore_errors=True)
    command = [sys.executable, str(tree / "predict/generate_selo.py"), "--yaml_path", str(tree / args.yaml),
               "--cache_path", str(cache), "--src_data_path", str(testset / "imgs"),
               "--src_anno_path", str(testset / "annotations/anno.json"), "--device", args.device]
    if kind == "serial":
        command += ["--workers", "1"]
    if runtime in RUNTIMES:
        command += ["--runtime", runtime] + (["--precision", precision] if precision else [])
    wall, peak_mb, stdout = run_child(command, tree, env)
    timings = json.loads((cache / "metrics.json").read_text())["timings"]
    encoded = re.search(r"tiles encoded (\d+) of", stdout)
    return {"kind": kind, "wall": wall, "peak_mb": peak_mb, "timings": timings, "cache": cache,
            "tiles_encoded": int(encoded.group(1)) if encoded else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "cache/bench_whole_run"),
                        help="folder for the testset, the baseline's files and the runs (kept between runs)")
    parser.add_argument("--runs", default="baseline,serial,default",
                        help="which runs, in order: commits, 'baseline', 'serial', 'default', runtimes (auto, "
                             "openvino:int8...); ratios to the first")
    parser.add_argument("--baseline", default="7c7cea4", help="commit of the baseline run")
    parser.add_argument("--yaml", default=DEMO_YAML, help="encoder yaml, relative to the tree that runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare_to", default=None, metavar="CACHE",
                        help="compare numbers and probmaps with this earlier run's cache folder instead of the first "
                             "run's (the wall-time ratio stays to the first run of this invocation)")
    parser.add_argument("--scenes", type=int, default=None,
                        help="a small demo testset of this many scenes instead of the like-SLM one (a quick check)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    testset = like_slm_testset(work, args.scenes)
    print(f"testset {testset}; encoder {args.yaml} on {args.device}; {os.cpu_count()} CPUs", flush=True)
    print(f"{'run':>9} {'wall s':>8} {'ratio':>6} {'cut':>7} {'sim':>7} {'gnt':>7} {'flt':>7} {'eval':>7} "
          f"{'sim/wall':>8} {'tiles/s':>8} {'peak MB':>8}  same numbers / probmaps  mean |d| grey  "
          "mean Rsu Ras Rda Rmi", flush=True)
    first = None
    for kind in args.runs.split(","):
        result = run_one(kind, args, testset, work)
        first = first or result
        reference = Path(args.compare_to) if args.compare_to else first["cache"]
        t = result["timings"]
        tiles_per_s = (result["tiles_encoded"] or 0) / t["sim"] if t["sim"] else float("nan")
        same_numbers = indicators(result["cache"]) == indicators(reference)
        same_maps = probmap_digests(result["cache"]) == probmap_digests(reference)
        print(f"{kind:>9} {result['wall']:8.1f} {first['wall'] / result['wall']:5.2f}x "
              + " ".join(f"{t[s]:7.1f}" for s in ("cut", "sim", "gnt", "flt", "eval"))
              + f" {t['sim'] / result['wall']:8.0%} {tiles_per_s:8.0f} {result['peak_mb']:8.0f}"
              + f"  {'yes' if same_numbers else 'NO'} / {'yes' if same_maps else 'NO'}"
              + f"  {probmap_difference(result['cache'], reference):13.4f}  "
              + " ".join(f"{v:.4f}" for v in mean_indicators(result["cache"]).values()), flush=True)


if __name__ == "__main__":
    main()
