"""The demo encoder: loading through the encoder contract, shapes, bad checkpoints, and that the
committed checkpoint matches captions to the tiles of held-out synthetic scenes; the v1 pipeline end
to end on a tiny generated scene."""
import json
import re

import cv2
import numpy as np
import pytest
import torch

from evaluations import evaluate
from predict import localise
from predict.cli.generate import main as generate_main
from predict.core.tiling import cut_tiles
from predict.demo.make_testset import write_testset
from predict.demo.synthetic import generate_scene, make_caption
from predict.encoders.demo_text import CAPTIONS, tokenize
from predict.io.jpeg import encode_jpeg
from predict.layers.demo_net import POOL, POOL_CHUNK, pool_tiles
from predict.localisation.maps import query_vector
from predict.model_encoder import EncoderError, load_encoder
from predict.resources import package_path

TRAINED_YAML = package_path("options", "demo", "demo_encoder.yaml")
RANDOM_YAML = package_path("options", "demo", "demo_random.yaml")
HELD_OUT_SEEDS = [[77, 0], [77, 1], [78, 0], [78, 1], [79, 0]]  # neither the training seed nor the demo testset's


@pytest.fixture(scope="module")
def trained():
    return load_encoder(TRAINED_YAML, device="cpu")


def object_tiles(scene, side=512):
    """One ``side`` tile centred on each object (clipped into the image), as the pipeline cuts them."""
    height, width = scene.labels.shape
    boxes = []
    for obj in scene.objects:
        cx, cy = obj.polygon.mean(0)
        x = int(np.clip(cx - side / 2, 0, width - side))
        y = int(np.clip(cy - side / 2, 0, height - side))
        boxes.append((y, y + side, x, x + side))
    return cut_tiles(cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR), boxes, 256)


def test_shapes_and_contract(trained):
    tiles = np.random.default_rng(0).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    vectors = trained.image_encoder(tiles)
    text = trained.text_encoder("a green football field surrounded by a red track.")
    assert vectors.shape == (5, 128) and vectors.dtype == np.float32
    assert text.shape == (128,) and text.dtype == np.float32
    assert trained.cosine_sim(vectors, text).shape == (5,)
    assert trained.image_encoder(tiles[:0]).shape == (0, 128)


def test_batches_give_the_same_vectors(trained):
    tiles = np.random.default_rng(1).integers(0, 256, (7, 256, 256, 3), dtype=np.uint8)
    whole = trained.image_encoder(tiles)
    trained.batch_size, saved = 3, trained.batch_size
    try:
        np.testing.assert_allclose(trained.image_encoder(tiles), whole, rtol=1e-5, atol=1e-5)
    finally:
        trained.batch_size = saved


@pytest.mark.parametrize("count", [1, POOL_CHUNK, 2 * POOL_CHUNK + 1])
def test_pooling_by_chunks_equals_pooling_the_whole_batch(count):
    tiles = torch.from_numpy(np.random.default_rng(count).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8))
    whole = torch.nn.functional.avg_pool2d(tiles.permute(0, 3, 1, 2).to(torch.float32).div_(255), POOL)
    pooled = pool_tiles(tiles)
    assert torch.equal(pooled, whole)  # bit for bit
    assert pooled.stride() == whole.stride()  # the same memory layout, so the convolutions run the same way


def test_unknown_words_do_not_fail(trained):
    assert np.isfinite(trained.text_encoder("zebras grazing on a glacier")).all()


def test_bad_tiles_are_a_clear_error(trained):
    with pytest.raises(ValueError, match="uint8 RGB tiles"):
        trained.image_encoder(np.zeros((2, 128, 128, 3), np.uint8))


def test_random_weights_warn_and_are_reproducible():
    with pytest.warns(UserWarning, match="random weights"):
        a = load_encoder(RANDOM_YAML, device="cpu")
    with pytest.warns(UserWarning):
        b = load_encoder(RANDOM_YAML, device="cpu")
    np.testing.assert_array_equal(a.text_encoder("a gray parking lot"), b.text_encoder("a gray parking lot"))


def test_checkpoint_without_vocabulary_is_refused(tmp_path, trained):
    path = tmp_path / "no_vocab.pth"
    torch.save({"model": trained.network.state_dict()}, path)
    with pytest.raises(EncoderError, match="no 'vocab'"):
        load_encoder(TRAINED_YAML, device="cpu", checkpoint=str(path))


