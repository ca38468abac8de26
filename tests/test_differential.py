"""The design's proof (issue 20): for seeded random sequences of edits to inputs, code and stored files, a
resumed run gives exactly what a fresh run gives in a new folder: the same indicators and the same maps,
byte for byte.

A Hypothesis state machine draws each step from a catalogue of edits (image bytes with size and mtime
restored, weights likewise, the plug-in's helper module, a file the yaml names, the annotations' order,
a caption, an image's name, values in ``metrics.json``, maps and tile vectors deleted or truncated), then
resumes the run in its folder and makes a fresh one in a new folder. A resumed run that stops because
the folder holds other run settings (new weights, new encoder code) is rerun with ``--overwrite``, the
documented way on; either way no number may differ from the fresh run's.
"""
import itertools
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from predict import provenance

from helpers import EditableTestset, rewrite_keeping_size_and_mtime

STEPS = {"sequences": 0, "steps": 0}  # counted for the closing note (printed at the end)
INDICATORS = ("Rsu", "Rda", "Ras", "Rmi")


def outcome(cache) -> dict:
    """Per caption: the four indicators and the probmap's bytes, or the error."""
    metrics = json.loads((cache / "metrics.json").read_text())
    result = {s["caption"]: ({k: s[k] for k in INDICATORS}, (cache / f"probmap_{s['idx']}.jpg").read_bytes())
              for s in metrics["samples"] if s["idx"] in metrics["mean_over"]}
    result.update({e["caption"]: e["error"] for e in metrics["errors"]})
    return result


class ResumeEqualsFresh(RuleBasedStateMachine):
    """See the module docstring; ``root`` is a fresh folder per sequence."""

    folders = itertools.count()
    base = None  # set by the test: a tmp folder
    importable_module = None

    @initialize()
    def start(self):
        STEPS["sequences"] += 1
        self.root = self.base / f"sequence{next(self.folders)}"
        self.root.mkdir()
        provenance.digests._memo.clear()
        self.testset = EditableTestset(self.root, type(self).importable_module)
        self.cache = self.root / "cache"
        assert self.testset.generate(self.cache)[0] == 0

    # ---- the catalogue of edits ----------------------------------------------------------------------

    @rule(colour=st.sampled_from([(30, 30, 220), (30, 220, 30), (220, 30, 30)]), row=st.integers(0, 150))
    def image_bytes_with_size_and_mtime_restored(self, colour, row):
        path = self.testset.imgs / self.testset.anno[0]["jpg_name"]
        self.testset.write_scene("tmp.png", box=(row, row + 100, 50, 150), colour=colour)
        data = (self.testset.imgs / "tmp.png").read_bytes()
        (self.testset.imgs / "tmp.png").unlink()
        rewrite_keeping_size_and_mtime(path, data)

    @rule(gain=st.sampled_from([0.5, 2.0, -1.0]))
    def weights_with_size_and_mtime_restored(self, gain):
        data = bytearray(self.testset.weights.read_bytes())
        new = np.array([gain]).tobytes()
        data[-len(new):] = new
        rewrite_keeping_size_and_mtime(self.testset.weights, bytes(data))

    @rule(mix=st.sampled_from(["0.0", "0.3", "-0.2"]))
    def plugin_helper_module(self, mix):
        (self.testset.plugin_dir / "trust_helper.py").write_text(f"MIX = {mix}\n")

    @rule(sign=st.sampled_from(["1.0", "-10", "2.0"]))
    def file_the_yaml_names(self, sign):
        (self.root / "sign.txt").write_text(sign)

    @rule()
    def annotation_order(self):
        self.testset.anno.reverse()
        self.testset.write_anno()

    @rule(caption=st.sampled_from(["a red roof", "a green lawn", "a red car", "two green fields"]))
    def caption(self, caption):
        self.testset.anno[1]["caption"] = caption
        self.testset.write_anno()

    @rule()
    def image_name(self):
        old = self.testset.anno[0]["jpg_name"]
        new = f"renamed_{old}" if not old.startswith("renamed_") else old[len("renamed_"):]
        (self.testset.imgs / old).rename(self.testset.imgs / new)
        for sample in self.testset.anno:
            if sample["jpg_name"] == old:
                sample["jpg_name"] = new
        self.testset.write_anno()

    @rule(key=st.sampled_from(INDICATORS), value=st.sampled_from([0.0, 0.5, 1.0, 7.5, None]))
    def metrics_value(self, key, value):
        path = self.cache / "metrics.json"
        data = json.loads(path.read_text())
        if data["samples"]:
            data["samples"][0][key] = value
            path.write_text(json.dumps(data))

    @rule(kind=st.sampled_from(["probmap", "heatmap", "addmap"]), truncate=st.booleans())
    def map_file(self, kind, truncate):
        path = self.cache / f"{kind}_0.jpg"
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]) if truncate else path.unlink()

    @rule(truncate=st.booleans())
    def vector_files(self, truncate):
        for path in (self.cache / "tile_vectors").glob("*.npz"):
            path.write_bytes(path.read_bytes()[:100]) if truncate else path.unlink()

    # ---- the property ---------------------------------------------------------------------------------

    @invariant()
    def resumed_equals_fresh(self):
        if not hasattr(self, "testset"):
            return
        STEPS["steps"] += 1
        code, _, log = self.testset.generate(self.cache)
        if code == 2:  # other run settings: stopped before any work, as documented; the way on
            code, _, log = self.testset.generate(self.cache, "--overwrite")
        fresh = self.root / f"fresh{STEPS['steps']}"
        assert self.testset.generate(fresh)[0] == code
        assert outcome(self.cache) == outcome(fresh), log
        shutil.rmtree(fresh)


@pytest.mark.slow
def test_a_resumed_run_equals_a_fresh_run_after_any_edits(tmp_path, importable_module, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(provenance.digests, "RACY_NS", 0)  # memoise at once: the stat-data rule alone guards the memo
    monkeypatch.setattr(provenance.digests, "DISK_MEMO_BYTES", 0)
    ResumeEqualsFresh.base = tmp_path
    ResumeEqualsFresh.importable_module = importable_module
    ResumeEqualsFresh.TestCase.settings = settings(max_examples=6, stateful_step_count=5, deadline=None,
                                                   derandomize=True, suppress_health_check=list(HealthCheck))
    ResumeEqualsFresh.TestCase().runTest()
    print(f"differential test: {STEPS['sequences']} edit sequences, {STEPS['steps']} resumed-vs-fresh checks")
