"""Exported runtimes (:mod:`predict.encoders.runtimes`): the image network of the demo encoder, AMFMN (fixture
weights) and an open_clip ViT exported to ONNX and run by ONNX Runtime and OpenVINO, against torch on tiles
of a synthetic aerial scene; int8 models and their measured cosine; what is stored and how it is trusted;
the choice in the encoder's identity; and the commands that take ``--runtime``.

The suite runs with ``SELO_RUNTIME=torch`` (tests/conftest.py): each test here names its runtime.
"""
import json
import os
import re
import sys

import numpy as np
import pytest
import rasterio
import torch
import yaml

from predict.core.tiling import sample_tiles
from predict.demo.synthetic import generate_scene
from predict.encoders.base import EncoderError, EncoderSpecModel
from predict.encoders.registry import load_encoder
from predict.encoders.runtimes import EXPORT_MIN_COSINE, _fastest, cache_root
from predict.encoders.runtimes.exported import cosines
from predict.errors import StoredFileError
from predict.provenance import encoder_identity, record_path, vectors_key

from helpers import DEMO_YAML, shared_path

DEMO = str(DEMO_YAML)


def synthetic_bgr(seed, side):
    """A synthetic aerial scene (fields, roads, roofs), BGR as the pipeline reads images."""
    return np.ascontiguousarray(generate_scene([seed, 1], side, side).rgb[:, :, ::-1])


@pytest.fixture(scope="module")
def scene_bgr():
    return synthetic_bgr(7, 1200)


@pytest.fixture(scope="module")
def tiles():
    """128 tiles of two scenes, 64 spread over each: what a command samples of its images."""
    return sample_tiles((synthetic_bgr(seed, 2100) for seed in (7, 8)), 256, 128)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A runtime cache of the test's own."""
    monkeypatch.setenv("SELO_RUNTIME_CACHE", str(tmp_path / "runtimes"))
    return tmp_path / "runtimes"


def torch_vectors(yaml_path, tiles, **options):
    return load_encoder(yaml_path, device="cpu", runtime="torch", **options).image_encoder(tiles)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_demo_export_gives_torchs_vectors_and_its_own_identity(runtime, tiles, cache):
    encoder = load_encoder(DEMO, device="cpu", runtime=runtime, sample=tiles)
    assert encoder.runtime == runtime and encoder.runtime_choice["precision"] == "fp32"
    reference = torch_vectors(DEMO, tiles)
    assert cosines(encoder.image_encoder(tiles), reference).min() >= EXPORT_MIN_COSINE
    torch_encoder = load_encoder(DEMO, device="cpu", runtime="torch")
    assert encoder_identity(encoder)["runtime"]["runtime"] == runtime
    assert encoder_identity(torch_encoder)["runtime"] == {"runtime": "torch", "precision": "fp32"}
    assert vectors_key(encoder) != vectors_key(torch_encoder)  # never served each other's vectors


def test_the_export_is_stored_once_verified_and_made_again_when_damaged(tiles, cache, caplog):
    load_encoder(DEMO, device="cpu", runtime="onnxruntime", sample=tiles)
    [folder] = [cache / name for name in os.listdir(cache)]
    model = folder / "model.onnx"
    assert os.path.exists(record_path(model)) and (folder / "export.json").exists()
    stamp = os.stat(model).st_mtime_ns
    again = load_encoder(DEMO, device="cpu", runtime="onnxruntime")  # stored: no tiles needed, nothing exported
    assert os.stat(model).st_mtime_ns == stamp and again.runtime == "onnxruntime"

    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(StoredFileError, match=re.escape(str(model))):  # loaded lazily: the first batch checks
        again.image_encoder(tiles[:2])
    with caplog.at_level("WARNING", logger="selo"):
        fresh = load_encoder(DEMO, device="cpu", runtime="onnxruntime", sample=tiles)
    assert any(str(model) in r.getMessage() and "exporting again" in r.getMessage() for r in caplog.records)
    assert cosines(fresh.image_encoder(tiles), torch_vectors(DEMO, tiles)).min() >= EXPORT_MIN_COSINE


