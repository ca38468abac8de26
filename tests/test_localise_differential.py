"""The design's proof for own scenes (issue 32): for seeded random sequences of edits to the images and to
the output folder, ``selo-localise`` resumed in its folder answers exactly what a fresh run in a new folder
answers: per image x query the same exit, the same probmap pixels and the same peaks, and a folder that
holds exactly what its summary lists.

A Hypothesis state machine draws each step from a catalogue of edits: an image's pixels replaced (its size
and mtime kept), an image of another's stem added, an image truncated (it fails) and made whole again, an
output's bytes flipped or the file deleted, the tile vectors truncated, the queries changed.
"""
import hashlib
import itertools
import json

import cv2
import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from predict import provenance
from predict.cli.localise import main as localise_main

from helpers import DEMO_YAML, red_square_scene, rewrite_keeping_size_and_mtime

STEPS = {"sequences": 0, "steps": 0}
QUERIES = ["a red roof", "a green lawn", "some tennis courts"]
FOLDER_FILES = {"log.txt", "tile_vectors", ".lock", "summary.json", ".summary.json.selo", "all_peaks.geojson"}


def png_bytes(seed, height=384, width=512):
    image, _ = red_square_scene(height, width, (40 + 20 * seed, 140 + 20 * seed, 50 + 30 * seed, 150 + 30 * seed))
    image[200:300, 300:420] = (30, 200 + seed, 30)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()  # size fixed by the pixels


def outcome(out, code, images, queries) -> dict:
    """``{(image, query): (probmap pixels, peaks)}`` of a folder, and the exit code; with the checks that
    the folder holds exactly what its summary lists and that every image x query of the run was answered
    or failed with a line naming the image."""
    summary = json.loads((out / "summary.json").read_text())
    answered = {(entry["image"], entry["query"]) for entry in summary["results"]}
    for image in images:
        failed = any(error.startswith(str(image)) for error in summary["errors"])
        assert failed or all((str(image), query) in answered for query in queries), (image, summary["errors"])
    listed = {name for entry in summary["results"] for name in entry["files"].values()}
    assert {p.name for p in out.iterdir()} - FOLDER_FILES == listed
    answers = {}
    for entry in summary["results"]:
        with rasterio.open(out / entry["files"]["probmap"]) as src:
            pixels = src.read(1)
        peaks = json.loads((out / entry["files"]["peaks"]).read_text())["features"]
        answers[(entry["image"], entry["query"])] = (hashlib.sha256(pixels.tobytes()).hexdigest()[:16],
                                                     json.dumps(peaks, sort_keys=True))
    layer = json.loads((out / "all_peaks.geojson").read_text())["features"]
    assert sorted(json.dumps(f, sort_keys=True) for f in layer) == \
        sorted(json.dumps(f, sort_keys=True) for _, peaks in answers.values() for f in json.loads(peaks))
    return {"code": code, "answers": answers}


