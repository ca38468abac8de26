"""The demo encoder (yaml ``model.name: demo``): a small dual encoder the project trains itself on
synthetic scenes (``predict/train_demo_encoder.py``), so the whole SeLo job runs offline.

- Image tower: the 256 x 256 tile is averaged down to 64 x 64 (4 x 4 blocks) inside the model, then four
  stride-2 conv/batch-norm/ReLU stages and global mean + max pooling, projected to ``EMBED_DIM``.
- Text tower: word embeddings over the vocabulary of the caption grammar (``predict.synthetic``),
  mean and max over the words, a two-layer MLP to ``EMBED_DIM``.

The checkpoint is ``{"model": state_dict, "vocab": [words]}``; the vocabulary travels inside it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from predict.checkpoint_io import load_weights, read_checkpoint, unwrap_state_dict
from predict.model_encoder import EncoderError, EncoderSpecModel, check_device, check_tiles
from predict.synthetic import caption_vocabulary, tokenize

EMBED_DIM = 128
WORD_DIM = 64
POOL = 4  # 256 -> 64 pixels before the CNN: enough for colours and layouts, and fast on a CPU
UNKNOWN = "<unk>"  # index 1; index 0 pads
RANDOM_INIT_SEED = 0  # the untrained baseline is the same network every time


def pool_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(N, 256, 256, 3)`` -> float32 ``(N, 3, 64, 64)`` in [0, 1], means of 4 x 4 blocks."""
    x = tiles.permute(0, 3, 1, 2).to(torch.float32).div_(255)
    return F.avg_pool2d(x, POOL)


def conv_stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DemoNet(nn.Module):
    """The two towers. ``encode_image`` takes pooled tiles ``(N, 3, 64, 64)`` in [0, 1];
    ``encode_text`` token ids ``(N, L)`` (0 = padding). Both return unnormalised ``(N, EMBED_DIM)``."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.image_tower = nn.Sequential(conv_stage(3, 16, 2), conv_stage(16, 32, 2), conv_stage(32, 64, 2),
                                         conv_stage(64, 128, 2))
        self.image_head = nn.Linear(2 * 128, EMBED_DIM)
        self.words = nn.Embedding(vocab_size, WORD_DIM, padding_idx=0)
        self.text_head = nn.Sequential(nn.Linear(2 * WORD_DIM, 128), nn.ReLU(inplace=True), nn.Linear(128, EMBED_DIM))

    def encode_image(self, pooled: torch.Tensor) -> torch.Tensor:
        features = self.image_tower((pooled - 0.5) / 0.25)
        return self.image_head(torch.cat([features.mean((2, 3)), features.amax((2, 3))], dim=1))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        present = (ids > 0).unsqueeze(-1)
        vectors = self.words(ids)
        mean = (vectors * present).sum(1) / present.sum(1).clamp(min=1)
        top = vectors.masked_fill(~present, -1e4).amax(1)
        return self.text_head(torch.cat([mean, top], dim=1))


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


class DemoEncoder(EncoderSpecModel):
    """The demo dual encoder behind the :class:`EncoderSpecModel` interface; vectors ``(128,)``.

    Reads ``options["optim"]["resume"]``; ``None`` gives random weights (seeded) and the grammar's
    vocabulary, the untrained baseline.
    """

    name = "demo"

    def __init__(self, options: dict | None = None, device: str | None = None):
        super().__init__(options, device)
        self.torch_device = check_device(self.device)
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

    @torch.inference_mode()
    def image_encoder(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(N, 256, 256, 3)`` -> float32 ``(N, 128)``, in batches of ``batch_size``."""
        tiles = check_tiles(tiles, self.tile_size)
        out = []
        for start in range(0, len(tiles), self.batch_size):
            batch = torch.from_numpy(tiles[start:start + self.batch_size]).to(self.torch_device)
            out.append(self.network.encode_image(pool_tiles(batch)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)

    @torch.inference_mode()
    def text_encoder(self, text: str) -> np.ndarray:
        """One caption -> float32 ``(128,)``; unknown words count as ``<unk>``."""
        ids = encode_captions([text], self.index).to(self.torch_device)
        return self.network.encode_text(ids)[0].float().cpu().numpy()
