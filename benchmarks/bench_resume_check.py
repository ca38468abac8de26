"""The cost of the provenance checks: a rerun of a finished like-SLM cache with nothing changed.

    .venv/bin/python benchmarks/bench_resume_check.py [--work cache/bench_resume_check] [--scenes N]

Makes the like-SLM testset (22 images up to 10000 x 10001, 59 samples; or ``--scenes N`` demo scenes) and
one finished run with the demo encoder (both kept under ``--work``), then times ``generate_selo.py`` on the
finished cache, each in a subprocess of its own:

- ``cold``: an empty digest memo (``XDG_CACHE_HOME`` a new folder): every image and map is hashed again;
- ``warm``: the memo the cold rerun left: nothing is read but stat data.

Printed per rerun: wall time, CPU time and peak memory of the child (its own: :mod:`measured`), and the number of
samples skipped (all of them, or the rerun did not find the run complete).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_whole_run import DEMO_YAML, REPO, like_slm_testset  # noqa: E402
from measured import run_measured  # noqa: E402


def generate(testset: Path, cache: Path, xdg: Path) -> tuple[float, float, int, str]:
    """``generate_selo.py`` on ``testset`` into ``cache``: (wall s, CPU s, peak MB, log of this run)."""
    cmd = [sys.executable, str(REPO / "predict/generate_selo.py"), "--yaml_path", DEMO_YAML, "--device", "cpu",
           "--cache_path", str(cache), "--src_data_path", str(testset / "imgs"),
           "--src_anno_path", str(testset / "annotations/anno.json"), "--no_report"]
    log = cache / "log.txt"
    before = log.stat().st_size if log.is_file() else 0
    run = run_measured(cmd, cwd=REPO, env={**os.environ, "XDG_CACHE_HOME": str(xdg)}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if run.returncode != 0:
        raise SystemExit(f"generate_selo.py exited {run.returncode}; see {log}")
    with open(log, encoding="utf-8") as f:
        f.seek(before)
        text = f.read()
    return run.wall, run.cpu, round(run.peak_mb), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "cache/bench_resume_check"))
    parser.add_argument("--scenes", type=int, default=None, help="demo scenes instead of the like-SLM layout")
    args = parser.parse_args()
    work = Path(args.work)
    testset = like_slm_testset(work, args.scenes)
    cache = work / "run"
    with tempfile.TemporaryDirectory() as memo_root:
        first = Path(memo_root) / "first"
        if not (cache / "metrics.json").is_file():
            wall, cpu, peak, _ = generate(testset, cache, first)
            print(f"first run: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {peak} MB")
        xdg = Path(memo_root) / "rerun"
        shutil.rmtree(xdg, ignore_errors=True)
        for label in ("cold", "warm"):
            wall, cpu, peak, log = generate(testset, cache, xdg)
            skipped = log.count("(already complete)")
            print(f"{label} memo: {wall:.2f} s wall, {cpu:.2f} s CPU, peak {peak} MB, {skipped} samples skipped, "
                  f"{log.count('Recomputing')} recomputed")


if __name__ == "__main__":
    main()
