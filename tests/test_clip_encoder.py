"""The open_clip encoder against open_clip itself: the same randomly initialised ViT-B-32, saved in each
checkpoint format the CLIP-family projects publish, loaded through ``load_encoder`` from a yaml."""
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import open_clip
import pytest
import torch
import yaml
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from evaluations import evaluate
from predict import localise
from predict.encoders.clip import pil_like_resize
from predict.io.jpeg import encode_jpeg
from predict.localisation.vectors import TileVectorStore
from predict.model_encoder import EncoderError, load_encoder
from predict.resources import package_path, project_root

from helpers import GENERATE_SCRIPT, subprocess_env

ARCH = "ViT-B-32"
QUERIES = ["many airplanes parked in the airport", "a river passes through the green forest"]
PRESET_DIR = package_path("options", "CLIP")


def textured_tiles(count: int, side: int = 256, seed: int = 0) -> np.ndarray:
    """uint8 RGB tiles with smooth structure and pixel noise (bicubic overshoot gets clipped)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)
    smooth = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_CUBIC) for c in coarse]).astype(int)
    return np.clip(smooth + rng.integers(-40, 41, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return open_clip.create_model(ARCH, pretrained=None).eval()


@pytest.fixture(scope="module")
def tiles():
    return textured_tiles(3)


@pytest.fixture(scope="module")
def library_vectors(clip_model, tiles):
    """open_clip's own route: PIL image -> the model's transform -> encode_image / tokenizer -> encode_text."""
    preprocess = image_transform_v2(PreprocessCfg(**clip_model.visual.preprocess_cfg), is_train=False)
    tokenizer = open_clip.get_tokenizer(ARCH)
    with torch.no_grad():
        images = torch.stack([preprocess(Image.fromarray(t)) for t in tiles])
        image_vectors = clip_model.encode_image(images, normalize=True).numpy()
        text_vectors = clip_model.encode_text(tokenizer(QUERIES), normalize=True).numpy()
    return image_vectors, text_vectors


def write_yaml(path: Path, weights, **model_options) -> Path:
    model = {"name": "open_clip", "architecture": ARCH, "weights": str(weights), "batch_size": 2, **model_options}
    path.write_text(yaml.safe_dump({"model": model}))
    return path


@pytest.fixture(scope="module")
def plain_weights(clip_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "plain.pt"
    torch.save(clip_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def plain_encoder(plain_weights):
    return load_encoder(write_yaml(plain_weights.parent / "clip.yaml", plain_weights), device="cpu")


CHECKPOINT_FORMATS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd},
    "module_prefix": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
}


@pytest.mark.parametrize("fmt", sorted(CHECKPOINT_FORMATS))
def test_vectors_match_open_clip(fmt, clip_model, tiles, library_vectors, tmp_path):
    weights = tmp_path / f"{fmt}.pt"
    torch.save(CHECKPOINT_FORMATS[fmt](clip_model.state_dict()), weights)
    encoder = load_encoder(write_yaml(tmp_path / "clip.yaml", weights), device="cpu")
    image_reference, text_reference = library_vectors

    for query, reference in zip(QUERIES, text_reference):
        vector = encoder.text_encoder(query)
        assert vector.dtype == np.float32 and vector.shape == reference.shape
        np.testing.assert_allclose(vector, reference, atol=1e-5)

    vectors = encoder.image_encoder(tiles)  # 3 tiles with batch_size 2: two forward passes
    assert vectors.dtype == np.float32 and vectors.shape == image_reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.all(np.sum(vectors * image_reference, axis=1) >= 0.999)


def test_safetensors_file_loads(clip_model, library_vectors, tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(weights))
    encoder = load_encoder(write_yaml(tmp_path / "clip.yaml", weights), device="cpu")
    np.testing.assert_allclose(encoder.text_encoder(QUERIES[1]), library_vectors[1][1], atol=1e-5)


def test_real_tile_matches_open_clip(clip_model, plain_encoder, shared):
    tile = cv2.cvtColor(cv2.imread(str(shared("slm", "sparseresidential_3814.tif"))), cv2.COLOR_BGR2RGB)
    preprocess = image_transform_v2(PreprocessCfg(**clip_model.visual.preprocess_cfg), is_train=False)
    with torch.no_grad():
        reference = clip_model.encode_image(preprocess(Image.fromarray(tile))[None], normalize=True).numpy()
    assert float(np.sum(plain_encoder.image_encoder(tile[None]) * reference)) >= 0.999


def test_batched_resize_is_within_one_grey_level_of_pil():
    tiles = textured_tiles(4, seed=1)
    ours = pil_like_resize(torch.from_numpy(tiles).permute(0, 3, 1, 2).float(), 224).permute(0, 2, 3, 1).numpy()
    pil = np.stack([np.asarray(Image.fromarray(t).resize((224, 224), Image.BICUBIC)) for t in tiles])
    difference = np.abs(ours - pil)
    assert difference.max() <= 1 and np.mean(difference > 0) < 0.01


def test_cosine_sim_is_the_originals_mean_product(plain_encoder, tiles):
    vectors, text = plain_encoder.image_encoder(tiles), plain_encoder.text_encoder(QUERIES[0])
    np.testing.assert_allclose(plain_encoder.cosine_sim(vectors, text), vectors @ text / vectors.shape[1], atol=1e-7)


@pytest.fixture(scope="module")
def mismatched_weights(clip_model, tmp_path_factory):
    """The model's weights without ``logit_scale`` and with one foreign key."""
    state = dict(clip_model.state_dict())
    del state["logit_scale"]
    state["extra_head.weight"] = torch.zeros(2, 2)
    path = tmp_path_factory.mktemp("mismatch") / "mismatch.pt"
    torch.save(state, path)
    return path


