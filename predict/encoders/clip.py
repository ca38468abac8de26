"""CLIP-family encoders (OpenAI CLIP, RemoteCLIP, GeoRSCLIP, SkyCLIP, ...) on ``open_clip``, from a local
weight file, with the model's own preprocessing applied to whole batches of tiles.

Yaml::

    model:
      name: open_clip
      architecture: ViT-B-32        # any open_clip model name with the bundled tokenizer
      weights: predict/checkpoints/RemoteCLIP-ViT-B-32.pt
      source: Hugging Face hub repo chendelong/RemoteCLIP (file RemoteCLIP-ViT-B-32.pt)
      precision: fp32               # fp32 | fp16 (CUDA only) | bf16
      batch_size: 64
      strict: true                  # false: load what matches and report the rest

Nothing is ever downloaded: the model is built without pretrained weights (``pretrained=None``) and
filled from ``weights``.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from predict.encoders.base import EncoderError
from predict.encoders.checkpoints import load_weights, mismatch_message, read_checkpoint, unwrap_state_dict
from predict.encoders.torch_encoder import TorchEncoder, torch_dtype

INTERPOLATIONS = ("bicubic", "bilinear")


def pil_like_resize(images: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize as PIL does for a uint8 image: antialiased, width pass then height pass, each rounded to
    whole grey levels and clipped to 0..255.

    Rounding between the passes matters: without it the result differs from PIL by up to 4 grey levels
    (bicubic overshoot clipped by PIL after the first pass); with it by at most 1, on ~0.1% of the values.

    Args:
        images: ``(N, C, H, W)`` float tensor of grey levels 0..255.
        size: output side in pixels (output ``(N, C, size, size)``).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
    Returns:
        ``(N, C, size, size)`` float tensor of whole grey levels 0..255.
    """
    wide = F.interpolate(images, size=(images.shape[2], size), mode=interpolation, antialias=True, align_corners=False)
    wide = wide.round_().clamp_(0, 255)
    out = F.interpolate(wide, size=(size, size), mode=interpolation, antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255)


