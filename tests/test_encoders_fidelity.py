"""AMFMN and LW-MCR through ``load_encoder`` reproduce what the ORIGINAL code gives for the fixture checkpoints.

The checkpoints are generated here, in a temporary folder, by ../shared/reference/model/make_fixture_checkpoint.py
(seed 1, digest checked); every expected number comes from ../shared/reference/model/expected_dev.json.
"""
import importlib.util
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from predict.encoders.retrieval import normalize_tiles
from predict.layers.amfmn import AMFMN
from predict.layers.lw_mcr import LWMCR
from predict.model_encoder import EncoderError, load_encoder

from helpers import shared_path

MODELS = ("AMFMN", "LW_MCR")


@pytest.fixture(scope="module")
def expected():
    with open(shared_path("reference", "model", "expected_dev.json"), encoding="utf-8") as f:
        return json.load(f)


def load_fixture_generator():
    path = shared_path("reference", "model", "make_fixture_checkpoint.py")
    spec = importlib.util.spec_from_file_location("make_fixture_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=MODELS)
def encoder(request, expected, tmp_path_factory):
    """The encoder built from a temp yaml: fixture checkpoint (digest checked), the shared RSITMD vocabulary."""
    name = request.param
    generator = load_fixture_generator()
    fixture = expected["fixture"]
    with open(shared_path("reference", "model", fixture[name]["spec"]), encoding="utf-8") as f:
        state = generator.make_state_dict(json.load(f), fixture["seed"])
    assert generator.state_dict_digest(state) == fixture[name]["state_dict_digest"]
    folder = tmp_path_factory.mktemp(name)
    torch.save({"model": state}, folder / "fixture.pth")
    del state
    options = {"model": {"name": name, "batch_size": 3},  # 3 < 7 images: the chunking is exercised
               "dataset": {"vocab_path": str(shared_path("slm", "rsitmd_splits_vocab.json"))},
               "optim": {"resume": "fixture.pth"}}  # relative to the yaml's folder
    (folder / "encoder.yaml").write_text(yaml.safe_dump(options))
    return load_encoder(folder / "encoder.yaml", device="cpu")


@pytest.mark.parametrize("name, network", [("AMFMN", AMFMN), ("LW_MCR", LWMCR)])
def test_state_dict_layout_is_the_official_one(name, network):
    with open(shared_path("reference", "model", f"{name}_state_dict_spec.json"), encoding="utf-8") as f:
        spec = json.load(f)
    model = network(spec["vocab"]["embedding_rows"])
    layout = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert layout == [(e["name"], e["shape"], e["dtype"]) for e in spec["keys"]]  # names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == spec["total_parameter_count"]


def original_tile(path):
    """The original's image preprocessing up to the tensor: PIL RGB, bilinear resize to 256x256."""
    return np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR))


@pytest.fixture(scope="module")
def dev_tiles(expected):
    return np.stack([original_tile(shared_path("reference", "model", image["file"])) for image in expected["images"]])


@pytest.fixture(scope="module")
def image_vectors(encoder, dev_tiles):
    return encoder.image_encoder(dev_tiles)


def test_input_tensor_probes(expected, dev_tiles):
    x = normalize_tiles(torch.from_numpy(dev_tiles.copy())).numpy().astype(np.float64)  # exact statistics
    for k, image in enumerate(expected["images"]):
        ref = image["input_tensor"]
        assert x[k].mean() == pytest.approx(ref["mean"], abs=1e-5)
        assert x[k].std() == pytest.approx(ref["std"], abs=1e-5)
        np.testing.assert_allclose(x[k].mean(axis=(1, 2)), ref["channel_means"], atol=1e-5)
        for c, y, col, value in ref["probes"]:
            assert x[k, c, y, col] == pytest.approx(value, abs=1e-5), (image["id"], c, y, col)