def test_strict_mismatch_is_a_clear_error(mismatched_weights, tmp_path):
    with pytest.raises(EncoderError) as error:
        load_encoder(write_yaml(tmp_path / "clip.yaml", mismatched_weights), device="cpu")
    message = str(error.value)
    assert "\n" not in message and str(mismatched_weights) in message
    assert "1 missing keys (first: logit_scale)" in message
    assert "1 unexpected keys (first: extra_head.weight)" in message


def test_non_strict_reports_missing_and_unexpected(mismatched_weights, library_vectors, tmp_path):
    with pytest.warns(UserWarning, match="missing keys.*unexpected keys"):
        encoder = load_encoder(write_yaml(tmp_path / "clip.yaml", mismatched_weights, strict=False), device="cpu")
    assert encoder.missing_keys == ["logit_scale"] and encoder.unexpected_keys == ["extra_head.weight"]
    np.testing.assert_allclose(encoder.text_encoder(QUERIES[0]), library_vectors[1][0], atol=1e-5)


def test_other_architecture_is_a_shape_error(plain_weights, tmp_path):
    with pytest.raises(EncoderError, match="shape mismatches.*conv1.weight"):
        yaml_path = write_yaml(tmp_path / "clip.yaml", plain_weights, architecture="ViT-B-16", strict=False)
        load_encoder(yaml_path, device="cpu")


def test_missing_weight_file_names_file_and_host(tmp_path):
    missing = tmp_path / "RS5M_ViT-B-32.pt"
    yaml_path = write_yaml(tmp_path / "clip.yaml", missing, source="the Hugging Face hub repo Zilun/GeoRSCLIP")
    expected = re.escape(f"{missing}: ViT-B-32 weight file not found; download it from the Hugging Face hub repo "
                         "Zilun/GeoRSCLIP")
    with pytest.raises(EncoderError, match=expected):
        load_encoder(yaml_path, device="cpu")


@pytest.mark.parametrize("architecture, problem", [
    ("ViT-B-32-nonexistent", "not an open_clip model name"),
    ("xlm-roberta-base-ViT-B-32", "needs a Hugging Face download"),
    ("ViT-B-16-SigLIP", "needs a Hugging Face download"),
])
def test_architectures_that_cannot_run_offline_are_refused(architecture, problem, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, weights)
    with pytest.raises(EncoderError, match=problem):
        load_encoder(write_yaml(tmp_path / "clip.yaml", weights, architecture=architecture), device="cpu")


def test_bad_precision_is_an_error_and_fp16_on_cpu_runs_fp32(plain_weights, tmp_path):
    with pytest.raises(EncoderError, match="model.precision 'fp8'"):
        load_encoder(write_yaml(tmp_path / "clip.yaml", plain_weights, precision="fp8"), device="cpu")
    with pytest.warns(UserWarning, match="fp16 needs CUDA; running fp32"):
        encoder = load_encoder(write_yaml(tmp_path / "clip.yaml", plain_weights, precision="fp16"), device="cpu")
    assert encoder.precision == "fp32"


