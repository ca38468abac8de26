"""`make demo`: the whole SeLo job offline, on the embedded default.

Generates the synthetic demo testset (test_data/demo/ of the current folder) if it is absent, runs the v1
pipeline with the demo encoder (the ``demo`` preset) into cache/demo/ (maps, log.txt, metrics.json/csv,
report.html; a rerun resumes) and prints the mean indicators.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from predict.cli import generate
from predict.demo import make_testset

DEMO_DATA = Path(make_testset.DEMO_DIR)
DEMO_CACHE = Path("cache", "demo")
DEMO_YAML = "demo"


def main() -> int:
    started = time.perf_counter()
    anno = DEMO_DATA / "annotations" / "anno.json"
    if not anno.is_file():
        make_testset.main(["--out", str(DEMO_DATA)])
    code = generate.main(["--yaml_path", str(DEMO_YAML), "--cache_path", str(DEMO_CACHE),
                          "--src_data_path", str(DEMO_DATA / "imgs"), "--src_anno_path", str(anno)])
    report = DEMO_CACHE / "report.html"
    print(f"Report: {os.path.relpath(report)}  (demo took {time.perf_counter() - started:.0f}s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
