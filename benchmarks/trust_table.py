"""Issue 20's table: each way a stale or wrong number reached a user, tried on a tree of the project.

    .venv/bin/python benchmarks/trust_table.py [--tree DIR] [--work DIR]

``--tree`` is a checkout or an extracted commit (``git archive d7bedac | tar -x -C DIR``; default: this
repository). Each case makes a tiny testset (two 300 x 400 scenes) and a plug-in encoder (weights file,
helper module, a file its yaml names by a relative path), runs ``generate_selo.py`` from that tree in a
subprocess, makes one edit, resumes the run (``--overwrite`` after a run that stops on other settings,
the documented way on) and compares the result with a fresh run in a new folder: the indicators per
caption, the probmaps byte for byte, and the samples the mean covers. A row says what the resumed run did
and whether it equals the fresh run ("OK") or not ("WRONG").
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "support"))
from helpers import PLUGIN  # noqa: E402 - the plug-in of the tests: weights file, helper module, named file


class Case:
    """A testset, the plug-in and the commands of one tree, in a folder of its own."""

    def __init__(self, root: Path, tree: Path):
        self.root, self.tree = root, tree
        self.imgs = root / "imgs"
        self.imgs.mkdir(parents=True)
        self.scene("a.png", (100, 200, 150, 250), (30, 30, 220))
        self.scene("b.png", (50, 150, 60, 160), (30, 220, 30))
        self.anno = [{"caption": "a red roof", "jpg_name": "a.png", "points": [[[150, 100], [250, 100], [250, 200], [150, 200]]]},
                     {"caption": "a green lawn", "jpg_name": "b.png", "points": [[[60, 50], [160, 50], [160, 150], [60, 150]]]}]
        self.write_anno()
        self.plugins = root / "plugins"
        self.plugins.mkdir()
        (self.plugins / "trust_plugin.py").write_text(PLUGIN)
        (self.plugins / "trust_helper.py").write_text("MIX = 0.0\n")
        self.weights = root / "weights.npy"
        np.save(self.weights, np.array([1.0]))
        (root / "sign.txt").write_text("1.0")
        (root / "encoder.yaml").write_text(yaml.safe_dump({"model": {"name": "trust_plugin:GainEncoder", "batch_size": 16,
                                                                     "weights": str(self.weights), "sign_file": "sign.txt"}}))
        time.sleep(2.1)  # every input older than the memo's racy window, as on a user's disk

    def scene(self, name, box, colour):
        rng = np.random.default_rng(len(name))
        image = rng.integers(90, 140, size=(300, 400, 3), dtype=np.uint8)
        image[box[0]:box[1], box[2]:box[3]] = colour
        cv2.imwrite(str(self.imgs / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 0])

    def write_anno(self):
        (self.root / "anno.json").write_text(json.dumps(self.anno))

    def env(self):
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.plugins), str(self.tree)]),
                "XDG_CACHE_HOME": str(self.root / "xdg")}

    def generate(self, cache: Path, *extra) -> tuple[int, str]:
        cmd = [sys.executable, str(self.tree / "predict/generate_selo.py"), "--yaml_path", str(self.root / "encoder.yaml"),
               "--cache_path", str(cache), "--src_data_path", str(self.imgs), "--src_anno_path", str(self.root / "anno.json"),
               "--step", "64_128", "--device", "cpu", "--no_report", *extra]
        return self._run(cmd, cache)

    def _run(self, cmd, cache: Path) -> tuple[int, str]:
        """(exit code, what the run printed and added to its folder's log.txt)."""
        log = cache / "log.txt"
        before = log.stat().st_size if log.is_file() else 0
        done = subprocess.run(cmd, env=self.env(), cwd=self.tree, capture_output=True, text=True)
        added = log.read_bytes()[before:].decode("utf-8", "replace") if log.is_file() else ""
        return done.returncode, done.stderr + added

    def evaluate(self, cache: Path) -> tuple[int, str]:
        cmd = [sys.executable, str(self.tree / "predict/evaluate_selo.py"), "--cache_path", str(cache),
               "--src_anno_path", str(self.root / "anno.json")]
        return self._run(cmd, cache)


def outcome(cache: Path) -> dict:
    """Per caption the indicators and the bytes of the probmap they were computed on, for the samples the
    mean covers."""
    data = json.loads((cache / "metrics.json").read_text())
    def probmap(s):  # the map the record was scored on (``map_of``: paired with a map made at another index)
        return (cache / f"probmap_{s.get('map_of', s['idx'])}.jpg").read_bytes()

    return {s["caption"]: ([s[k] for k in ("Rsu", "Rda", "Ras", "Rmi")], probmap(s))
            for s in data["samples"] if s["idx"] in data.get("mean_over", [])}


def rewrite(path: Path, data: bytes) -> None:
    """New bytes of the same length, the mtime put back (``touch -r``)."""
    stat = path.stat()
    time.sleep(0.05)
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def weights(case):
    data = bytearray(case.weights.read_bytes())
    data[-8:] = np.array([-1.0]).tobytes()
    rewrite(case.weights, bytes(data))


def helper(case):
    (case.plugins / "trust_helper.py").write_text("MIX = 0.5\n")


def named_file(case):
    rewrite(case.root / "sign.txt", b"-10")


def reorder(case):
    case.anno.reverse()
    case.write_anno()


def rename(case):
    (case.imgs / "a.png").rename(case.imgs / "renamed.png")
    case.anno[0]["jpg_name"] = "renamed.png"
    case.write_anno()


def swap(case):
    case.anno[0]["jpg_name"], case.anno[1]["jpg_name"] = case.anno[1]["jpg_name"], case.anno[0]["jpg_name"]
    case.write_anno()


def hand_edit(case, cache):
    path = cache / "metrics.json"
    data = json.loads(path.read_text())
    data["samples"][0]["Rsu"], data["samples"][1]["Ras"] = 7.5, None
    path.write_text(json.dumps(data))


CASES = [  # (name, edit, how the edited folder is used)
    ("W1 weights retrained, same size, mtime restored", weights, "generate"),
    ("W8 helper module of the plug-in edited", helper, "generate"),
    ("W9 file the yaml names (relative) edited", named_file, "generate"),
    ("W12 anno.json reordered, then evaluate_selo", reorder, "evaluate"),
    ("W13 image renamed (same bytes), jpg_name updated", rename, "generate"),
    ("W13 two samples' jpg_name swapped in anno.json", swap, "generate"),
    ("W14 metrics.json edited by hand", hand_edit, "generate"),
]


def run_case(name, edit, use, tree: Path, work: Path) -> str:
    case = Case(work / re.sub(r"\W+", "_", name)[:40], tree)
    cache = case.root / "cache"
    code, err = case.generate(cache)
    if code:
        return f"first run failed: {err.strip().splitlines()[-1]}"
    edit(case, cache) if edit is hand_edit else edit(case)
    if use == "evaluate":
        code, err = case.evaluate(cache)
        said = f"exit {code}, " + (re.findall(r"Mean over [^\n]*", err) or [""])[-1][:60]
    else:
        code, err = case.generate(cache)
        stop = [line for line in err.splitlines() if "ERROR" in line]
        said = "stopped: other run settings (" + "".join(re.findall(r"\((\S+) differ", stop[-1] if stop else "")) + " differ)" \
            if code == 2 else \
            f"exit {code}, {err.count('Skipping')} skipped, {err.count('Recomputing')} recomputed"
        if code == 2:
            case.generate(cache, "--overwrite")
    fresh = case.root / "fresh"
    case.generate(fresh)
    verdict = "OK" if outcome(cache) == outcome(fresh) else "WRONG"
    return f"{verdict:5} {said}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(REPO))
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="trust_table_"))
    try:
        for name, edit, use in CASES:
            print(f"{name:52} {run_case(name, edit, use, Path(args.tree).resolve(), work)}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
