"""What the AMFMN and LW-MCR encoders share: vocabulary, checkpoint loading, image normalisation and
batched inference.

A subclass names its network (``build_network``), its checkpoint file and the fewest tokens its text branch
accepts; the network itself provides ``encode_image(x)`` for a normalised ``(B, 3, 256, 256)`` batch and
``encode_text(ids)`` for ``(B, L)`` token ids, both returning ``(B, D)`` vectors before the encoder's own
final L2 normalisation.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from predict.checkpoint_io import CHECKPOINT_DIR_HINT, load_weights, read_checkpoint, unwrap_state_dict
from predict.model_encoder import (EncoderError, EncoderSpecModel, check_device, check_tiles, resolve_precision,
                                   torch_dtype)
from predict.text import OFFICIAL_REPO, Vocabulary

# torchvision's ImageNet statistics, as the original's transforms.Normalize.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """``x / (||x|| + eps)`` along ``dim``: the original's l2norm (eps added to the norm, not a clamp)."""
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


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


class RetrievalEncoder(EncoderSpecModel):
    """An official SLM retrieval model (AMFMN, LW-MCR) behind the :class:`EncoderSpecModel` contract.

    Args:
        options: the parsed yaml: ``dataset.vocab_path`` (RSITMD vocabulary json), ``optim.resume`` (the
            official checkpoint, ``torch.save({'model': state_dict})``), optional ``model.batch_size`` and
            ``model.precision`` (``fp32``, or ``fp16`` / ``bf16`` autocast: fp16 on CUDA only).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; the checkpoint is read on the CPU, then moved there.

    Attributes:
        vocab: the :class:`~predict.text.Vocabulary`.
        network: the ``torch.nn.Module`` with the checkpoint's weights, in eval mode on ``device``.
    """

    checkpoint_file = ""  # the official file name, for messages
    min_tokens = 1  # the text branch refuses shorter captions, as the original does

    def __init__(self, options: dict, device: str | None = None):
        super().__init__(options, device)
        self.device = str(check_device(self.device))
        self.precision = resolve_precision(str((options.get("model") or {}).get("precision", "fp32")),
                                           torch.device(self.device).type, options.get("_yaml_path", self.name))
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

    def build_network(self, options: dict, vocab: Vocabulary) -> nn.Module:
        """The untrained network for these options; subclasses define it."""
        raise NotImplementedError

    def autocast(self):
        """The reduced-precision context of ``model.precision`` (disabled for fp32)."""
        return torch.autocast(torch.device(self.device).type, dtype=torch_dtype(self.precision),
                              enabled=self.precision != "fp32")

    def image_encoder(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(N, 256, 256, 3)`` -> L2-normalised ``(N, D)`` float32, ``batch_size`` tiles per pass."""
        tiles = check_tiles(tiles, self.tile_size)
        chunks = []
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(tiles), self.batch_size):
                # torch.tensor copies, so read-only tiles (a memory-mapped image) are fine.
                batch = torch.tensor(tiles[start:start + self.batch_size], device=self.device)
                vectors = l2norm(self.network.encode_image(normalize_tiles(batch)).float())
                chunks.append(vectors.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.network.embed_dim), np.float32)
        return np.concatenate(chunks)

    def token_ids(self, text: str) -> np.ndarray:
        """The caption's token ids ``(L,)`` int64, as the original encoders compute them."""
        return self.vocab.encode(text)

    def text_encoder(self, text: str) -> np.ndarray:
        """One caption -> L2-normalised ``(D,)`` float32; too few tokens is a one-line EncoderError."""
        ids = self.token_ids(text)
        if len(ids) < self.min_tokens:
            raise EncoderError(f"{self.name} needs at least {self.min_tokens} word(s) after the punctuation filter, "
                               f"got {len(ids)} in {text!r}")
        with torch.inference_mode(), self.autocast():
            vector = l2norm(self.network.encode_text(torch.from_numpy(ids[None]).to(self.device)).float())[0]
        return vector.float().cpu().numpy()