def test_auto_takes_the_fastest_checked_runtime_and_torch_without_tiles(tiles, cache, caplog):
    with caplog.at_level("INFO", logger="selo"):
        untried = load_encoder(DEMO, device="cpu", runtime="auto")
    assert untried.runtime == "torch" and not cache.exists()
    assert any("no tiles of the images at hand" in r.getMessage() for r in caplog.records)
    chosen = load_encoder(DEMO, device="cpu", runtime="auto", sample=tiles)
    check = json.loads(next(cache.glob("*/export.json")).read_text())
    assert chosen.runtime == _fastest(check)
    assert load_encoder(DEMO, device="cpu", runtime="auto").runtime == chosen.runtime  # the stored choice, again


def test_fastest_counts_only_runtimes_that_passed():
    check = {"torch": {"tiles_per_s": 10.0}, "probe_tiles": 16,
             "onnxruntime": {"tiles_per_s": 30.0, "passed": False, "min_cosine": 0.9},
             "openvino": {"tiles_per_s": 20.0, "passed": True, "min_cosine": 1.0}}
    assert _fastest(check) == "openvino"
    check["openvino"]["passed"] = False
    assert _fastest(check) == "torch"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_is_calibrated_measured_logged_and_kept_in_the_identity(runtime, tiles, cache, caplog):
    with caplog.at_level("INFO", logger="selo"):
        encoder = load_encoder(DEMO, device="cpu", runtime=runtime, precision="int8", sample=tiles)
    measured = encoder.runtime_choice["int8"]
    assert encoder.precision == "int8" and measured["held_out_tiles"] == 32 and measured["calibration_tiles"] == 96
    lines = [r.getMessage() for r in caplog.records if "held-out tiles" in r.getMessage()]
    assert lines and f"mean {measured['mean_cosine']:.6f}" in lines[0]
    # the printed cosine is the one its vectors have on those tiles
    held_out = tiles[3::4]
    found = cosines(encoder.image_encoder(held_out), torch_vectors(DEMO, held_out))
    assert found.mean() == pytest.approx(measured["mean_cosine"], abs=2e-6)
    assert 0.99 < found.mean() < 1.0  # quantised: close, not equal
    assert encoder_identity(encoder)["precision"] == "int8"
    assert encoder_identity(encoder)["runtime"]["int8"] == measured
    fp32 = load_encoder(DEMO, device="cpu", runtime=runtime, sample=tiles)
    assert vectors_key(encoder) != vectors_key(fp32)


def test_int8_below_its_floor_is_refused_in_one_line(tiles, cache, tmp_path):
    options = yaml.safe_load(open(DEMO))  # its checkpoint's relative path resolves against the package
    options["model"]["int8_min_cosine"] = 0.9999999
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(options))
    with pytest.raises(EncoderError, match=r"^demo int8 on onnxruntime: cosine to fp32 on 32 held-out tiles .* "
                                           r"floor 0\.9999999\)?: below the floor; run it in fp32") as error:
        load_encoder(str(strict), device="cpu", runtime="onnxruntime", precision="int8", sample=tiles)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("runtime, precision, problem", [
    ("auto", "int8", "precision int8 runs on onnxruntime or openvino, not auto"),
    ("torch", "int8", "precision int8 runs on onnxruntime or openvino, not torch"),
    ("openvino", "bf16", "openvino runs fp32 or int8, not bf16"),
])
def test_impossible_combinations_are_one_line(runtime, precision, problem, cache):
    with pytest.raises(EncoderError, match=re.escape(problem)):
        load_encoder(DEMO, device="cpu", runtime=runtime, precision=precision)


def test_an_explicit_runtime_needs_tiles_to_check_its_export(cache):
    with pytest.raises(EncoderError, match="needs tiles of the images at hand to check its export"):
        load_encoder(DEMO, device="cpu", runtime="openvino")


def test_a_plugin_without_an_image_network_stays_on_torch(importable_module, tmp_path, tiles, cache):
    importable_module("plain_plugin", "import numpy as np\nfrom predict.encoders.base import EncoderSpecModel\n"
                                      "class Plain(EncoderSpecModel):\n    name = 'plain'\n"
                                      "    def encode_batch(self, tiles):\n"
                                      "        return tiles.reshape(len(tiles), -1)[:, :8].astype(np.float32)\n")
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "plain_plugin:Plain"}}))
    assert load_encoder(str(path), runtime="auto", sample=tiles).runtime == "torch"
    with pytest.raises(EncoderError, match=r"runtime onnxruntime needs the encoder's image network"):
        load_encoder(str(path), runtime="onnxruntime", sample=tiles)


