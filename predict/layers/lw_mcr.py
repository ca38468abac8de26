"""LW-MCR (Yuan et al., 2021) as the SLM code builds it, with the state-dict keys and shapes of the official
LW-MCR checkpoint.

- Image branch: a SqueezeNet-1.0-style backbone gives a low (63x63) and a high (15x15) feature map; both are
  brought to 64 channels at 32x32, bilinear-pooled into a 64x64 map and passed through two small
  conv + channel/spatial attention blocks (ISA), then ``Linear(512, 512)``.
- Text branch: a TextCNN (300-d embedding, 100 filters each of 3, 4 and 5 words, max over time,
  ``Linear(300, 512)``); it needs at least 5 tokens.

Dropout is left out: the SLM code only runs these networks in eval mode, where it is the identity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from predict.layers.common import l2norm

TEXT_KERNELS = (3, 4, 5)  # TextCNN window sizes, in words
WORD_DIM = 300
FILTERS = 100


class Fire(nn.Module):
    """SqueezeNet's Fire module: ``relu(squeeze)`` then ``cat(relu(expand1x1), relu(expand3x3))``."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], dim=1)


class SqueezeBackbone(nn.Module):
    """``(B, 3, 256, 256)`` -> low ``(B, 128, 63, 63)`` after ``conv_1``, high ``(B, 512, 15, 15)`` after ``conv_2``."""

    def __init__(self):
        super().__init__()
        self.conv_1 = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64))
        self.conv_2 = nn.Sequential(
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(128, 32, 128, 128), Fire(256, 32, 128, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.conv_1(images)
        return low, self.conv_2(low)


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(g(avgpool(x)) + g(maxpool(x)))``, ``g`` two bias-free 1x1 convs."""

    def __init__(self, channels: int, ratio: int = 4):
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(channels, channels // ratio, 1, bias=False), nn.ReLU(),
                                nn.Conv2d(channels // ratio, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)) + self.fc(F.adaptive_max_pool2d(x, 1)))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``sigmoid(conv7x7(cat(channel mean, channel max)))``."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.max(x, dim=1, keepdim=True)[0]], dim=1)
        return torch.sigmoid(self.conv1(pooled))


class LWMCRImage(nn.Module):
    """The LW-MCR image branch, ``(B, 3, 256, 256)`` -> L2-normalised ``(B, D)``.

    The ``ISA_k_*`` modules are flat attributes, as in the original, so the checkpoint keys match.
    """

    def __init__(self, embed_dim: int = 512):
        super().__init__()
        self.backbone = SqueezeBackbone()
        self.lower_trans = nn.Sequential(nn.Conv2d(128, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64),
                                         nn.ReLU(inplace=True))
        # A 1x1 conv with padding 1, as the original: 30x30 -> 32x32, the border is the bias alone.
        self.higher_trans = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                          nn.Conv2d(512, 64, 1, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.ISA_1_c = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.ISA_1_b = nn.BatchNorm2d(4)
        self.ISA_1_p = nn.PReLU()
        self.ISA_1_ca = ChannelAttention(4)
        self.ISA_1_sa = SpatialAttention()
        self.ISA_2_c = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.ISA_2_b = nn.BatchNorm2d(8)
        self.ISA_2_p = nn.PReLU()
        self.ISA_2_ca = ChannelAttention(8)
        self.ISA_2_sa = SpatialAttention()
        self.fc = nn.Linear(512, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(images)
        low = self.lower_trans(low).flatten(2)  # (B, 64, 1024)
        high = self.higher_trans(high).flatten(2)
        pooled = torch.bmm(low, high.transpose(1, 2)) / low.shape[2]  # bilinear pooling, (B, 64, 64)
        pooled = F.normalize(torch.sqrt(pooled + 1e-5)).unsqueeze(1)  # L2 over dim 1, as the original
        x = self.ISA_1_p(self.ISA_1_b(self.ISA_1_c(pooled)))
        x = self.ISA_1_ca(x) * x
        x = F.max_pool2d(self.ISA_1_sa(x) * x, 2)
        x = self.ISA_2_p(self.ISA_2_b(self.ISA_2_c(x)))
        x = self.ISA_2_ca(x) * x
        x = self.ISA_2_sa(x) * x
        return l2norm(self.fc(x.flatten(1)))


class TextCNN(nn.Module):
    """The LW-MCR text branch, int64 ids ``(B, L)`` with ``L >= 5`` -> L2-normalised ``(B, D)``."""

    def __init__(self, num_embeddings: int, embed_dim: int = 512):
        super().__init__()
        self.embed = nn.Embedding(num_embeddings, WORD_DIM)
        self.convs = nn.ModuleList(nn.Conv2d(1, FILTERS, (k, WORD_DIM)) for k in TEXT_KERNELS)
        self.fc = nn.Linear(FILTERS * len(TEXT_KERNELS), embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids).unsqueeze(1)  # (B, 1, L, 300)
        pooled = [F.relu(conv(x)).squeeze(3).max(dim=2)[0] for conv in self.convs]
        return l2norm(self.fc(torch.cat(pooled, dim=1)))


class LWMCR(nn.Module):
    """The LW-MCR encoders of the SLM code.

    Args:
        num_embeddings: vocabulary size + 1 (1350 for the RSITMD vocabulary).
        embed_dim: size of the image and text vectors (512).
    """

    min_tokens = max(TEXT_KERNELS)

    def __init__(self, num_embeddings: int, embed_dim: int = 512):
        super().__init__()
        self.embed_dim = embed_dim
        self.extract_feature = LWMCRImage(embed_dim)
        self.text_feature = TextCNN(num_embeddings, embed_dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract_feature(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_feature(ids)
