"""AMFMN (Yuan et al., 2021) as the SLM code builds it, with the state-dict keys and shapes of the official
``AMFMN.tar`` checkpoint.

- Image branch: ResNet-18 (torchvision's layers and keys, :mod:`predict.layers.resnet`) gives multi-scale
  features; the visual self-attention (VSA) turns them into a gate on the pooled ``layer4`` feature.
- Text branch: SkipThought ``BayesianUniSkip`` (620-d word embedding, a 2400-unit GRU made of six linear
  maps, the state at the last non-padding step), then ``Linear(2400, 512)`` and ReLU.

Dropout is left out: the SLM code only runs these networks in eval mode, where it is the identity.
Module names follow the original so that ``load_state_dict(strict=True)`` takes the official checkpoint.
"""
from __future__ import annotations

import functools
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from predict.layers.common import l2norm
from predict.layers.resnet import ResNet18

logger = logging.getLogger(__name__)

WORD_DIM = 620  # SkipThought word embedding size
GRU_DIM = 2400  # SkipThought uni-skip hidden size
VSA_GRID = 16  # side of the VSA attention map for a 256x256 input
SKIPTHOUGHT_FILES = ("dictionary.txt", "utable.npy", "uni_skip.npz")


class MultiScaleResNet(nn.Module):
    """ResNet-18 features at two scales plus the pooled top feature (the original ``ExtractFeature``).

    Args:
        embed_dim: size of the pooled feature after ``linear``.
    """

    def __init__(self, embed_dim: int = 512):
        super().__init__()
        self.resnet = ResNet18()  # every tensor comes from the checkpoint
        self.linear = nn.Linear(512, embed_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 3, 256, 256)`` -> lower ``(B, 192, 64, 64)``, higher ``(B, 768, 16, 16)``, solo ``(B, D)``."""
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(images))))
        f1 = r.layer1(x)
        f2 = r.layer2(f1)
        f3 = r.layer3(f2)
        f4 = r.layer4(f3)
        lower = torch.cat([f1, F.interpolate(f2, scale_factor=2, mode="nearest")], dim=1)
        higher = torch.cat([f3, F.interpolate(f4, scale_factor=2, mode="nearest")], dim=1)
        solo = self.linear(torch.mean(f4.flatten(2), dim=-1))
        return lower, higher, solo


class VisualSelfAttention(nn.Module):
    """The original ``VSA_Module``: an attention map from both scales gates the pooled feature.

    Args:
        channels: channels of each scale after sub-sampling (yaml ``multiscale_input_channel``, 3).
        out_channels: channels of the attention map (yaml ``multiscale_output_channel``, 1).
        embed_dim: size of the gated feature.
    """

    def __init__(self, channels: int = 3, out_channels: int = 1, embed_dim: int = 512):
        super().__init__()
        self.LF_conv = nn.Conv2d(192, channels, kernel_size=3, stride=4)
        self.HF_conv = nn.Conv2d(768, channels, kernel_size=1, stride=1)
        self.conv1x1_1 = nn.Conv2d(channels * 2, out_channels, kernel_size=1)
        self.conv1x1_2 = nn.Conv2d(channels * 2, out_channels, kernel_size=1)
        self.solo_attention = nn.Linear(VSA_GRID * VSA_GRID, embed_dim)

    def forward(self, lower: torch.Tensor, higher: torch.Tensor, solo: torch.Tensor) -> torch.Tensor:
        """The three outputs of :class:`MultiScaleResNet` -> L2-normalised ``(B, D)``."""
        low = self.LF_conv(lower)
        high = self.HF_conv(higher)
        both = torch.cat([low, high], dim=1)
        both = high.mean(dim=1, keepdim=True).expand_as(both) + both
        attended = self.conv1x1_1(both) * torch.sigmoid(self.conv1x1_2(both))
        return l2norm(solo * torch.sigmoid(self.solo_attention(attended.flatten(1))))


class SkipThoughtGRUCell(nn.Module):
    """SkipThought's GRU cell as six linear maps (reset ``r``, update ``i``, candidate ``n``)."""

    def __init__(self):
        super().__init__()
        self.weight_ir = nn.Linear(WORD_DIM, GRU_DIM)
        self.weight_ii = nn.Linear(WORD_DIM, GRU_DIM)
        self.weight_in = nn.Linear(WORD_DIM, GRU_DIM)
        self.weight_hr = nn.Linear(GRU_DIM, GRU_DIM, bias=False)
        self.weight_hi = nn.Linear(GRU_DIM, GRU_DIM, bias=False)
        self.weight_hn = nn.Linear(GRU_DIM, GRU_DIM, bias=False)


