"""The demo encoder (yaml ``model.name: demo``): a small dual encoder the project trains itself on
synthetic scenes (``predict/demo/train_demo_encoder.py``), so the whole SeLo job runs offline.

The network is :class:`predict.layers.demo_net.DemoNet`:

- Image tower: the 256 x 256 tile is averaged down to 64 x 64 (4 x 4 blocks) inside the model, then four
  stride-2 conv/batch-norm/ReLU stages and global mean + max pooling, projected to ``EMBED_DIM``.
- Text tower: word embeddings over the vocabulary of the caption grammar (:mod:`predict.encoders.demo_text`),
  mean and max over the words, a two-layer MLP to ``EMBED_DIM``.

The checkpoint is ``{"model": state_dict, "vocab": [words]}``; the vocabulary travels inside it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from predict.encoders.base import EncoderError, unknown_tokens
from predict.encoders.checkpoints import load_weights, read_checkpoint, unwrap_state_dict
from predict.encoders.demo_text import caption_vocabulary, tokenize
from predict.encoders.torch_encoder import TorchEncoder
from predict.layers.demo_net import EMBED_DIM, DemoNet, pool_tiles

UNKNOWN = "<unk>"  # index 1; index 0 pads
RANDOM_INIT_SEED = 0  # the untrained baseline is the same network every time


class ImageTower(torch.nn.Module):
    """``DemoNet.encode_image`` as a module of its own (what the exported runtimes run)."""

    def __init__(self, network: DemoNet):
        super().__init__()
        self.network = network

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.network.encode_image(pooled).float()


def encode_captions(captions: list[str], index: dict[str, int]) -> torch.Tensor:
    """Token ids ``(N, L)`` of ``captions`` (words not in ``index`` -> ``<unk>``), zero-padded."""
    rows = [[index.get(w, 1) for w in tokenize(c)] or [1] for c in captions]
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, :len(row)] = torch.tensor(row)
    return ids


def default_vocabulary() -> list[str]:
    """Padding, ``<unk>``, then the grammar's words: the index order of ``DemoNet.words``."""
    return ["<pad>", UNKNOWN] + caption_vocabulary()


class DemoEncoder(TorchEncoder):
    """The demo dual encoder behind the :class:`EncoderSpecModel` interface; vectors ``(128,)``.

    Reads ``options["optim"]["resume"]``; ``None`` gives random weights (seeded) and the grammar's
    vocabulary, the untrained baseline.
    """

    name = "demo"
    embed_dim = EMBED_DIM

    def __init__(self, options: dict | None = None, device: str | None = None):
        super().__init__(options, device)
        resume = (self.options.get("optim") or {}).get("resume")
        if resume:
            checkpoint = read_checkpoint(resume, "demo encoder checkpoint")
            vocab = checkpoint.get("vocab") if isinstance(checkpoint, dict) else None
            if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
                raise EncoderError(f"{resume}: demo encoder checkpoint has no 'vocab' list of words")
            self.vocab = vocab
            self.network = DemoNet(len(vocab))
            load_weights(self.network, unwrap_state_dict(checkpoint), resume)
        else:
            warnings.warn("demo encoder: optim.resume is null, using random weights (untrained baseline)", stacklevel=2)
            self.vocab = default_vocabulary()
            with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
                torch.manual_seed(RANDOM_INIT_SEED)
                self.network = DemoNet(len(self.vocab))
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.network.to(self.torch_device).eval()

    def encode_batch(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(B, 256, 256, 3)`` -> float32 ``(B, 128)``."""
        return self.network.encode_image(self.network_input(tiles)).float().cpu().numpy()

    def image_network(self) -> ImageTower:
        """The image tower on pooled tiles: the runtimes' network."""
        return ImageTower(self.network)

    def network_input(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(B, 256, 256, 3)`` -> float32 ``(B, 3, 64, 64)``: :func:`pool_tiles`."""
        return pool_tiles(torch.from_numpy(tiles).to(self.torch_device))

    def unknown_words(self, text: str) -> list[str]:
        """The caption's words (letters only, lower case) not in the checkpoint's vocabulary; a ValueError
        when none is in it (see :meth:`~predict.encoders.base.EncoderSpecModel.unknown_words`)."""
        return unknown_tokens(text, tokenize(text), self.index, self.name)

    def text_encoder(self, text: str) -> np.ndarray:
        """One caption -> float32 ``(128,)``; unknown words count as ``<unk>``."""
        ids = encode_captions([text], self.index).to(self.torch_device)
        with self.inference():  # the image side's context: the same precision for both towers
            return self.network.encode_text(ids)[0].float().cpu().numpy()
