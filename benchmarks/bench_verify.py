"""What verifying stored files costs: a rerun of a finished like-SLM cache and a search over the 40-scene
benchmark archive, each timed under two versions of the code (one run each, wall seconds).

    .venv/bin/python benchmarks/bench_verify.py [--versions 285025d,HEAD] [--work cache/bench_verify]

``--versions``: commits, in order (the default: before issue 32, whose readers checked less: the archive's
search checked only the top K scenes' images and read scene files on their footer alone; outputs and tile
vectors carried no record of their bytes; then the checkout's HEAD). Each version runs in its own
subprocesses with ``PYTHONPATH`` on its files (``git archive``), on the same inputs:

- the like-SLM testset of ``make_testset.py --like-slm`` (``bench_whole_run.like_slm_testset``, kept under
  ``--work``): ``generate_selo.py`` into a fresh cache, untimed, then the same command again, timed: every
  sample is found complete, so the rerun is the checks and nothing else;
- ``--scenes`` synthetic scenes of ``bench_archive.make_scenes`` (2000-2500 px, as the README's archive
  figures): ``selo-index`` into a fresh archive, untimed, then ``selo-search --top 5`` of one query, timed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive import make_scenes  # noqa: E402
from bench_whole_run import DEMO_YAML, baseline_tree, like_slm_testset  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUERY = "a playground with a green football field and a red track."


def timed(command: list[str], tree: Path) -> float:
    """Wall seconds of ``command`` run with the code of ``tree``; its output is dropped, its failure raised."""
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def testset_rerun(tree: Path, testset: Path, cache: Path) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    command = [sys.executable, str(tree / "predict/generate_selo.py"), "--yaml_path", str(tree / DEMO_YAML),
               "--cache_path", str(cache), "--src_data_path", str(testset / "imgs"),
               "--src_anno_path", str(testset / "annotations/anno.json"), "--device", "cpu", "--no_report"]
    timed(command, tree)
    return timed(command, tree)


def archive_search(tree: Path, scenes: list[str], archive: Path, out: Path) -> float:
    shutil.rmtree(archive, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    timed([sys.executable, "-m", "predict.cli.index", "--yaml_path", str(tree / DEMO_YAML), "--images", *scenes,
           "--archive", str(archive)], tree)
    return timed([sys.executable, "-m", "predict.cli.search", "--archive", str(archive), "--query", QUERY,
                  "--top", "5", "--out", str(out)], tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default="285025d,HEAD", help="commits to time, in order")
    parser.add_argument("--work", default=str(REPO / "cache/bench_verify"), help="inputs and runs (kept)")
    parser.add_argument("--scenes", type=int, default=40)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    testset = like_slm_testset(work, None)
    scenes = make_scenes(str(work / "scenes"), args.scenes, 2000, 2500)
    print(f"{'version':>10} {'like-SLM rerun s':>17} {'search of ' + str(args.scenes) + ' scenes s':>22}", flush=True)
    for name in args.versions.split(","):
        name = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", name], check=True, capture_output=True,
                              text=True).stdout.strip()  # HEAD as the commit it is now
        tree = baseline_tree(work, name)
        rerun = testset_rerun(tree, testset, work / f"cache_{name}")
        search = archive_search(tree, scenes, work / f"archive_{name}", work / f"hits_{name}")
        print(f"{name:>10} {rerun:17.1f} {search:22.1f}", flush=True)


if __name__ == "__main__":
    main()
