"""The encoder plug-in contract: an out-of-tree class by ``module:Class``, the checkpoint / vocabulary / yaml
messages, CPU-only loading, the self-check CLI, and the optional SkipThought initialisation."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
import yaml

from predict.encoders import selfcheck
from predict.layers.amfmn import GRU_DIM, WORD_DIM, UniSkip
from predict.layers.lw_mcr import LWMCR
from predict.model_encoder import EncoderError, EncoderSpecModel, load_encoder, main
from predict.provenance import vectors_key
from predict.resources import package_path, project_root

from helpers import REPO_ROOT, subprocess_env, write_testset

PLUGIN_SOURCE = textwrap.dedent('''
    import numpy as np
    from predict.model_encoder import EncoderSpecModel

    class MeanColour(EncoderSpecModel):
        """Mean RGB of a tile, scaled by the yaml's model.scale; scores by negative distance."""
        name = "mean_colour"

        def __init__(self, options, device):
            super().__init__(options, device)
            self.scale = float(options["model"]["scale"])

        def image_encoder(self, tiles):
            return tiles.reshape(len(tiles), -1, 3).mean(axis=1).astype(np.float32) * self.scale

        def text_encoder(self, text):
            return np.full(3, 128 * self.scale, np.float32)

        def cosine_sim(self, image_vectors, text_vector):
            return -np.linalg.norm(image_vectors - text_vector, axis=1)

    class NoText:
        def __init__(self, options, device):
            pass

        def image_encoder(self, tiles):
            return tiles
