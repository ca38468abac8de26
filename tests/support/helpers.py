"""What the tests share: paths, small testsets, command runs, a plug-in that can be edited.

This folder (``tests/support``) is on pytest's ``pythonpath`` (``pyproject.toml``), so tests import it as
``helpers`` and yamls name the toy encoders as ``toy_encoders:<Class>``; :func:`subprocess_env` gives a
child process the same path.
"""
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from predict.cli.evaluate import main as evaluate_main
from predict.cli.generate import main as generate_main

SUPPORT = Path(__file__).resolve().parent  # tests/support: this module and the toy encoders
TESTS = SUPPORT.parent
REPO_ROOT = TESTS.parent
SHARED = Path(os.environ.get("SELO_SHARED", REPO_ROOT.parent / "shared"))
ARTIFACTS = Path(os.environ.get("SELO_ARTIFACTS", TESTS / "artifacts"))
DEMO_YAML = REPO_ROOT / "predict" / "options" / "demo" / "demo_encoder.yaml"  # the "demo" preset's file
DEMO_CHECKPOINT = REPO_ROOT / "predict" / "checkpoints" / "demo_encoder.pth"
GENERATE_SCRIPT = REPO_ROOT / "predict" / "generate_selo.py"  # the original's command, run as a file


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; skips the calling test when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} not available (the ../shared folder beside the checkout is absent)")
    return path


def subprocess_env(*folders) -> dict:
    """This process's environment with ``PYTHONPATH`` = ``folders``, this folder and the checkout: a child
    imports the toy encoders and the code under test (not another installed copy)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*folders, SUPPORT, REPO_ROOT]))}


# ---- a testset of one red square (the generate and API tests) ---------------------------------------------


def process_state() -> dict:
    """What a library call must leave as it found it: thread counts, warnings hooks and filters, environment."""
    import warnings

    import torch

    return {"opencv threads": cv2.getNumThreads(), "torch threads": torch.get_num_threads(),
            "torch interop threads": torch.get_num_interop_threads(), "showwarning": warnings.showwarning,
            "warning filters": list(warnings.filters), "environment": dict(os.environ)}


def red_square_scene(height=900, width=1200, box=(300, 600, 500, 800)):
    """Grey noisy image (BGR) with a red square at rows box[0]:box[1], columns box[2]:box[3]."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 140, size=(height, width, 3), dtype=np.uint8)
    r0, r1, c0, c1 = box
    image[r0:r1, c0:c1] = (30, 30, 220)
    polygon = [[c0, r0], [c1, r0], [c1, r1], [c0, r1]]
    return image, polygon


def write_testset(root, n_samples=2, names=None):
    """A small testset: images + anno.json; returns (imgs dir, anno path)."""
    imgs = root / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    image, polygon = red_square_scene()
    names = names or ["scene.png"] * n_samples
    for name in set(names):
        cv2.imwrite(str(imgs / name), image)
    anno = [{"caption": f"a red building number {i}", "jpg_name": n, "points": [polygon]} for i, n in enumerate(names)]
    (root / "anno.json").write_text(json.dumps(anno))
    return imgs, root / "anno.json"


def write_yaml(root, name="toy_encoders:RednessEncoder", **extra):
    options = {"model": {"name": name, "batch_size": 16}, **extra}
    path = root / "encoder.yaml"
    path.write_text(yaml.safe_dump(options))
    return path


def slow_generate_command(root, imgs, anno):
    """``predict/generate_selo.py`` as a subprocess on the testset ``imgs`` + ``anno`` with the position scorer
    slowed to 0.05 s per batch (for kill and Ctrl-C tests), writing into ``root/cache``: (argv, env)."""
    options = {"model": {"name": "toy_encoders:PositionScorer", "batch_size": 8},
               "scorer": {"height": 900, "width": 1200, "offset": 0.0, "delay": 0.05,
                          "targets": [{"x": 650, "y": 450, "amp": 1.0, "sigma": 200}]}}
    (root / "slow.yaml").write_text(yaml.safe_dump(options))
    cmd = [sys.executable, str(GENERATE_SCRIPT), "--yaml_path", str(root / "slow.yaml"),
           "--cache_path", str(root / "cache"), "--src_data_path", str(imgs), "--src_anno_path", str(anno),
           "--step", "256_512", "--device", "cpu"]
    return cmd, subprocess_env()


# ---- samples written one by one (the bad-input tests) -------------------------------------------------------


SQUARE = [[500, 300], [800, 300], [800, 600], [500, 600]]  # the red square of red_square_image


def red_square_image(height=900, width=1200):
    """:func:`red_square_scene`'s image alone: the red square at rows 300:600, columns 500:800 (:data:`SQUARE`)."""
    return red_square_scene(height, width)[0]


def write_samples(root, entries, images=None):
    """``root/imgs`` with ``images`` {name: BGR array} (default one red scene as scene.png) and
    ``root/anno.json`` of ``entries`` (dicts; missing keys from a valid sample on scene.png)."""
    imgs = root / "imgs"
    imgs.mkdir(exist_ok=True)
    for name, image in (images or {"scene.png": red_square_image()}).items():
        cv2.imwrite(str(imgs / name), image)
    anno = [{"caption": f"a red building {i}", "jpg_name": "scene.png", "points": [SQUARE], **entry}
            for i, entry in enumerate(entries)]
    (root / "anno.json").write_text(json.dumps(anno))
    return root / "anno.json"


