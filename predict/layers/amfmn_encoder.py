"""The AMFMN encoder (yaml ``model.name: AMFMN``) of the official SLM checkpoint ``AMFMN.tar``."""
from __future__ import annotations

from predict.layers.amfmn import AMFMN
from predict.layers.retrieval_encoder import RetrievalEncoder, embed_dim
from predict.text import Vocabulary


class AMFMNEncoder(RetrievalEncoder):
    """AMFMN image and text encoders, vectors ``(512,)``; every caption with at least one token works."""

    name = "AMFMN"
    checkpoint_file = "AMFMN.tar"

    def build_network(self, options: dict, vocab: Vocabulary) -> AMFMN:
        model = options["model"]
        multiscale = model.get("multiscale") or {}
        network = AMFMN(vocab.num_embeddings, embed_dim(options),
                        int(multiscale.get("multiscale_input_channel", 3)),
                        int(multiscale.get("multiscale_output_channel", 1)))
        dir_st = (model.get("seq2vec") or {}).get("dir_st")
        network.text_feature.seq2vec.init_from_skipthoughts(dir_st, vocab.words_in_index_order())
        return network