class SkipThoughtGRU(nn.Module):
    """The GRU of ``BayesianUniSkip`` (its dropout masks are off in eval), run from a zero state."""

    def __init__(self):
        super().__init__()
        self.gru_cell = SkipThoughtGRUCell()

    def forward(self, words: torch.Tensor, steps: int) -> torch.Tensor:
        """Word vectors ``(B, L, 620)`` -> the states ``(B, steps, 2400)`` after each of the first ``steps``."""
        cell = self.gru_cell
        # The input-side maps do not depend on the state: one matrix product for all steps.
        x_r, x_i, x_n = cell.weight_ir(words), cell.weight_ii(words), cell.weight_in(words)
        h = words.new_zeros(words.shape[0], GRU_DIM)
        states = []
        for t in range(steps):
            r = torch.sigmoid(x_r[:, t] + cell.weight_hr(h))
            i = torch.sigmoid(x_i[:, t] + cell.weight_hi(h))
            n = torch.tanh(x_n[:, t] + r * cell.weight_hn(h))
            h = (1 - i) * n + i * h
            states.append(h)
        return torch.stack(states, dim=1)


class UniSkip(nn.Module):
    """SkipThought ``BayesianUniSkip``: token ids -> the GRU state at each row's last non-padding token.

    Args:
        num_embeddings: vocabulary size + 1; row 0 is padding.
    """

    def __init__(self, num_embeddings: int):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, WORD_DIM, padding_idx=0)
        self.rnn = SkipThoughtGRU()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, L)`` ids, 0 = padding at the end -> ``(B, 2400)``."""
        lengths = ids.shape[1] - (ids == 0).sum(dim=1)  # the original counts the zeros
        states = self.rnn(self.embedding(ids), int(lengths.max()))
        return states[torch.arange(ids.shape[0], device=ids.device), lengths - 1]

    def init_from_skipthoughts(self, dir_st: str | None, words: list[str]) -> None:
        """Initialise from the SkipThought files in ``dir_st`` (for training), or say once that it is random.

        Args:
            dir_st: folder with ``dictionary.txt``, ``utable.npy`` and ``uni_skip.npz`` (yaml ``seq2vec.dir_st``).
            words: the vocabulary in index order; embedding row ``k + 1`` is ``words[k]``.
        """
        missing = [name for name in SKIPTHOUGHT_FILES if not dir_st or not os.path.isfile(os.path.join(dir_st, name))]
        if missing:
            note_once(f"AMFMN text branch initialised randomly: {', '.join(missing)} not found in "
                      f"seq2vec.dir_st={dir_st!r} (a checkpoint overwrites these weights anyway)")
            return
        self.embedding.weight.data.copy_(skipthought_embedding(dir_st, words))
        self.rnn.load_state_dict(skipthought_gru_state(os.path.join(dir_st, "uni_skip.npz")))


@functools.cache
def note_once(message: str) -> None:
    """Log ``message`` the first time it comes up in this process."""
    logger.warning(message)


def load_plain_array(path: str, key: str | None = None) -> np.ndarray:
    """A float32 array from an ``.npy`` file (or entry ``key`` of an ``.npz``), refusing pickled objects."""
    try:
        if key is None:
            return np.load(path, allow_pickle=False).astype(np.float32, copy=False)
        with np.load(path, allow_pickle=False) as archive:
            return archive[key].astype(np.float32, copy=False)
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path}: cannot read SkipThought array{f' {key!r}' if key else ''} ({exc}); "
                           "see predict/checkpoints/README.md") from None


def skipthought_embedding(dir_st: str, words: list[str]) -> torch.Tensor:
    """The ``(len(words) + 1, 620)`` embedding skipthoughts builds: row 0 zero, row ``k + 1`` the table row
    of ``words[k]``, the ``UNK`` row for words not in ``dictionary.txt``."""
    with open(os.path.join(dir_st, "dictionary.txt"), encoding="utf-8") as f:
        dictionary = {line.strip(): idx for idx, line in enumerate(f)}
    table = load_plain_array(os.path.join(dir_st, "utable.npy"))
    if "UNK" not in dictionary or table.shape != (len(dictionary), WORD_DIM):
        raise ValueError(f"{dir_st}: dictionary.txt needs an 'UNK' line and utable.npy one {WORD_DIM}-d row "
                           f"per line, got {len(dictionary)} lines and table {table.shape}")
    rows = np.array([dictionary.get(word, dictionary["UNK"]) for word in words])
    unknown = sum(word not in dictionary for word in words)
    if unknown:
        note_once(f"Warning: {unknown}/{len(dictionary)} words are not in dictionary, thus set UNK")
    weight = np.zeros((len(words) + 1, WORD_DIM), np.float32)
    weight[1:] = table[rows]
    return torch.from_numpy(weight)


def skipthought_gru_state(path: str) -> dict[str, torch.Tensor]:
    """``gru_cell`` weights from the theano ``uni_skip.npz`` (``encoder_W`` holds reset then update gate)."""
    p = {key: torch.from_numpy(load_plain_array(path, key)) for key in
         ("encoder_W", "encoder_b", "encoder_U", "encoder_Wx", "encoder_bx", "encoder_Ux")}
    return {
        "gru_cell.weight_ir.weight": p["encoder_W"].t()[:GRU_DIM],
        "gru_cell.weight_ii.weight": p["encoder_W"].t()[GRU_DIM:],
        "gru_cell.weight_in.weight": p["encoder_Wx"].t(),
        "gru_cell.weight_ir.bias": p["encoder_b"][:GRU_DIM],
        "gru_cell.weight_ii.bias": p["encoder_b"][GRU_DIM:],
        "gru_cell.weight_in.bias": p["encoder_bx"],
        "gru_cell.weight_hr.weight": p["encoder_U"].t()[:GRU_DIM],
        "gru_cell.weight_hi.weight": p["encoder_U"].t()[GRU_DIM:],
        "gru_cell.weight_hn.weight": p["encoder_Ux"].t(),
    }


class SkipThoughtText(nn.Module):
    """The original ``Skipthoughts_Embedding_Module``: ``relu(to_out(uni-skip(ids)))``, ``(B, D)``."""

    def __init__(self, num_embeddings: int, embed_dim: int = 512):
        super().__init__()
        self.seq2vec = UniSkip(num_embeddings)
        self.to_out = nn.Linear(GRU_DIM, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.relu(self.to_out(self.seq2vec(ids)))


class AMFMN(nn.Module):
    """The AMFMN encoders of the SLM code.

    Args:
        num_embeddings: vocabulary size + 1 (1350 for the RSITMD vocabulary).
        embed_dim: size of the image and text vectors (512).
        multiscale_channels: yaml ``model.multiscale.multiscale_input_channel`` (3).
        multiscale_out_channels: yaml ``model.multiscale.multiscale_output_channel`` (1).
    """

    def __init__(self, num_embeddings: int, embed_dim: int = 512, multiscale_channels: int = 3,
                 multiscale_out_channels: int = 1):
        super().__init__()
        self.embed_dim = embed_dim
        self.extract_feature = MultiScaleResNet(embed_dim)
        self.mvsa = VisualSelfAttention(multiscale_channels, multiscale_out_channels, embed_dim)
        self.text_feature = SkipThoughtText(num_embeddings, embed_dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, 256, 256)`` -> L2-normalised ``(B, D)``."""
        return self.mvsa(*self.extract_feature(images))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, L)`` ids, trailing 0 padding allowed -> non-negative ``(B, D)`` (not normalised)."""
        return self.text_feature(ids)