def generate(root, *extra, encoder="toy_encoders:RednessEncoder", options=None):
    """``selo-generate`` (:func:`predict.cli.generate.main`) with a toy encoder on ``root``'s testset
    (:func:`write_samples`), the vector cache off: (exit code, cache folder)."""
    (root / "encoder.yaml").write_text(yaml.safe_dump(options or {"model": {"name": encoder, "batch_size": 16}}))
    cache = root / "cache"
    code = generate_main(["--yaml_path", str(root / "encoder.yaml"), "--cache_path", str(cache),
                           "--src_data_path", str(root / "imgs"), "--src_anno_path", str(root / "anno.json"),
                           "--step", "256_512", "--device", "cpu", "--no_vector_cache", *extra])
    return code, cache


def results(cache):
    """``metrics.json`` of ``cache``: ({idx: record}, {idx: error line}, mean)."""
    data = json.loads((cache / "metrics.json").read_text())
    return {s["idx"]: s for s in data["samples"]}, {e["idx"]: e["error"] for e in data["errors"]}, data["mean"]


def evaluate(root, cache, *extra):
    """``selo-evaluate`` (:func:`predict.cli.evaluate.main`) of ``cache`` against ``root/anno.json``."""
    return evaluate_main(["--cache_path", str(cache), "--src_anno_path", str(root / "anno.json"), *extra])


# ---- files rewritten in place, and an encoder plug-in to edit (the trust tests) -----------------------------


def wait_for(ask, timeout=60):
    """The first true value of ``ask()``, asked every 20 ms for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := ask()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Replace a file's bytes with others of the same length and put its mtime back (``touch -r``)."""
    stat = path.stat()
    assert len(data) == stat.st_size
    time.sleep(0.02)  # past the clock's tick: the rewrite gets a ctime of its own
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


PLUGIN = textwrap.dedent('''
    import os
    import numpy as np
    from predict.encoders.base import EncoderSpecModel
    import trust_helper

    class GainEncoder(EncoderSpecModel):
        """Redness and greenness of a tile, times a gain read from the weights file; a query naming red asks
        for the first, any other for the second; the sign file flips the scores."""
        name = "trust_gain"

        def __init__(self, options, device=None):
            super().__init__(options, device)
            self.gain = float(np.load(options["model"]["weights"])[0])
            folder = os.path.dirname(options["_yaml_path"])
            self.sign = float(open(os.path.join(folder, options["model"]["sign_file"])).read())

        def encode_batch(self, tiles):
            t = np.asarray(tiles, dtype=np.float32) / 255
            red = (t[..., 0] - 0.5 * (t[..., 1] + t[..., 2])).mean(axis=(1, 2))
            green = (t[..., 1] - 0.5 * (t[..., 0] + t[..., 2])).mean(axis=(1, 2))
            return np.stack([red + trust_helper.MIX * green, green + trust_helper.MIX * red], axis=1) * self.gain

        def text_encoder(self, text):
            return np.array([1.0, 0.0] if "red" in text else [0.0, 1.0], dtype=np.float32)

        def cosine_sim(self, image_vectors, text_vector):
            return self.sign * np.asarray(image_vectors, np.float64) @ np.asarray(text_vector, np.float64)
''')


class EditableTestset:
    """Two small scenes (a red and a green square) in ``root/data``, and an encoder plug-in with a weights
    file, a helper module and a file its yaml names by a relative path, in ``root`` (the plug-in's folder:
    every file directly in it is part of the encoder's identity)."""

    def __init__(self, root: Path, importable_module):
        self.root = root
        self.imgs = root / "data" / "imgs"
        self.anno_path = root / "data" / "anno.json"
        self.imgs.mkdir(parents=True)
        self.write_scene("a.png", box=(100, 200, 150, 250), colour=(30, 30, 220))
        self.write_scene("b.png", box=(50, 150, 60, 160), colour=(30, 220, 30))
        self.anno = [
            {"caption": "a red roof", "jpg_name": "a.png", "points": [[[150, 100], [250, 100], [250, 200], [150, 200]]]},
            {"caption": "a green lawn", "jpg_name": "b.png", "points": [[[60, 50], [160, 50], [160, 150], [60, 150]]]},
        ]
        self.write_anno()
        self.plugin_dir = importable_module("trust_plugin", PLUGIN)
        importable_module("trust_helper", "MIX = 0.0\n")
        self.weights = root / "weights.npy"
        np.save(self.weights, np.array([1.0]))
        (root / "sign.txt").write_text("1.0")
        self.yaml = root / "encoder.yaml"
        self.yaml.write_text(yaml.safe_dump({"model": {"name": "trust_plugin:GainEncoder", "batch_size": 16,
                                                       "weights": "weights.npy", "sign_file": "sign.txt"}}))

    def write_scene(self, name, box, colour, height=300, width=400):
        rng = np.random.default_rng(len(name))
        image = rng.integers(90, 140, size=(height, width, 3), dtype=np.uint8)
        image[box[0]:box[1], box[2]:box[3]] = colour
        cv2.imwrite(str(self.imgs / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 0])  # size fixed by the pixels

    def write_anno(self):
        self.anno_path.write_text(json.dumps(self.anno))

    def generate(self, cache, *extra):
        """``selo-generate`` into ``cache``: (exit code, metrics.json or None, this run's log lines)."""
        for name in ("trust_plugin", "trust_helper"):  # the code on disk now, as a new process would import it
            sys.modules.pop(name, None)
        log = cache / "log.txt"
        before = log.read_text(encoding="utf-8") if log.is_file() else ""
        code = generate_main(["--yaml_path", str(self.yaml), "--cache_path", str(cache),
                             "--src_data_path", str(self.imgs), "--src_anno_path", str(self.anno_path),
                             "--step", "64_128", "--device", "cpu", "--no_report", "--workers", "1", *extra])
        metrics = json.loads((cache / "metrics.json").read_text()) if (cache / "metrics.json").is_file() else None
        return code, metrics, log.read_text(encoding="utf-8")[len(before):] if log.is_file() else ""