''')


def write_yaml(folder, options):
    path = folder / "encoder.yaml"
    path.write_text(yaml.safe_dump(options))
    return path


@pytest.fixture
def plugin_dir(importable_module):
    return importable_module("my_encoders", PLUGIN_SOURCE)


def test_out_of_tree_encoder_from_yaml(plugin_dir):
    yaml_dir = plugin_dir / "elsewhere"
    yaml_dir.mkdir()
    path = write_yaml(yaml_dir, {"model": {"name": "my_encoders:MeanColour", "scale": 2.0, "batch_size": 5}})
    encoder = load_encoder(path, device="cpu")
    assert isinstance(encoder, EncoderSpecModel) and type(encoder).__name__ == "MeanColour"
    assert encoder.device == "cpu" and encoder.batch_size == 5 and encoder.options["model"]["scale"] == 2.0
    tiles = np.zeros((2, 256, 256, 3), np.uint8)
    tiles[1] = 128
    scores = encoder.cosine_sim(encoder.image_encoder(tiles), encoder.text_encoder("anything"))
    assert scores[1] == 0 and scores[0] < 0  # the plug-in's own similarity is used


def test_plugin_lacking_the_contract_is_refused(plugin_dir):
    path = write_yaml(plugin_dir, {"model": {"name": "my_encoders:NoText"}})
    with pytest.raises(EncoderError, match="NoText lacks text_encoder, cosine_sim"):
        load_encoder(path, device="cpu")


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz:Encoder", "cannot import encoder module 'no_such_module_xyz'"),
    ("my_encoders:Missing", "has no encoder class 'Missing'"),
    ("NotRegistered", "unknown encoder 'NotRegistered'"),
])
def test_bad_encoder_names(plugin_dir, name, message):
    with pytest.raises(EncoderError, match=message):
        load_encoder(write_yaml(plugin_dir, {"model": {"name": name}}), device="cpu")


# --- LW-MCR with a tiny vocabulary: small enough to build and save in every test -----------------------------

TINY_WORDS = ["road", "green", "field", "<unk>"]


@pytest.fixture
def lw_mcr_files(tmp_path):
    """(yaml path, checkpoint path, state dict) of an LW-MCR over a 4-word vocabulary, random weights."""
    word2idx = {word: k + 1 for k, word in enumerate(TINY_WORDS)}
    (tmp_path / "vocab.json").write_text(json.dumps({"word2idx": word2idx, "idx2word": {}, "idx": 5}))
    torch.manual_seed(0)
    state = LWMCR(len(TINY_WORDS) + 1).state_dict()
    checkpoint = tmp_path / "lw_mcr.tar"
    torch.save({"model": state, "epoch": 3, "best_rsum": 1.5}, checkpoint)  # the official layout
    options = {"model": {"name": "LW_MCR", "batch_size": 2}, "dataset": {"vocab_path": "vocab.json"},
               "optim": {"resume": "lw_mcr.tar"}}
    return write_yaml(tmp_path, options), checkpoint, state


def test_cpu_only_loading(lw_mcr_files, monkeypatch):
    yaml_path, _, state = lw_mcr_files
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    encoder = load_encoder(yaml_path)  # no device given: CPU when CUDA is absent
    assert encoder.device == "cpu"
    loaded = encoder.network.state_dict()
    assert all(t.device.type == "cpu" for t in loaded.values())
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not encoder.network.training
    with pytest.raises(EncoderError, match="CUDA is not available"):
        load_encoder(yaml_path, device="cuda")


def test_batches_and_tile_checks(lw_mcr_files):
    encoder = load_encoder(lw_mcr_files[0], device="cpu")
    tiles = np.random.default_rng(0).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    vectors = encoder.image_encoder(tiles)  # batch_size 2: three passes
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(encoder.image_encoder(tiles[3:4]), vectors[3:4], rtol=1e-5, atol=1e-6)
    assert encoder.image_encoder(tiles[:0]).shape == (0, 512)
    with pytest.raises(ValueError, match=r"uint8 RGB tiles \(N, 256, 256, 3\), got uint8 \(2, 128, 128, 3\)"):
        encoder.image_encoder(tiles[:2, :128, :128])


def test_short_captions_are_refused_by_lw_mcr(lw_mcr_files):
    encoder = load_encoder(lw_mcr_files[0], device="cpu")
    assert encoder.text_encoder("green road, green field, road").shape == (512,)
    with pytest.raises(EncoderError, match=r"LW_MCR needs at least 5 word\(s\).*got 4 in 'green road, green field'"):
        encoder.text_encoder("green road, green field")


def one_line_error(yaml_path, **kwargs):
    with pytest.raises(EncoderError) as info:
        load_encoder(yaml_path, device="cpu", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_checkpoint_says_where_to_get_it(lw_mcr_files):
    yaml_path, checkpoint, _ = lw_mcr_files
    os.remove(checkpoint)
    message = one_line_error(yaml_path)
    assert str(checkpoint) in message and "not found" in message and "RSITMD_LW_MCR.tar" in message
    assert "github.com/xiaoyuan1996/SemanticLocalizationMetrics" in message and "predict/checkpoints/" in message


def test_garbage_checkpoint(lw_mcr_files):
    yaml_path, checkpoint, _ = lw_mcr_files
    checkpoint.write_bytes(b"this is not a checkpoint\n" * 10)
    assert f"{checkpoint}: cannot read LW_MCR checkpoint" in one_line_error(yaml_path)


def test_checkpoint_without_state_dict(lw_mcr_files):
    yaml_path, checkpoint, _ = lw_mcr_files
    torch.save({"epoch": 3}, checkpoint)
    assert f"{checkpoint}: checkpoint holds no state dict of tensors" in one_line_error(yaml_path)


def test_checkpoint_with_wrong_keys(lw_mcr_files):
    yaml_path, checkpoint, state = lw_mcr_files
    state = dict(state)
    state["extract_feature.fc.weight_renamed"] = state.pop("extract_feature.fc.weight")
    torch.save({"model": state}, checkpoint)
    message = one_line_error(yaml_path)
    assert message.startswith(f"{checkpoint}: checkpoint does not match the architecture")
    assert "1 missing keys (first: extract_feature.fc.weight)" in message
    assert "1 unexpected keys (first: extract_feature.fc.weight_renamed)" in message


def test_checkpoint_with_wrong_shapes(lw_mcr_files):
    yaml_path, checkpoint, state = lw_mcr_files
    state = dict(state, **{"text_feature.embed.weight": torch.zeros(1350, 300)})  # another vocabulary's size
    torch.save({"model": state}, checkpoint)
    assert "text_feature.embed.weight checkpoint [1350, 300] vs model [5, 300]" in one_line_error(yaml_path)


def test_data_parallel_prefix_is_accepted(lw_mcr_files):
    yaml_path, checkpoint, state = lw_mcr_files
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    assert load_encoder(yaml_path, device="cpu").name == "LW_MCR"


def test_missing_vocabulary_and_yaml_keys(lw_mcr_files, tmp_path):
    yaml_path, _, _ = lw_mcr_files
    os.remove(tmp_path / "vocab.json")
    message = one_line_error(yaml_path)
    assert "vocab.json: vocabulary not found" in message and "predict/vocab/" in message
    complete = yaml.safe_load(yaml_path.read_text())
    for section, key in (("optim", "resume"), ("dataset", "vocab_path")):
        options = yaml.safe_load(yaml.safe_dump(complete))
        del options[section][key]
        yaml_path.write_text(yaml.safe_dump(options))
        assert f"{yaml_path}: missing key '{section}.{key}'" in one_line_error(yaml_path)


def test_checkpoint_argument_overrides_the_yaml(lw_mcr_files, tmp_path):
    yaml_path, checkpoint, _ = lw_mcr_files
    moved = tmp_path / "moved.pth"
    checkpoint.rename(moved)
    assert load_encoder(yaml_path, device="cpu", checkpoint=str(moved)).options["optim"]["resume"] == str(moved)


@pytest.mark.parametrize("name, checkpoint", [("AMFMN", "AMFMN.tar"), ("LW_MCR", "RSITMD_LW_MCR.tar")])
def test_shipped_yamls(name, checkpoint):
    path = package_path("options", "RSITMD", f"RSITMD_{name}.yaml")
    raw = yaml.safe_load(path.read_text())
    assert raw["model"]["name"] == name and raw["optim"]["resume"] == f"predict/checkpoints/{checkpoint}"
    assert raw["dataset"]["vocab_path"] == "predict/vocab/rsitmd_splits_vocab.json"
    if not (project_root() / raw["optim"]["resume"]).exists():  # a fresh clone: the download is asked for
        message = one_line_error(path)
        assert f"predict/checkpoints/{checkpoint}: {name} checkpoint ({checkpoint}) not found" in message


# --- the self-check --------------------------------------------------------------------------------------------

def test_self_check_prints_success(lw_mcr_files, capsys, monkeypatch):
    monkeypatch.setattr(selfcheck, "default_image_path", lambda: None)  # a fresh clone: no test_data image
    assert main(["--yaml_path", str(lw_mcr_files[0]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Image: synthetic 256x256 colour ramp" in out
    assert "Image vector shape: (1, 512)" in out and "Text vector shape: (512,)" in out
    assert out.rstrip().endswith("Encoder test successful!")


def test_self_check_with_an_image_file(lw_mcr_files, tmp_path, capsys):
    image = tmp_path / "small.png"
    cv2.imwrite(str(image), np.random.default_rng(2).integers(0, 256, (300, 200, 3), dtype=np.uint8))
    assert main(["--yaml_path", str(lw_mcr_files[0]), "--device", "cpu", "--image_path", str(image)]) == 0
    assert "Encoder test successful!" in capsys.readouterr().out


def test_self_check_cli_with_a_plugin(plugin_dir):
    path = write_yaml(plugin_dir, {"model": {"name": "my_encoders:MeanColour", "scale": 1.0}})
    run = subprocess.run([sys.executable, "predict/model_encoder.py", "--yaml_path", str(path)], cwd=REPO_ROOT,
                         env=subprocess_env(plugin_dir), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Image vector shape: (1, 3)" in run.stdout and "Encoder test successful!" in run.stdout


def test_self_check_failure_is_one_line(tmp_path, capsys):
    assert main(["--yaml_path", str(tmp_path / "absent.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent.yaml: encoder yaml not found" in err


# --- SkipThought initialisation (AMFMN text branch) ------------------------------------------------------------

def test_random_init_is_said_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        UniSkip(5).init_from_skipthoughts(str(tmp_path / "no_skipthoughts"), TINY_WORDS)
    notes = [r.message for r in caplog.records if "initialised randomly" in r.message]
    assert len(notes) == 1 and "uni_skip.npz" in notes[0]


def test_init_from_skipthought_files(tmp_path, caplog):
    """Builds skipthoughts' layout by hand: embedding row k+1 = the table row of word k (UNK if absent),
    GRU maps from the theano arrays (encoder_W = [reset | update] gates, transposed)."""
    rng = np.random.default_rng(1)
    dictionary = ["UNK", "field", "road", "<eos>"]
    (tmp_path / "dictionary.txt").write_text("\n".join(dictionary) + "\n")
    table = rng.standard_normal((len(dictionary), WORD_DIM)).astype(np.float32)
    np.save(tmp_path / "utable.npy", table)
    arrays = {"encoder_W": (WORD_DIM, 2 * GRU_DIM), "encoder_b": (2 * GRU_DIM,), "encoder_U": (GRU_DIM, 2 * GRU_DIM),
              "encoder_Wx": (WORD_DIM, GRU_DIM), "encoder_bx": (GRU_DIM,), "encoder_Ux": (GRU_DIM, GRU_DIM)}
    params = {key: rng.standard_normal(shape, dtype=np.float32) for key, shape in arrays.items()}
    np.savez(tmp_path / "uni_skip.npz", **params)
    caplog.set_level(logging.WARNING)

    seq2vec = UniSkip(len(TINY_WORDS) + 1)
    seq2vec.init_from_skipthoughts(str(tmp_path), TINY_WORDS)  # road, green, field, <unk>

    emb = seq2vec.embedding.weight.detach().numpy()
    expected_rows = [np.zeros(WORD_DIM), table[2], table[0], table[1], table[0]]
    np.testing.assert_array_equal(emb, np.stack(expected_rows))
    assert "Warning: 2/4 words are not in dictionary, thus set UNK" in caplog.text
    cell = seq2vec.rnn.gru_cell
    np.testing.assert_array_equal(cell.weight_ir.weight.detach().numpy(), params["encoder_W"][:, :GRU_DIM].T)
    np.testing.assert_array_equal(cell.weight_ii.weight.detach().numpy(), params["encoder_W"][:, GRU_DIM:].T)
    np.testing.assert_array_equal(cell.weight_in.weight.detach().numpy(), params["encoder_Wx"].T)
    np.testing.assert_array_equal(cell.weight_ii.bias.detach().numpy(), params["encoder_b"][GRU_DIM:])
    np.testing.assert_array_equal(cell.weight_in.bias.detach().numpy(), params["encoder_bx"])
    np.testing.assert_array_equal(cell.weight_hi.weight.detach().numpy(), params["encoder_U"][:, GRU_DIM:].T)
    np.testing.assert_array_equal(cell.weight_hn.weight.detach().numpy(), params["encoder_Ux"].T)


def test_pickled_skipthought_table_is_refused(tmp_path):
    (tmp_path / "dictionary.txt").write_text("UNK\n")
    np.save(tmp_path / "utable.npy", np.array([np.zeros(WORD_DIM)], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "uni_skip.npz", encoder_W=np.zeros(1))
    with pytest.raises(ValueError, match="utable.npy: cannot read SkipThought array.*Object arrays cannot be loaded"):
        UniSkip(5).init_from_skipthoughts(str(tmp_path), TINY_WORDS)


# --- plug-ins that skip super().__init__(), and what the self-check catches (issue 10) ----------------------

CHECKED_SOURCE = textwrap.dedent('''
    import numpy as np
    from predict.model_encoder import EncoderSpecModel

    class Answering(EncoderSpecModel):
        """Answers right, or with the mistake the yaml's model.answer names."""
        name = "answering"

        def __init__(self, options, device):
            super().__init__(options, device)
            self.answer = options["model"].get("answer", "good")

        def encode_batch(self, tiles):
            vectors = tiles.reshape(len(tiles), -1, 3).mean(axis=1).astype(np.float32) + 1
            if self.answer == "nan":
                vectors[0, 0] = np.nan
            if self.answer == "first_only":  # a batching bug: one vector per batch
                vectors = vectors[:1]
            if self.answer == "flat":
                vectors = vectors.ravel()
            return vectors

        def text_encoder(self, text):
            return np.ones(4 if self.answer == "text_dim" else 3, np.float32)

    class OwnInit(Answering):
        """Defines __init__ without calling super().__init__()."""
        name = "own_init"

        def __init__(self, options, device):
            self.answer = "good"