def test_a_plugin_exposing_its_network_is_exported(importable_module, tmp_path, tiles, cache):
    importable_module("net_plugin", """
import numpy as np, torch
from predict.encoders.base import EncoderSpecModel

class Net(EncoderSpecModel):
    name = "net"
    def __init__(self, options=None, device=None):
        super().__init__(options, device)
        torch.manual_seed(0)
        self.network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(),
                                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    def image_network(self):
        return self.network
    def network_input(self, tiles):
        return torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div(255)
    def encode_batch(self, tiles):
        with torch.inference_mode():
            return self.network(self.network_input(tiles)).numpy()
""")
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "net_plugin:Net"}}))
    encoder = load_encoder(str(path), runtime="openvino", sample=tiles)
    reference = load_encoder(str(path), runtime="torch").image_encoder(tiles)
    assert encoder.runtime == "openvino" and cosines(encoder.image_encoder(tiles), reference).min() >= EXPORT_MIN_COSINE


def test_a_pinned_choice_runs_that_model_and_refuses_another_network(tiles, cache, tmp_path):
    driver = load_encoder(DEMO, device="cpu", runtime="openvino", precision="int8", sample=tiles)
    actor = load_encoder(DEMO, device="cpu", runtime_choice=driver.runtime_choice)  # no tiles: that very model
    assert vectors_key(actor) == vectors_key(driver)
    np.testing.assert_array_equal(actor.image_encoder(tiles[:8]), driver.image_encoder(tiles[:8]))
    options = yaml.safe_load(open(DEMO))
    options["optim"]["resume"] = None  # other weights: another network
    other = tmp_path / "random.yaml"
    other.write_text(yaml.safe_dump(options))
    with pytest.raises(EncoderError, match="of another network than demo now"):
        load_encoder(str(other), device="cpu", runtime_choice=driver.runtime_choice)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SELO_RUNTIME_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == str(tmp_path / "selo" / "runtimes")


@pytest.fixture(scope="module")
def amfmn_yaml(tmp_path_factory):
    spec = shared_path("reference", "model", "AMFMN_state_dict_spec.json")
    sys.path.insert(0, str(spec.parent))
    try:
        from make_fixture_checkpoint import make_state_dict
    finally:
        sys.path.remove(str(spec.parent))
    folder = tmp_path_factory.mktemp("amfmn")
    torch.save({"model": make_state_dict(json.loads(spec.read_text()), seed=5)}, folder / "AMFMN.tar")
    options = {"model": {"name": "AMFMN", "batch_size": 8, "embed": {"embed_dim": 512},
                         "multiscale": {"multiscale_input_channel": 3, "multiscale_output_channel": 1},
                         "seq2vec": {"dir_st": str(folder / "skipthoughts")}},
               "dataset": {"vocab_path": str(shared_path("slm", "rsitmd_splits_vocab.json"))},
               "optim": {"resume": str(folder / "AMFMN.tar")}}
    (folder / "amfmn.yaml").write_text(yaml.safe_dump(options))
    return str(folder / "amfmn.yaml")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_amfmn_exports_exactly_with_fixture_weights(runtime, amfmn_yaml, tiles, cache):
    encoder = load_encoder(amfmn_yaml, device="cpu", runtime=runtime, sample=tiles[:16])
    found = cosines(encoder.image_encoder(tiles[:16]), torch_vectors(amfmn_yaml, tiles[:16]))
    assert found.min() >= EXPORT_MIN_COSINE


def test_open_clip_vit_exports_outside_inference_mode(tmp_path, tiles, cache):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "open_clip", "architecture": "ViT-B-32",
                                              "weights": str(tmp_path / "vit.pt"), "batch_size": 8}}))
    encoder = load_encoder(str(path), device="cpu", runtime="onnxruntime", sample=tiles[:8])
    assert cosines(encoder.image_encoder(tiles[:8]), torch_vectors(str(path), tiles[:8])).min() >= EXPORT_MIN_COSINE