def test_checkpoint_of_another_architecture_is_refused(tmp_path, trained):
    path = tmp_path / "other.pth"
    state = dict(trained.network.state_dict())
    state["image_head.weight"] = torch.zeros(3, 3)
    torch.save({"model": state, "vocab": trained.vocab}, path)
    with pytest.raises(EncoderError, match="does not match the architecture"):
        load_encoder(TRAINED_YAML, device="cpu", checkpoint=str(path))


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        load_encoder(TRAINED_YAML, device="cpu", checkpoint=str(tmp_path / "absent.pth"))


def test_trained_checkpoint_matches_captions_to_their_tiles(trained):
    # For each object of held-out scenes, its caption should score its own tile above the tiles of the
    # other kinds in the same scene.
    rng = np.random.default_rng(0)
    wins, total, kinds_seen = 0, 0, set()
    for seed in HELD_OUT_SEEDS:
        scene = generate_scene(seed, 2400, 2400)
        vectors = trained.image_encoder(object_tiles(scene))
        kinds = [o.kind for o in scene.objects]
        for k, obj in enumerate(scene.objects):
            scores = trained.cosine_sim(vectors, trained.text_encoder(make_caption(rng, obj.kind, obj.attributes)))
            others = [s for s, kind in zip(scores, kinds) if kind != obj.kind]
            wins += bool(others) and scores[k] > max(others)
            total += bool(others)
        kinds_seen.update(kinds)
    assert total >= 20 and len(kinds_seen) >= 8
    assert wins / total >= 0.85, f"caption ranked its own tile first in {wins} of {total} cases"


def test_v1_pipeline_end_to_end_on_a_tiny_scene(tmp_path, trained):
    annotations = write_testset(str(tmp_path / "data"), 11, [(1100, 1300, 2)])
    cache = tmp_path / "cache"
    rc = generate_main(["--yaml_path", str(TRAINED_YAML), "--cache_path", str(cache),
                        "--src_data_path", str(tmp_path / "data/imgs"),
                        "--src_anno_path", str(tmp_path / "data/annotations/anno.json"), "--device", "cpu"])
    assert rc == 0
    metrics = json.loads((cache / "metrics.json").read_text())
    records = {sample["idx"]: sample for sample in metrics["samples"]}
    assert sorted(records) == list(range(len(annotations))) and len(annotations) >= 1
    indicators = ("Rsu", "Ras", "Rda", "Rmi")
    for idx, sample in enumerate(annotations):
        # each map is the library's for that caption, and each record the evaluator's numbers on that map
        probmap = cv2.imread(str(cache / f"probmap_{idx}.jpg"), cv2.IMREAD_GRAYSCALE)
        expected = localise(tmp_path / "data/imgs" / sample["jpg_name"], sample["caption"], trained)
        assert expected.shape == (1100, 1300)
        assert np.array_equal(probmap, cv2.imdecode(encode_jpeg(expected), cv2.IMREAD_GRAYSCALE))
        values = evaluate(probmap, sample["points"])
        assert {k: records[idx][k] for k in indicators} == pytest.approx({k: values[k] for k in indicators}, abs=1e-9)
    for k in indicators:
        assert metrics["mean"][k] == pytest.approx(np.mean([records[idx][k] for idx in records]), abs=1e-9)


def test_a_word_with_non_ascii_letters_is_one_word_listed_as_unknown(trained):
    """Not the ASCII fragments around its letters: "greenéfield" was read as the known "green" and "field"."""
    assert tokenize("A greenéfield, a brïdge") == ["a", "greenéfield", "a", "brïdge"]
    assert trained.unknown_words("a greenéfield near the brïdge") == ["greenéfield", "brïdge"]
    with pytest.warns(UserWarning, match=r"word\(s\) the demo encoder does not know, read as <unk>: brïdge$"):
        query_vector(trained, "a white brïdge over the river")


def test_ascii_text_gives_the_words_it_always_gave():
    rng = np.random.default_rng(0)
    texts = ["".join(map(chr, rng.integers(0, 128, 60))) for _ in range(300)] + ["".join(map(chr, range(128)))]
    texts += [template for templates in CAPTIONS.values() for template in templates]
    assert all(tokenize(text) == re.findall(r"[a-z]+", text.lower()) for text in texts)