''')


@pytest.fixture
def checked_dir(importable_module):
    return importable_module("checked_encoders", CHECKED_SOURCE)


def test_a_plugin_without_super_init_gets_options_device_and_batch_size(checked_dir, tmp_path):
    path = write_yaml(checked_dir, {"model": {"name": "checked_encoders:OwnInit", "batch_size": 3}})
    encoder = load_encoder(path, device="cpu")
    assert encoder.batch_size == 3 and encoder.device == "cpu" and encoder.options["model"]["batch_size"] == 3
    calls = []
    encode = encoder.encode_batch
    encoder.encode_batch = lambda tiles: calls.append(len(tiles)) or encode(tiles)
    assert encoder.image_encoder(np.zeros((7, 256, 256, 3), np.uint8)).shape == (7, 3)
    assert calls == [3, 3, 1] and vectors_key(encoder).startswith("own_init-")

    from predict.cli.generate import main as generate_main

    write_testset(tmp_path / "set", n_samples=1)
    code = generate_main(["--yaml_path", str(path), "--cache_path", str(tmp_path / "cache"),
                          "--src_data_path", str(tmp_path / "set" / "imgs"), "--step", "256_512",
                          "--src_anno_path", str(tmp_path / "set" / "anno.json"), "--no_report"])
    assert code == 0  # the whole pipeline, not only the self-check


@pytest.mark.parametrize("answer, message", [
    ("good", None),
    ("nan", "encoder answering: image vector holds non-finite values (1 of 3)"),
    ("first_only", "encoder answering: image_encoder returned vectors of shape (2, 3) for 3 tiles; expected (3, 3)"),
    ("flat", "encoder answering: image_encoder returned vectors of shape (3,) for 1 tiles; expected (1, D)"),
    ("text_dim", "encoder answering: text vector of shape (4,) does not match image vectors (3, 3); expected (3,)"),
])
def test_self_check_refuses_non_finite_values_and_wrong_shapes(checked_dir, capsys, monkeypatch, answer, message):
    monkeypatch.setattr(selfcheck, "default_image_path", lambda: None)
    path = write_yaml(checked_dir, {"model": {"name": "checked_encoders:Answering", "answer": answer}})
    code = main(["--yaml_path", str(path), "--device", "cpu"])
    out, err = capsys.readouterr()
    if message is None:
        assert code == 0 and out.rstrip().endswith("Encoder test successful!")
        assert "Batch of 3 in batches of 2: (3, 3)" in out and "Vector cache key: answering-" in out
    else:
        assert code == 1 and "successful" not in out
        assert err == f"Encoder test failed: {message}\n"
