"""The LW-MCR encoder (yaml ``model.name: LW_MCR``) of the official SLM checkpoint ``RSITMD_LW_MCR.tar``."""
from __future__ import annotations

from predict.layers.lw_mcr import LWMCR
from predict.layers.retrieval_encoder import RetrievalEncoder, embed_dim
from predict.text import Vocabulary


class LWMCREncoder(RetrievalEncoder):
    """LW-MCR image and text encoders, vectors ``(512,)``.

    A caption with fewer than 5 tokens (after the punctuation filter) raises :class:`EncoderError`, as the
    original refuses it (its widest text convolution spans 5 words); it is not padded, which would invent
    a vector the published model never gives.
    """

    name = "LW_MCR"
    checkpoint_file = "RSITMD_LW_MCR.tar"
    min_tokens = LWMCR.min_tokens

    def build_network(self, options: dict, vocab: Vocabulary) -> LWMCR:
        return LWMCR(vocab.num_embeddings, embed_dim(options))