@pytest.mark.parametrize("bad", [np.zeros((1, 256, 256, 3), np.float32), np.zeros((256, 256, 3), np.uint8),
                                 np.zeros((1, 256, 200, 3), np.uint8)],
                         ids=["float", "no_batch_axis", "not_square"])
def test_bad_tiles_are_a_one_line_error(bad, plain_encoder):
    with pytest.raises(ValueError, match=r"expected uint8 RGB tiles \(N, S, S, 3\)"):
        plain_encoder.image_encoder(bad)


def test_no_tiles_give_no_vectors(plain_encoder):
    assert plain_encoder.image_encoder(np.zeros((0, 256, 256, 3), np.uint8)).shape == (0, 512)


def test_bf16_on_cpu_stays_close(plain_weights, tiles, library_vectors, tmp_path):
    encoder = load_encoder(write_yaml(tmp_path / "clip.yaml", plain_weights, precision="bf16"), device="cpu")
    assert encoder.text_encoder(QUERIES[0]).dtype == np.float32
    assert np.all(np.sum(encoder.image_encoder(tiles) * library_vectors[0], axis=1) >= 0.999)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_cuda_stays_close(precision, plain_weights, tiles, library_vectors, tmp_path):
    encoder = load_encoder(write_yaml(tmp_path / "clip.yaml", plain_weights, precision=precision), device="cuda")
    assert np.all(np.sum(encoder.image_encoder(tiles) * library_vectors[0], axis=1) >= 0.99)


@pytest.mark.parametrize("preset", sorted(PRESET_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_name_a_local_file_and_its_host(preset):
    model = yaml.safe_load(preset.read_text())["model"]
    assert model["name"] == "open_clip" and open_clip.get_model_config(model["architecture"]) is not None
    assert model["weights"].startswith("predict/checkpoints/") and model["precision"] in ("fp32", "fp16", "bf16")
    if not (project_root() / model["weights"]).exists():  # where the yaml reader looks: the package's folder
        expected = (re.escape(f"{project_root() / model['weights']}: ") + ".*"
                    + re.escape(f"download it from {model['source']}"))
        with pytest.raises(EncoderError, match=expected):
            load_encoder(preset, device="cpu")


def test_presets_cover_the_published_models():
    stems = {p.stem for p in PRESET_DIR.glob("*.yaml")}
    assert {"CLIP_ViT-B-32_OpenAI", "RemoteCLIP_RN50", "RemoteCLIP_ViT-B-32", "RemoteCLIP_ViT-L-14",
            "GeoRSCLIP_ViT-B-32", "GeoRSCLIP_ViT-H-14", "SkyCLIP_ViT-L-14"} <= stems


def test_v1_pipeline_runs_with_the_clip_encoder(plain_weights, tmp_path):
    """``predict/generate_selo.py`` with the encoder in a subprocess: its map is the library's for that encoder
    (on the run's own tile vectors, kept on disk under the key of the encoder loaded here)."""
    yaml_path = write_yaml(tmp_path / "clip.yaml", plain_weights, batch_size=16)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    scene = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (800, 600), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(images / "0.jpg"), scene)
    anno = tmp_path / "anno.json"
    polygon = [[100, 100], [400, 120], [380, 420], [120, 400]]
    anno.write_text(json.dumps([{"caption": QUERIES[0], "jpg_name": "0.jpg", "points": [polygon]}]))
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, str(GENERATE_SCRIPT), "--yaml_path", str(yaml_path), "--cache_path", str(cache),
         "--src_data_path", str(images), "--src_anno_path", str(anno), "--step", "256_512", "--device", "cpu"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    probmap = cv2.imread(str(cache / "probmap_0.jpg"), cv2.IMREAD_GRAYSCALE)
    encoder = load_encoder(yaml_path, device="cpu")
    store = TileVectorStore(encoder, str(cache / "tile_vectors"))  # the run's vectors: no tile encoded again
    expected = localise(images / "0.jpg", QUERIES[0], encoder, steps="256_512", vectors=store)
    assert store.tiles_encoded == 0 and store.tiles_requested > 0  # the vectors are those of this encoder's key
    assert np.array_equal(probmap, cv2.imdecode(encode_jpeg(expected), cv2.IMREAD_GRAYSCALE))
    metrics = json.loads((cache / "metrics.json").read_text())
    assert metrics["errors"] == [] and len(metrics["samples"]) == 1
    assert metrics["samples"][0]["Rmi"] == pytest.approx(evaluate(probmap, [polygon])["Rmi"], abs=1e-9)