def test_image_vectors(encoder, expected, image_vectors):
    assert image_vectors.shape == (len(expected["images"]), 512) and image_vectors.dtype == np.float32
    reference = expected["models"][encoder.name]["image_vectors"]
    for vector, image in zip(image_vectors, expected["images"]):
        np.testing.assert_allclose(vector, reference[image["id"]], rtol=1e-4, atol=1e-5, err_msg=image["id"])


def test_token_ids(encoder, expected):
    for caption in expected["captions"]:
        assert encoder.token_ids(caption["text"]).tolist() == caption["token_ids"], caption["id"]


def test_text_vectors_and_refusals(encoder, expected):
    model = expected["models"][encoder.name]
    for caption in expected["captions"]:
        if caption["id"] in model["text_errors"]:
            with pytest.raises(EncoderError, match="needs at least"):
                encoder.text_encoder(caption["text"])
            continue
        vector = encoder.text_encoder(caption["text"])
        assert vector.shape == (512,) and vector.dtype == np.float32
        np.testing.assert_allclose(vector, model["text_vectors"][caption["id"]], rtol=1e-4, atol=1e-5,
                                   err_msg=caption["id"])
    assert set(model["text_errors"]) | set(model["text_vectors"]) == {c["id"] for c in expected["captions"]}


def test_similarities(encoder, expected, image_vectors):
    similarity = expected["models"][encoder.name]["similarity"]
    assert similarity["rows_image_ids"] == [image["id"] for image in expected["images"]]
    texts = {caption["id"]: caption["text"] for caption in expected["captions"]}
    for column, caption_id in enumerate(similarity["cols_caption_ids"]):
        reference = [row[column] for row in similarity["values"]]
        if reference[0] is None:
            continue  # the original's text encoder refused this caption (checked above)
        scores = encoder.cosine_sim(image_vectors, encoder.text_encoder(texts[caption_id]))
        np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-6, err_msg=caption_id)


def test_batching_does_not_change_vectors(encoder, dev_tiles, image_vectors):
    one_by_one = np.concatenate([encoder.image_encoder(tile[None]) for tile in dev_tiles[:3]])  # one chunk
    np.testing.assert_allclose(one_by_one, image_vectors[:3], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_stays_close_to_the_original(encoder, expected, dev_tiles, tmp_path):
    """``model.precision: bf16`` (autocast; the CPU runs it): vectors within cosine 0.999 of the reference."""
    options = {**encoder.options, "model": {**encoder.options["model"], "precision": "bf16"}}
    options.pop("_yaml_path")
    (tmp_path / "bf16.yaml").write_text(yaml.safe_dump(options))
    reduced = load_encoder(tmp_path / "bf16.yaml", device="cpu")
    assert reduced.precision == "bf16"
    reference = np.array([expected["models"][encoder.name]["image_vectors"][image["id"]] for image in expected["images"]])
    vectors = reduced.image_encoder(dev_tiles)
    assert vectors.dtype == np.float32
    cosine = np.sum(vectors * reference, axis=1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosine.min() > 0.999


def test_fp16_on_a_cpu_falls_back_to_fp32(encoder, tmp_path):
    options = {**encoder.options, "model": {**encoder.options["model"], "precision": "fp16"}}
    options.pop("_yaml_path")
    (tmp_path / "fp16.yaml").write_text(yaml.safe_dump(options))
    with pytest.warns(UserWarning, match="fp16 needs CUDA; running fp32"):
        assert load_encoder(tmp_path / "fp16.yaml", device="cpu").precision == "fp32"


def test_our_resnet18_is_torchvisions_key_for_key_and_bit_for_bit():
    """AMFMN's ResNet-18 is built here (torchvision's import costs 160 MB): the same keys, shapes and
    features as ``torchvision.models.resnet18`` with the same weights."""
    from torchvision.models import resnet18

    from predict.layers.resnet import ResNet18

    theirs = resnet18(weights=None).eval()
    ours = ResNet18().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(ours(images), theirs(images))
        assert torch.equal(ours.layer2(ours.layer1(images[:, :1].repeat(1, 64, 1, 1))),
                           theirs.layer2(theirs.layer1(images[:, :1].repeat(1, 64, 1, 1))))
