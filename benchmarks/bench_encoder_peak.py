"""Peak memory of a run with a real-size encoder on the largest like-SLM image, before and after.

    .venv/bin/python benchmarks/bench_encoder_peak.py [--runs 7c7cea4,d7bedac,ours] [--batch_size N]

AMFMN with the fixture checkpoint of ``../shared/reference/model`` (the official architecture, made-up
weights: the same activations' sizes) at the yaml's default batch of 64, on one 10001 x 10000 scene of the
like-SLM testset with two queries. Each run is ``generate_selo.py`` in a subprocess of its own with the
default workers and memory budget, on a fresh cache folder; a commit runs from its files (``git archive``
under ``--work``). Printed per run: wall time, peak resident memory of the process tree (``ru_maxrss``
from ``wait4``), the batch the run used (from its log) and whether its probmaps equal the first run's.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_whole_run import REPO, TESTSET_STAMP, baseline_tree, probmap_digests, run_child  # noqa: E402
from gpu_vectors import fixture_yaml  # noqa: E402

from predict.demo.make_testset import write_testset  # noqa: E402


def large_scene_testset(work: Path) -> Path:
    """One 10001 x 10000 scene with two captions under ``work`` (made once)."""
    folder = work / "testset_10k"
    if not (folder / TESTSET_STAMP).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_testset(str(folder), seed=0, layout=[(10001, 10000, 2)])
        (folder / TESTSET_STAMP).write_text("")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "cache/bench_encoder_peak"),
                        help="folder for the testset, the fixture weights, the commits' files and the runs")
    parser.add_argument("--runs", default="7c7cea4,d7bedac,ours", help="commits (or 'ours'), in order")
    parser.add_argument("--batch_size", type=int, default=None, help="--batch_size of every run (the yaml's: 64)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    testset, yaml_path = large_scene_testset(work), fixture_yaml("AMFMN", work)
    print(f"AMFMN (fixture weights) on {testset}; {os.cpu_count()} CPUs", flush=True)
    print(f"{'run':>8} {'wall s':>8} {'peak MB':>8} {'batch':>6}  same probmaps", flush=True)
    first = None
    for kind in args.runs.split(","):
        tree = REPO if kind == "ours" else baseline_tree(work, kind)
        cache = work / f"run_{kind}"
        shutil.rmtree(cache, ignore_errors=True)
        command = [sys.executable, str(tree / "predict/generate_selo.py"), "--yaml_path", str(yaml_path),
                   "--cache_path", str(cache), "--src_data_path", str(testset / "imgs"),
                   "--src_anno_path", str(testset / "annotations/anno.json"), "--device", "cpu"]
        if args.batch_size:
            command += ["--batch_size", str(args.batch_size)]
        wall, peak_mb, _ = run_child(command, tree, {**os.environ, "PYTHONPATH": str(tree)})
        lowered = re.search(r"batch lowered from \d+ to (\d+)", (cache / "log.txt").read_text(encoding="utf-8"))
        batch = lowered.group(1) if lowered else str(args.batch_size or 64)
        maps = probmap_digests(cache)
        first = first or maps
        print(f"{kind:>8} {wall:8.1f} {peak_mb:8.0f} {batch:>6}  {'yes' if maps == first else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
