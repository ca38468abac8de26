"""Caption tokenisation and the RSITMD vocabulary, against ../shared/reference/model (README section 3 and
expected_dev.json, made with the original code)."""
import json

import nltk
import numpy as np
import pytest

from predict.encoders.text import PUNCTUATION, Vocabulary, tokenize
from predict.model_encoder import EncoderError

from helpers import shared_path


@pytest.fixture(scope="module")
def captions():
    with open(shared_path("reference", "model", "expected_dev.json"), encoding="utf-8") as f:
        return json.load(f)["captions"]


@pytest.fixture(scope="module")
def rsitmd_vocab():
    return Vocabulary.from_json(str(shared_path("slm", "rsitmd_splits_vocab.json")))


def test_tokens_of_the_reference_captions(captions):
    for caption in captions:
        assert tokenize(caption["text"]) == caption["tokens_after_filter"], caption["id"]


def test_token_ids_of_the_reference_captions(captions, rsitmd_vocab):
    for caption in captions:
        ids = rsitmd_vocab.encode(caption["text"])
        assert ids.dtype == np.int64 and ids.tolist() == caption["token_ids"], caption["id"]


@pytest.mark.parametrize("text, tokens", [
    ("vegetation,divided", ["vegetation", "divided"]),  # README section 3 examples
    (" ,cyan", ["cyan"]),
    ("plane's", ["plane", "'s"]),
    ("isn't", ["is", "n't"]),
    ("...", ["..."]),  # not one of the 16 strings: kept, later <unk>
    ("--", ["--"]),
    (".", []),
    ('say "hi"', ["say", "``", "hi", "''"]),  # the two quote tokens stay
    ("a dog. a cat", ["a", "dog.", "a", "cat"]),  # documented deviation from punkt: the period stays attached
])
def test_tokenize_examples(text, tokens):
    assert tokenize(text) == tokens


def test_punctuation_filter_is_the_originals():
    assert PUNCTUATION == set(", . : ; ? ( ) [ ] & ! * @ # $ %".split())


def test_tokenize_needs_no_nltk_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise LookupError("no nltk data may be read")

    monkeypatch.setattr(nltk.data, "load", refuse)
    monkeypatch.setattr(nltk.data, "find", refuse)
    assert tokenize("Two planes, one runway.") == ["two", "planes", "one", "runway"]


def test_rsitmd_vocabulary(rsitmd_vocab):
    assert rsitmd_vocab.num_embeddings == 1350
    words = rsitmd_vocab.words_in_index_order()
    assert words[-1] == "<unk>" and len(words) == 1349
    # README section 2: stopwords are not dropped but become <unk>.
    assert rsitmd_vocab.encode("there is a green pond").tolist() == [1349, 1349, 1349, 4, 200]
    assert rsitmd_vocab.lookup(["zzz-not-a-word"]).tolist() == [1349]
    assert rsitmd_vocab.encode(".").shape == (0,)


def write_vocab(path, word2idx):
    path.write_text(json.dumps({"word2idx": word2idx, "idx2word": {str(i): w for w, i in word2idx.items()},
                                "idx": len(word2idx) + 1}))
    return str(path)


@pytest.mark.parametrize("content, message", [
    (None, "vocabulary not found.*predict/vocab/"),
    ("{not json", "not an RSITMD vocabulary json"),
    ('{"idx": 3}', "not an RSITMD vocabulary json"),
    ('{"word2idx": ["road", "<unk>"]}', "'word2idx' is not a map"),
    ({"road": 1}, "no '<unk>' entry"),
    ({"road": 1, "<unk>": 3}, "indices must be the integers 1..2"),
    ({"road": "1", "<unk>": 2}, "indices must be the integers 1..2"),
])
def test_bad_vocabulary_files(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    if isinstance(content, dict):
        write_vocab(path, content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(EncoderError, match=message) as info:
        Vocabulary.from_json(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