def pil_resize(tiles: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` -> uint8 ``(N, size, size, 3)``, each tile resized by PIL itself, as open_clip's
    transform does: on a CPU about 2.5x faster than :func:`pil_like_resize` on the batch, and exact.

    >>> pil_resize(np.zeros((2, 8, 8, 3), np.uint8), 4).shape
    (2, 4, 4, 3)
    """
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[interpolation]
    out = np.empty((len(tiles), size, size, 3), np.uint8)
    for k, tile in enumerate(tiles):
        out[k] = np.asarray(Image.fromarray(tile).resize((size, size), method))
    return out


def preprocess_tiles(tiles: torch.Tensor, size: int, mean, std, interpolation: str = "bicubic") -> torch.Tensor:
    """open_clip's inference transform (resize shortest side, centre crop, ``ToTensor``, ``Normalize``)
    on a batch of square tiles.

    A square tile resized on its shortest side to a square target needs no crop, so every open_clip
    resize mode (shortest, longest, squash) reduces to one resize: PIL's own on a CPU (:func:`pil_resize`),
    :func:`pil_like_resize` on the batch elsewhere.

    Args:
        tiles: ``(N, S, S, 3)`` uint8 RGB tensor.
        size: the model's input side in pixels.
        mean, std: per-channel normalisation, 3 floats each, for pixel values in 0..1.
        interpolation: ``"bicubic"`` or ``"bilinear"``.
    Returns:
        ``(N, 3, size, size)`` float32 tensor, ``(x / 255 - mean) / std``.
    """
    if tiles.shape[1] != size and tiles.device.type == "cpu":
        tiles = torch.from_numpy(pil_resize(tiles.numpy(), size, interpolation))
    images = tiles.permute(0, 3, 1, 2).float()
    if images.shape[2] != size:
        images = pil_like_resize(images, size, interpolation)
    mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images / 255.0 - mean) / std


def check_architecture(architecture: str, where: str) -> None:
    """An :class:`EncoderError` if open_clip does not know ``architecture`` or needs a download for it
    (Hugging Face text towers and tokenizers, SigLIP's sentencepiece tokenizers), or its input is not square."""
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise EncoderError(f"{where}: model.architecture {architecture!r} is not an open_clip model name "
                           "(see open_clip.list_models(), e.g. ViT-B-32, ViT-L-14, ViT-H-14, RN50)")
    text_cfg = config.get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name") or "siglip" in architecture.lower():
        raise EncoderError(f"{where}: architecture {architecture!r} needs a Hugging Face download for its text "
                           "side; this encoder runs offline models with open_clip's bundled tokenizer only")
    size = config.get("vision_cfg", {}).get("image_size", 224)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        raise EncoderError(f"{where}: architecture {architecture!r} has a non-square input {size}, not supported")


def build_empty_model(architecture: str, precision: str) -> torch.nn.Module:
    """``open_clip.create_model`` on the CPU with no pretrained weights, without its warning that the
    model is randomly initialised (the caller loads the weights next)."""
    root = logging.getLogger()
    quiet = lambda record: "initialized randomly" not in record.getMessage()  # noqa: E731
    root.addFilter(quiet)
    try:
        return open_clip.create_model(architecture, pretrained=None, precision=precision, device="cpu")
    finally:
        root.removeFilter(quiet)


class ImageTower(torch.nn.Module):
    """An open_clip model's image side: preprocessed images -> ``(B, D)`` float32 unit vectors."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images).float(), dim=-1)


class OpenCLIPEncoder(TorchEncoder):
    """An ``open_clip`` model as a SeLo encoder: uint8 RGB tiles and queries in, L2-normalised vectors out.

    Attributes:
        model: the ``open_clip`` model, in eval mode on ``device``.
        missing_keys, unexpected_keys: what non-strict loading left out / ignored (empty when strict).
    """

    name = "open_clip"
    uses_autocast = False  # the model itself is cast to model.precision
    any_tile_size = True  # resized to the model's input by its own preprocessing

    def __init__(self, options: dict, device: str | None = None):
        super().__init__(options, device)
        model_options = self.options["model"]
        where = self.options.get("_yaml_path", "encoder yaml")
        architecture = model_options.get("architecture")
        weights = model_options.get("weights")
        if not architecture or not weights:
            raise EncoderError(f"{where}: the open_clip encoder needs model.architecture and model.weights")
        check_architecture(architecture, where)
        self.input_dtype = torch_dtype(self.precision)

        checkpoint = read_checkpoint(weights, f"{architecture} weight file", model_options.get("source", ""))
        state = unwrap_state_dict(checkpoint)
        model = build_empty_model(architecture, self.precision)
        strict = bool(model_options.get("strict", True))
        self.missing_keys, self.unexpected_keys = load_weights(model, state, weights, strict=strict)
        if self.missing_keys or self.unexpected_keys:
            warnings.warn(mismatch_message(weights, self.missing_keys, self.unexpected_keys, [])
                          + " (strict: false; missing weights keep their random initial values)")
        self.model = model.to(self.torch_device).eval()
        self.image_tower = ImageTower(self.model)
        self.embed_dim = self.model.visual.output_dim
        self.tokenizer = open_clip.get_tokenizer(architecture)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.input_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.interpolation = cfg.get("interpolation", "bicubic")
        if self.interpolation not in INTERPOLATIONS:
            raise EncoderError(f"{where}: {architecture} resizes with {self.interpolation!r}; only bicubic, bilinear")

    def encode_batch(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(B, S, S, 3)`` -> ``(B, D)`` float32 unit vectors."""
        return self.image_tower(self.network_input(tiles).to(self.input_dtype)).cpu().numpy()

    def image_network(self) -> torch.nn.Module:
        """:class:`ImageTower`: the runtimes' network."""
        return self.image_tower

    def network_input(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(B, S, S, 3)`` -> float32 ``(B, 3, input_size, input_size)``: :func:`preprocess_tiles`."""
        return preprocess_tiles(torch.as_tensor(tiles, device=self.torch_device), self.input_size,
                                self.mean, self.std, self.interpolation)

    def text_encoder(self, text: str) -> np.ndarray:
        """One query -> ``(D,)`` float32 unit vector (open_clip's tokenizer, truncated to its context length)."""
        tokens = self.tokenizer([text]).to(self.torch_device)
        with self.inference():
            features = self.model.encode_text(tokens).float()
            return F.normalize(features, dim=-1)[0].cpu().numpy().astype(np.float32, copy=False)
