"""Caption tokenisation and the RSITMD vocabulary, exactly as the original AMFMN / LW-MCR encoders do it.

A caption becomes token ids in four steps: ``text.lower()``; NLTK's Treebank word tokeniser on the whole
text as one line (``word_tokenize(text, preserve_line=True)``: no punkt sentence model, which cannot be
downloaded offline); tokens equal to one of :data:`PUNCTUATION` are dropped (exact match, so ``...`` or
``--`` stay); every token not in the vocabulary becomes ``<unk>``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from nltk.tokenize import word_tokenize

from predict.encoders.base import EncoderError

# The original encoders' punctuation filter, all 16 strings.
PUNCTUATION = frozenset([",", ".", ":", ";", "?", "(", ")", "[", "]", "&", "!", "*", "@", "#", "$", "%"])
UNKNOWN_WORD = "<unk>"
# NLTK's English stop words (its list of 127): the RSITMD vocabulary holds none of them, so the models were
# trained reading each as <unk>; a query's "a" or "the" is therefore not reported as an unknown word.
STOP_WORDS = frozenset("""
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is
    are was were be been being have has had having do does did doing a an the and but if or because as until
    while of at by for with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will just don should now
    """.split())
OFFICIAL_REPO = "https://github.com/xiaoyuan1996/SemanticLocalizationMetrics"
VOCAB_DIR_HINT = "predict/vocab/"


def tokenize(text: str) -> list[str]:
    """Lower-case words of a caption, punctuation tokens dropped.

    Args:
        text: one caption.

    Returns:
        The tokens, e.g. ``"The plane's wing."`` -> ``['the', 'plane', "'s", 'wing']``.
    """
    return [token for token in word_tokenize(text.lower(), preserve_line=True) if token not in PUNCTUATION]


@dataclass(frozen=True)
class Vocabulary:
    """Word -> index map of an RSITMD-format vocabulary file (``word2idx``, ``idx2word``, ``idx``).

    Indices start at 1; 0 is the padding row of the embedding, which no token ever maps to.

    Attributes:
        word2idx: word -> index, ``<unk>`` included.
    """

    word2idx: dict

    @classmethod
    def from_json(cls, path: str | None) -> "Vocabulary":
        """Read a vocabulary json; a missing or malformed file raises a one-line :class:`EncoderError`."""
        if not path or not os.path.isfile(path):
            raise EncoderError(f"{path or '(none given)'}: vocabulary not found; copy rsitmd_splits_vocab.json "
                               f"from the official repository ({OFFICIAL_REPO}, folder predict/vocab/) "
                               f"into {VOCAB_DIR_HINT} beside the checkpoint it belongs to")
        try:
            with open(path, encoding="utf-8") as f:
                word2idx = json.load(f)["word2idx"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise EncoderError(f"{path}: not an RSITMD vocabulary json with a 'word2idx' map "
                               f"({type(exc).__name__})") from None
        if not isinstance(word2idx, dict):
            raise EncoderError(f"{path}: 'word2idx' is not a map of words to indices")
        if UNKNOWN_WORD not in word2idx:
            raise EncoderError(f"{path}: the vocabulary has no {UNKNOWN_WORD!r} entry")
        indices = list(word2idx.values())
        if not all(type(i) is int for i in indices) or sorted(indices) != list(range(1, len(indices) + 1)):
            # Embedding row k is the word of index k, so the indices must be 1..N without gaps.
            raise EncoderError(f"{path}: vocabulary indices must be the integers 1..{len(word2idx)} without gaps")
        return cls(word2idx)

    @property
    def num_embeddings(self) -> int:
        """Rows of an embedding over this vocabulary: one per word plus the padding row 0."""
        return len(self.word2idx) + 1

    def words_in_index_order(self) -> list[str]:
        """The words sorted by index, as the original ``model_init`` hands them to the models."""
        return [word for word, _ in sorted(self.word2idx.items(), key=lambda item: item[1])]

    def lookup(self, tokens: list[str]) -> np.ndarray:
        """Token ids ``(L,)`` int64; words not in the vocabulary map to ``<unk>``."""
        unknown = self.word2idx[UNKNOWN_WORD]
        return np.array([self.word2idx.get(token, unknown) for token in tokens], dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        """A caption's token ids ``(L,)`` int64 (``L`` may be 0 when only punctuation is left)."""
        return self.lookup(tokenize(text))