def test_clip_preprocessing_on_the_cpu_is_pils_within_1e4_of_the_batched_resize(tiles):
    from predict.encoders.clip import pil_like_resize, pil_resize

    batched = pil_like_resize(torch.from_numpy(tiles[:16]).permute(0, 3, 1, 2).float(), 224)
    by_pil = torch.from_numpy(pil_resize(tiles[:16], 224)).permute(0, 3, 1, 2).float()
    assert (batched - by_pil).abs().max() <= 2  # grey levels; the vectors below
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("RN50", pretrained=None).eval()
    with torch.inference_mode():
        a, b = (torch.nn.functional.normalize(model.encode_image((x / 255 - 0.45) / 0.27), dim=-1)
                for x in (batched, by_pil))
    assert float((a - b).abs().max()) < 1e-4


# ---- the commands --------------------------------------------------------------------------------------------


def write_scene(path, scene_bgr):
    rgb = np.moveaxis(scene_bgr[:, :, ::-1], -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8",
                       crs="EPSG:32633", transform=rasterio.transform.from_origin(500000, 5000000, 0.5, 0.5)) as dst:
        dst.write(rgb)


def test_selo_localise_names_its_runtime_and_maps_within_a_grey_level_of_torchs(scene_bgr, tmp_path, cache):
    from predict.cli.localise import main

    image = tmp_path / "scene.tif"
    write_scene(image, scene_bgr)
    maps = {}
    for runtime in ("torch", "openvino"):
        out = tmp_path / runtime
        assert main(["--yaml_path", DEMO, "--device", "cpu", "--runtime", runtime, "--image", str(image),
                     "--query", "a green football field", "--out", str(out)]) == 0
        with rasterio.open(out / "scene_q0_probmap.tif") as src:
            maps[runtime], tags = src.read(1).astype(float), src.tags()
        assert tags["runtime"] == runtime and tags["precision"] == "fp32"
    assert np.abs(maps["openvino"] - maps["torch"]).mean() < 1.0


def test_selo_generate_int8_logs_its_cosine_and_keeps_it_in_the_run_settings(scene_bgr, tmp_path, cache):
    import cv2

    from predict.cli.generate import main

    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), scene_bgr)
    (tmp_path / "anno.json").write_text(json.dumps([{"caption": "a green football field", "jpg_name": "a.png",
                                                      "points": [[[100, 100], [400, 100], [400, 400], [100, 400]]]}]))
    cache_path = tmp_path / "cache"
    assert main(["--yaml_path", DEMO, "--cache_path", str(cache_path), "--src_data_path", str(tmp_path / "imgs"),
                 "--src_anno_path", str(tmp_path / "anno.json"), "--step", "256_512", "--device", "cpu",
                 "--runtime", "onnxruntime", "--precision", "int8"]) == 0
    log = (cache_path / "log.txt").read_text()
    [line] = [line for line in log.splitlines() if "held-out tiles" in line]
    [settings] = json.loads((cache_path / "metrics.json").read_text())["settings"].values()
    settings = settings["encoder"]
    assert settings["precision"] == "int8" and settings["runtime"]["runtime"] == "onnxruntime"
    assert f"mean {settings['runtime']['int8']['mean_cosine']:.6f}" in line


def test_selo_check_encoder_reports_the_runtime(scene_bgr, tmp_path, cache, capsys):
    import cv2

    from predict.encoders.selfcheck import main

    cv2.imwrite(str(tmp_path / "scene.png"), scene_bgr)
    assert main(["--yaml_path", DEMO, "--image_path", str(tmp_path / "scene.png"), "--device", "cpu",
                 "--runtime", "openvino"]) == 0
    assert re.search(r"^Runtime: openvino fp32 \(export [0-9a-f]{16}\)$", capsys.readouterr().out, re.M)


def test_a_bad_yaml_runtime_is_one_line(tmp_path):
    options = yaml.safe_load(open(DEMO))
    options["model"]["runtime"] = "tensorrt"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(options))
    with pytest.raises(EncoderError, match=r"bad\.yaml: model\.runtime 'tensorrt' is not one of auto, torch, "):
        load_encoder(str(path))


def test_encoder_base_has_no_network_by_default():
    assert EncoderSpecModel().image_network() is None
