"""A plug-in's identity is its whole folder or package (issue 32): what its import statements name is not
enough. Weights found through ``__file__`` and a module loaded with ``importlib`` are inputs of its vectors:
edit either, and a rerun of ``selo-localise`` into the same folder equals a fresh run in a new folder
(before, it encoded no tile and its map was up to 241 gray levels off)."""
import json

import cv2
import numpy as np
import pytest
import rasterio
import yaml

from predict import provenance
from predict.cli.localise import main as localise_main
from predict.encoders.registry import load_encoder

from helpers import red_square_scene

PLUGIN = '''
import importlib
import os

import numpy as np

from predict.encoders.base import EncoderSpecModel


class HiddenInputs(EncoderSpecModel):
    """Redness times a gain read from a file beside the module (no yaml key names it), plus a weight from a
    module loaded by name at run time (no import statement names it)."""

    name = "hidden_inputs"

    def image_encoder(self, tiles):
        with open(os.path.join(os.path.dirname(__file__), "gain.txt")) as f:
            gain = float(f.read())
        mix = importlib.import_module("{helper}").MIX
        tiles = np.asarray(tiles, dtype=np.float32) / 255
        red = tiles[..., 0] - 0.5 * (tiles[..., 1] + tiles[..., 2])
        green = tiles[..., 1] - 0.5 * (tiles[..., 0] + tiles[..., 2])
        return np.stack([gain * red.mean(axis=(1, 2)) + mix * green.mean(axis=(1, 2)),
                         np.ones(len(tiles), np.float32)], axis=1)

    def text_encoder(self, text):
        return np.array([1.0, 0.0], dtype=np.float32)

    def cosine_sim(self, image_vectors, text_vector):
        return np.asarray(image_vectors, dtype=np.float64)[:, 0]
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plug-in folder (module, its data file, a module it loads by name) and a scene with a red and a
    green square; ``reload()`` drops the modules, as a new process would import them."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "hidden_plugin.py").write_text(PLUGIN.format(helper="hidden_helper"))
    (folder / "hidden_helper.py").write_text("MIX = 0.0\n")
    (folder / "gain.txt").write_text("1.0")
    (folder / "encoder.yaml").write_text(yaml.safe_dump({"model": {"name": "hidden_plugin:HiddenInputs"}}))
    monkeypatch.syspath_prepend(str(folder))
    image, _ = red_square_scene(400, 512, (100, 200, 300, 400))
    image[250:350, 50:150] = (30, 220, 30)
    cv2.imwrite(str(tmp_path / "scene.png"), image)

    def reload():
        import sys

        for name in ("hidden_plugin", "hidden_helper"):
            sys.modules.pop(name, None)
        provenance.digests._memo.clear()

    yield folder, tmp_path / "scene.png", reload
    reload()


def run(yaml_path, image, out):
    code = localise_main(["--yaml_path", str(yaml_path), "--image", str(image), "--query", "a red roof",
                          "--out", str(out), "--step", "128", "--device", "cpu"])
    summary = json.loads((out / "summary.json").read_text())
    with rasterio.open(out / summary["results"][0]["files"]["probmap"]) as src:
        return code, summary["runs"][-1], src.read(1)


@pytest.mark.parametrize("edit", ["data file found through __file__", "module loaded with importlib"])
def test_an_edit_to_any_file_of_the_plugin_is_a_new_encoder(plugin, tmp_path, edit):
    folder, image, reload = plugin
    yaml_path = folder / "encoder.yaml"
    reload()
    before = provenance.vectors_key(load_encoder(str(yaml_path), device="cpu"))
    code, _, first = run(yaml_path, image, tmp_path / "out")
    assert code == 0
    if edit.startswith("data"):
        (folder / "gain.txt").write_text("-1.0")
    else:
        (folder / "hidden_helper.py").write_text("MIX = 2.0\n")
    reload()
    assert provenance.vectors_key(load_encoder(str(yaml_path), device="cpu")) != before
    code, rerun, resumed = run(yaml_path, image, tmp_path / "out")
    reload()
    _, _, fresh = run(yaml_path, image, tmp_path / "fresh")
    assert code == 0 and np.array_equal(resumed, fresh) and not np.array_equal(resumed, first)


def test_a_folder_named_like_a_preset_where_the_command_runs_is_no_input(tmp_path, monkeypatch):
    """Yaml strings are resolved as the encoder resolves them (the yaml's folder, then the package's), never
    against the current folder: a folder ``demo`` there does not change the ``demo`` preset's identity."""
    before = provenance.vectors_key(load_encoder("demo", device="cpu"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "anything.txt").write_text("x")
    (tmp_path / "demo_encoder").write_text("x")
    assert provenance.vectors_key(load_encoder("demo", device="cpu")) == before
