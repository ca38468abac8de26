"""The official SLM retrieval models as encoders: AMFMN (``model.name: AMFMN``, checkpoint ``AMFMN.tar``)
and LW-MCR (``model.name: LW_MCR``, ``RSITMD_LW_MCR.tar``), sharing vocabulary, checkpoint loading and
image normalisation.

A subclass names its network (``build_network``), its checkpoint file and the fewest tokens its text branch
accepts; the network itself provides ``encode_image(x)`` for a normalised ``(B, 3, 256, 256)`` batch and
``encode_text(ids)`` for ``(B, L)`` token ids, both returning ``(B, D)`` vectors before the encoder's own
final L2 normalisation.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from predict.encoders.base import EncoderError, unknown_tokens
from predict.encoders.checkpoints import CHECKPOINT_DIR_HINT, load_weights, read_checkpoint, unwrap_state_dict
from predict.encoders.text import OFFICIAL_REPO, STOP_WORDS, Vocabulary, tokenize
from predict.encoders.torch_encoder import TorchEncoder
from predict.layers.amfmn import AMFMN
from predict.layers.common import l2norm
from predict.layers.lw_mcr import LWMCR

# torchvision's ImageNet statistics, as the original's transforms.Normalize.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)``: ToTensor then ImageNet Normalize.

    The same float32 operations as torchvision's ``ToTensor`` (``/ 255``) and ``Normalize``
    (``(x - mean) / std``), so the network sees the original's input bit for bit.
    """
    x = tiles.permute(0, 3, 1, 2).to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.sub(mean).div(std)


def required_option(options: dict, *keys: str, meaning: str):
    """``options[k1][k2]...``; a missing key names the yaml file, the key and what it is for."""
    node = options
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if node in (None, ""):
        raise EncoderError(f"{options.get('_yaml_path', 'encoder yaml')}: missing key '{'.'.join(keys)}' ({meaning})")
    return node


def embed_dim(options: dict) -> int:
    """Size of the image and text vectors: yaml ``model.embed.embed_dim``, 512 when absent."""
    return int(((options.get("model") or {}).get("embed") or {}).get("embed_dim", 512))


class ImageTower(nn.Module):
    """A retrieval network's image side as one module: normalised tiles ``(B, 3, 256, 256)`` -> L2-normalised
    ``(B, D)`` float32 (what the exported runtimes run)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2norm(self.network.encode_image(x).float())


class RetrievalEncoder(TorchEncoder):
    """An official SLM retrieval model (AMFMN, LW-MCR) behind the :class:`EncoderSpecModel` contract.

    Args:
        options: the parsed yaml: ``dataset.vocab_path`` (RSITMD vocabulary json), ``optim.resume`` (the
            official checkpoint, ``torch.save({'model': state_dict})``), optional ``model.batch_size`` and
            ``model.precision`` (``fp32``, or ``fp16`` / ``bf16`` autocast: fp16 on CUDA only).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; the checkpoint is read on the CPU, then moved there.

    Attributes:
        vocab: the :class:`~predict.encoders.text.Vocabulary`.
        network: the ``torch.nn.Module`` with the checkpoint's weights, in eval mode on ``device``.
    """

    checkpoint_file = ""  # the official file name, for messages
    min_tokens = 1  # the text branch refuses shorter captions, as the original does

    def __init__(self, options: dict, device: str | None = None):
        super().__init__(options, device)
        resume = required_option(options, "optim", "resume",
                                 meaning=f"the {self.name} checkpoint, {CHECKPOINT_DIR_HINT}{self.checkpoint_file}")
        checkpoint = read_checkpoint(resume, f"{self.name} checkpoint ({self.checkpoint_file})",
                                     download_hint=f"the official repository {OFFICIAL_REPO} (README, checkpoints)")
        try:
            state = unwrap_state_dict(checkpoint)
        except EncoderError as exc:
            raise EncoderError(f"{resume}: {exc}") from None
        vocab_path = required_option(options, "dataset", "vocab_path",
                                     meaning="the RSITMD vocabulary json, predict/vocab/rsitmd_splits_vocab.json")
        self.vocab = Vocabulary.from_json(vocab_path)
        self.network = self.build_network(options, self.vocab)
        load_weights(self.network, state, resume)
        self.network.to(self.device).eval()
        self.image_tower = ImageTower(self.network)
        self.embed_dim = self.network.embed_dim

    def build_network(self, options: dict, vocab: Vocabulary) -> nn.Module:
        """The untrained network for these options; subclasses define it."""
        raise NotImplementedError

    def encode_batch(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(B, 256, 256, 3)`` -> L2-normalised ``(B, D)`` float32."""
        return self.image_tower(self.network_input(tiles)).cpu().numpy()

    def image_network(self) -> nn.Module:
        """:class:`ImageTower`: the runtimes' network."""
        return self.image_tower

    def network_input(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(B, 256, 256, 3)`` -> ``(B, 3, 256, 256)`` float32, ToTensor and ImageNet Normalize."""
        # torch.tensor copies, so read-only tiles (a memory-mapped image) are fine.
        return normalize_tiles(torch.tensor(tiles, device=self.device))

    def token_ids(self, text: str) -> np.ndarray:
        """The caption's token ids ``(L,)`` int64, as the original encoders compute them."""
        return self.vocab.encode(text)

    def unknown_words(self, text: str) -> list[str]:
        """The caption's tokens (:func:`~predict.encoders.text.tokenize`) not in the RSITMD vocabulary, stop
        words aside (the vocabulary leaves them out: the models read them as ``<unk>``); a ValueError when
        no token is in it (see :meth:`~predict.encoders.base.EncoderSpecModel.unknown_words`)."""
        return unknown_tokens(text, tokenize(text), self.vocab.word2idx, self.name, STOP_WORDS)

    def text_encoder(self, text: str) -> np.ndarray:
        """One caption -> L2-normalised ``(D,)`` float32; too few tokens is a one-line EncoderError."""
        ids = self.token_ids(text)
        if len(ids) < self.min_tokens:
            raise EncoderError(f"{self.name} needs at least {self.min_tokens} word(s) after the punctuation filter, "
                               f"got {len(ids)} in {text!r}")
        with self.inference():
            vector = l2norm(self.network.encode_text(torch.from_numpy(ids[None]).to(self.device)).float())[0]
        return vector.float().cpu().numpy()


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
        try:
            network.text_feature.seq2vec.init_from_skipthoughts(dir_st, vocab.words_in_index_order())
        except ValueError as exc:  # the network names the bad SkipThought file
            raise EncoderError(str(exc)) from None
        return network


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
