"""The archive's proof (issue 32), in the style of ``test_differential.py``: for seeded random sequences of
edits to the images and to the archive's files, ``selo-index`` resumed in the archive and ``selo-search``
into the same ``--out`` give exactly what a fresh index and search in new folders give: the same ranked
scenes with the same scene scores, the same errors, and the same probmap pixels per (scene, query) (up to
the encoder's float noise: a scene encoded again in other batches has vectors equal to about 1e-7).

A Hypothesis state machine draws each step from a catalogue of edits: an image's pixels replaced, an image
added, an image removed, bytes flipped inside a scene file (footer intact, size and mtime kept), a scene
file truncated, one scene file (with its record) copied over another's, ``index.json``, ``scenes.parquet``
or ``archive.json`` deleted. One Ray cluster for the module (:func:`test_archive.ray_test_cluster`).
"""
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: nodes on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import collections
import itertools
import shutil

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_archive import index_args, ray_test_cluster, read_json, write_png
from test_archive_trust import copy_scene, flip_vector_bytes

from predict import provenance
from predict.archive import CATALOGUE_NAME, INDEX_NAME, SETTINGS_NAME, scene_path
from predict.cli import index, search

STEPS = {"sequences": 0, "steps": 0}  # counted for the closing note (printed at the end)
EDITS = collections.Counter()  # the edits made, by kind
CATALOGUE = ("scene_file_bytes_flipped", "scene_file_truncated", "scene_file_copied_over_another", "image_pixels_replaced",
             "image_added", "image_removed", "archive_file_deleted")
QUERIES = ["a playground with a green football field and a red track.", "a small dark lake surrounded by green woods."]
SIZE = (400, 500)  # small scenes: a few tiles each


def searched(archive, out) -> tuple[int, list[str], list[tuple], list[float], list[np.ndarray]]:
    """The search's exit code, errors, ranked (query, scene, rank), scene scores and probmaps."""
    code = search.main(["--archive", str(archive), *[a for q in QUERIES for a in ("--query", q)], "--top", "2",
                        "--out", str(out)])
    summary = read_json(out / "summary.json")
    probmaps = []
    for result in summary["results"]:
        with rasterio.open(out / result["probmap"]) as probmap:
            probmaps.append(probmap.read(1).astype(np.float64))
    ranked = [(r["query"], os.path.basename(r["scene"]), r["rank"]) for r in summary["results"]]
    return code, summary["errors"], ranked, [r["scene_score"] for r in summary["results"]], probmaps


def assert_same(resumed, fresh, log: str) -> None:
    """The same exit code, errors and ranking; the same scores and probmap pixels up to the encoder's float
    noise (a scene encoded again in other batches has vectors equal to about 1e-7)."""
    assert resumed[:3] == fresh[:3], log
    np.testing.assert_allclose(resumed[3], fresh[3], rtol=1e-5, atol=1e-7, err_msg=log)
    for ours, theirs in zip(resumed[4], fresh[4]):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3 if ours.max() <= 1 else 1, err_msg=log)


class ResumedArchiveEqualsFresh(RuleBasedStateMachine):
    """See the module docstring; ``root`` is a fresh folder per sequence."""

    folders = itertools.count()
    base = None  # set by the test: a tmp folder

    @initialize()
    def start(self):
        STEPS["sequences"] += 1
        self.root = self.base / f"sequence{next(self.folders)}"
        self.scenes, self.archive, self.out = self.root / "scenes", self.root / "archive", self.root / "out"
        self.scenes.mkdir(parents=True)
        self.seeds = itertools.count(200)
        for name in ("a.png", "b.png", "c.png"):
            write_png(self.scenes / name, next(self.seeds), *SIZE)
        assert index.main(index_args(self.archive, self.scenes)) == 0
        assert searched(self.archive, self.out)[0] == 0

    def images(self) -> list[str]:
        return sorted(p.name for p in self.scenes.glob("*.png"))

    def scene_file(self, i: int) -> str:
        images = self.images()
        return scene_path(str(self.archive), str(self.scenes / images[i % len(images)]))

    # ---- the catalogue of edits (i, j: which image or scene file, see scene_file) --------------------

    def image_pixels_replaced(self, i, j):
        images = self.images()
        write_png(self.scenes / images[i % len(images)], next(self.seeds), *SIZE)

    def image_added(self, i, j):
        write_png(self.scenes / f"new{len(self.images())}.png", next(self.seeds), *SIZE)

    def image_removed(self, i, j):
        images = self.images()
        if len(images) > 1:
            (self.scenes / images[i % len(images)]).unlink()

    def scene_file_bytes_flipped(self, i, j):
        if os.path.exists(self.scene_file(i)):
            flip_vector_bytes(self.scene_file(i))

    def scene_file_truncated(self, i, j):
        if os.path.exists(self.scene_file(i)):
            with open(self.scene_file(i), "r+b") as f:
                f.truncate(os.path.getsize(self.scene_file(i)) // 2)

    def scene_file_copied_over_another(self, i, j):
        source, target = self.scene_file(i), self.scene_file(i + j)
        if source != target and os.path.exists(source):
            copy_scene(source, target)

    def archive_file_deleted(self, i, j):
        (self.archive / (INDEX_NAME, CATALOGUE_NAME, SETTINGS_NAME)[i % 3]).unlink(missing_ok=True)

    @rule(edits=st.permutations(CATALOGUE), count=st.integers(1, 3), i=st.integers(0, 3), j=st.integers(1, 3))
    def edited(self, edits, count, i, j):
        """A step: the first ``count`` edits of an order of the catalogue (the simplest order first: the
        scene files damaged), on the images or scene files ``i`` (and ``i + j``)."""
        for name in edits[:count]:
            EDITS[name] += 1
            getattr(self, name)(i, j)

    # ---- the property ---------------------------------------------------------------------------------

    @invariant()
    def resumed_equals_fresh(self):
        if not hasattr(self, "archive"):
            return
        STEPS["steps"] += 1
        code = index.main(index_args(self.archive, self.scenes))
        fresh = self.root / f"fresh{STEPS['steps']}"
        assert index.main(index_args(fresh / "archive", self.scenes)) == code == 0
        resumed = searched(self.archive, self.out)
        assert_same(resumed, searched(fresh / "archive", fresh / "out"), (self.archive / "log.txt").read_text())
        assert resumed[0] == 0
        shutil.rmtree(fresh)


@pytest.mark.slow  # about a dozen index and search runs on the module's Ray cluster
def test_a_resumed_archive_equals_a_fresh_one_after_any_edits(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(provenance.digests, "RACY_NS", 0)  # memoise at once: the stat-data rule alone guards the memo
    ResumedArchiveEqualsFresh.base = tmp_path
    ResumedArchiveEqualsFresh.TestCase.settings = settings(max_examples=4, stateful_step_count=3, deadline=None,
                                                           derandomize=True, suppress_health_check=list(HealthCheck))
    with ray_test_cluster():
        try:
            ResumedArchiveEqualsFresh.TestCase().runTest()
        finally:
            print(f"archive differential test: {STEPS['sequences']} edit sequences, {STEPS['steps']} "
                  f"resumed-vs-fresh checks; edits: {dict(EDITS)}")
    assert STEPS["sequences"] >= 1 and STEPS["steps"] >= STEPS["sequences"]
