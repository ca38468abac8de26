"""The demo encoder's network: a small CNN image tower and a word-embedding text tower (``DemoNet``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

EMBED_DIM = 128
WORD_DIM = 64
POOL = 4  # 256 -> 64 pixels before the CNN: enough for colours and layouts, and fast on a CPU
POOL_CHUNK = 4  # tiles converted to float at a time: 3 MB, reused by the allocator instead of fresh pages


def pool_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(N, 256, 256, 3)`` -> float32 ``(N, 3, 64, 64)`` in [0, 1], means of 4 x 4 blocks
    (channels-last memory, as pooling the permuted batch gives).

    The float copy is made ``POOL_CHUNK`` tiles at a time: the result is the same bit for bit, without a
    float32 copy of the whole batch (16x the pooled size) written into fresh memory on every call.
    """
    count, height, width, _ = tiles.shape
    pooled = torch.empty((count, 3, height // POOL, width // POOL), dtype=torch.float32, device=tiles.device,
                         memory_format=torch.channels_last)
    for start in range(0, count, POOL_CHUNK):
        x = tiles[start:start + POOL_CHUNK].permute(0, 3, 1, 2).to(torch.float32).div_(255)
        pooled[start:start + POOL_CHUNK] = F.avg_pool2d(x, POOL)
    return pooled


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