class ResumeEqualsFresh(RuleBasedStateMachine):
    folders = itertools.count()
    base = None  # set by the test: a tmp folder

    @initialize()
    def start(self):
        STEPS["sequences"] += 1
        self.root = self.base / f"sequence{next(self.folders)}"
        self.images = self.root / "images"
        self.images.mkdir(parents=True)
        for seed, name in enumerate(("a.png", "b.png")):
            (self.images / name).write_bytes(png_bytes(seed))
        self.an_image_of_another_ones_stem(3)  # two images of one stem from the start: their outputs must not mix
        self.queries = QUERIES[:2]
        self.out = self.root / "out"
        self.run(self.out)

    def run(self, out):
        args = ["--yaml_path", str(DEMO_YAML), "--device", "cpu", "--out", str(out), "--step", "128_256"]
        for image in sorted(self.images.iterdir()):
            args += ["--image", str(image)]
        for query in self.queries:
            args += ["--query", query]
        return localise_main(args)

    def output(self, kind):
        summary = json.loads((self.out / "summary.json").read_text())
        return [self.out / e["files"][kind] for e in summary["results"]]

    # ---- the catalogue of edits ----------------------------------------------------------------------

    @rule(name=st.sampled_from(["a.png", "b.png"]), seed=st.integers(2, 4))
    def image_pixels_with_size_and_mtime_kept(self, name, seed):
        path = self.images / name
        if path.is_file() and len(path.read_bytes()) == len(png_bytes(seed)):
            rewrite_keeping_size_and_mtime(path, png_bytes(seed))

    @rule(seed=st.integers(0, 4))
    def an_image_of_another_ones_stem(self, seed):
        cv2.imwrite(str(self.images / "a.tif"), cv2.imdecode(np.frombuffer(png_bytes(seed), np.uint8), cv2.IMREAD_COLOR))

    @rule(name=st.sampled_from(["a.png", "b.png"]))
    def image_truncated(self, name):
        path = self.images / name
        path.write_bytes(path.read_bytes()[:300])

    @rule(name=st.sampled_from(["a.png", "b.png"]), seed=st.integers(0, 4))
    def image_whole_again(self, name, seed):
        (self.images / name).write_bytes(png_bytes(seed))

    @rule(kind=st.sampled_from(["probmap", "peaks", "overlay"]), which=st.integers(0, 5), delete=st.booleans())
    def output_changed(self, kind, which, delete):
        paths = self.output(kind)
        if paths:
            path = paths[which % len(paths)]
            if delete:
                path.unlink(missing_ok=True)
            elif path.is_file():
                data = bytearray(path.read_bytes())
                data[len(data) // 2] ^= 0xFF
                path.write_bytes(bytes(data))

    @rule()
    def vectors_truncated(self):
        for path in (self.out / "tile_vectors").glob("*.npz"):
            path.write_bytes(path.read_bytes()[:100])

    @rule(queries=st.lists(st.sampled_from(QUERIES), min_size=1, max_size=3, unique=True))
    def queries_changed(self, queries):
        self.queries = queries

    # ---- the property ---------------------------------------------------------------------------------

    @invariant()
    def resumed_equals_fresh(self):
        if not hasattr(self, "out"):
            return
        STEPS["steps"] += 1
        provenance.digests._memo.clear()  # as a new process would start
        images = sorted(self.images.iterdir())
        resumed = outcome(self.out, self.run(self.out), images, self.queries)
        fresh_out = self.root / f"fresh{STEPS['steps']}"
        fresh = outcome(fresh_out, self.run(fresh_out), images, self.queries)
        assert resumed["code"] == fresh["code"]
        now = {key: value for key, value in resumed["answers"].items() if key[1] in self.queries}
        assert now == fresh["answers"]
        # what the folder keeps of earlier queries is still what a fresh run of them gives
        if earlier := {key for key in resumed["answers"] if key[1] not in self.queries}:
            self.queries, queries = sorted({q for _, q in earlier}), self.queries
            again = outcome(self.root / f"again{STEPS['steps']}", self.run(self.root / f"again{STEPS['steps']}"),
                            sorted(self.images.iterdir()), self.queries)
            self.queries = queries
            assert {key: resumed["answers"][key] for key in earlier} == \
                {key: value for key, value in again["answers"].items() if key in earlier}


@pytest.mark.slow
def test_resumed_selo_localise_equals_a_fresh_run(tmp_path):
    ResumeEqualsFresh.base = tmp_path
    ResumeEqualsFresh.TestCase.settings = settings(max_examples=10, stateful_step_count=5, deadline=None,
                                                   derandomize=True, suppress_health_check=list(HealthCheck))
    ResumeEqualsFresh.TestCase().runTest()
    print(f"\nselo-localise differential: {STEPS['sequences']} sequences, {STEPS['steps']} steps")
    assert STEPS["steps"] >= 4
