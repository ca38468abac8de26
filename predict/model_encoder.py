"""The encoder contract of the SeLo pipeline, the encoder registry and ``load_encoder``.

Every encoder, built-in or the user's own, is an :class:`EncoderSpecModel`:

- ``image_encoder(tiles)``: uint8 RGB tiles ``(N, tile_size, tile_size, 3)`` -> ``(N, D)`` float32;
- ``text_encoder(text)``: one query string -> ``(D,)`` float32;
- ``cosine_sim(image_vectors, text_vector)``: ``(N, D)``, ``(D,)`` -> ``(N,)`` scores; by default the
  original's similarity, the MEAN of the elementwise product of the two L2-normalised vectors
  (cosine / D, not the cosine).

An encoder is picked by the yaml's ``model.name``: a registered name (``AMFMN``, ``LW_MCR``, ``demo``,
``open_clip``) or ``package.module:Class`` for a class that lives outside this repository (imported from
PYTHONPATH). Either way the class is constructed as ``Class(options, device)``, ``options`` being the
whole parsed yaml with its paths already resolved.

Run ``python predict/model_encoder.py --yaml_path ...`` for the original's self-check.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

# Built-in encoders by name -> "module:Class", imported only when asked for (keeps torch-free imports cheap).
ENCODER_REGISTRY: dict[str, str] = {
    "AMFMN": "predict.layers.amfmn_encoder:AMFMNEncoder",
    "LW_MCR": "predict.layers.lw_mcr_encoder:LWMCREncoder",
    "demo": "predict.layers.demo_encoder:DemoEncoder",
    "open_clip": "predict.layers.clip_encoder:OpenCLIPEncoder",
}

# Yaml keys holding file paths, resolved against the yaml's folder, then the repo root.
PATH_KEYS = (("optim", "resume"), ("dataset", "vocab_path"), ("model", "weights"), ("model", "seq2vec", "dir_st"))


class EncoderError(RuntimeError):
    """A problem with an encoder's yaml, checkpoint or vocabulary; the message is one clear line."""


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (numpy's norm, as the original's ``cosine_sim``), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def check_tiles(tiles: np.ndarray, tile_size: int | None = None) -> np.ndarray:
    """``tiles`` as a C-contiguous uint8 RGB ``(N, S, S, 3)`` array (S == ``tile_size`` when given; N may be 0);
    anything else is a one-line ``ValueError``."""
    tiles = np.asarray(tiles)
    side = "S" if tile_size is None else tile_size
    if (tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[3] != 3
            or tiles.shape[1] != tiles.shape[2] or (tile_size is not None and tiles.shape[1] != tile_size)):
        raise ValueError(f"image_encoder expected uint8 RGB tiles (N, {side}, {side}, 3), got {tiles.dtype} {tiles.shape}")
    return np.ascontiguousarray(tiles)


def check_device(device: str):
    """``device`` as a ``torch.device``; an unknown name, or CUDA where there is none, is an :class:`EncoderError`."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise EncoderError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} asked for, but CUDA is not available here: use device='cpu'")
    return parsed


PRECISIONS = ("fp32", "fp16", "bf16")  # yaml model.precision


def resolve_precision(precision: str, device_type: str, where: str) -> str:
    """The precision to run: ``precision`` checked against :data:`PRECISIONS`; fp16 on a CPU falls back to
    fp32 with a warning (slow and inexact there; bf16 is the reduced precision CPUs run well)."""
    if precision not in PRECISIONS:
        raise EncoderError(f"{where}: model.precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device_type == "cpu":
        warnings.warn(f"{where}: precision fp16 needs CUDA; running fp32 on the CPU (bf16 works on CPUs)")
        return "fp32"
    return precision


def torch_dtype(precision: str):
    """``torch.float32`` / ``float16`` / ``bfloat16`` for ``"fp32"`` / ``"fp16"`` / ``"bf16"``."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class EncoderSpecModel:
    """Base class of every encoder the pipeline can use.

    Attributes:
        name: a short name used in logs and cache keys.
        tile_size: side in pixels of the square tiles the pipeline hands to ``image_encoder``.
        batch_size: how many tiles the pipeline hands over per ``image_encoder`` call.
    """

    name = "encoder"
    tile_size = 256
    batch_size = 64

    def __init__(self, options: dict | None = None, device: str | None = None):
        self.options = options or {}
        self.device = device or "cpu"
        batch = (self.options.get("model") or {}).get("batch_size")
        if batch:
            self.batch_size = int(batch)

    def image_encoder(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(N, tile_size, tile_size, 3)`` -> ``(N, D)`` float32."""
        raise NotImplementedError

    def text_encoder(self, text: str) -> np.ndarray:
        """One query -> ``(D,)`` float32."""
        raise NotImplementedError

    def cosine_sim(self, image_vectors: np.ndarray, text_vector: np.ndarray) -> np.ndarray:
        """The original's similarity: ``mean(a / |a| * b / |b|)`` per row, ``(N,)`` float32."""
        a = l2_normalize(np.atleast_2d(image_vectors))
        b = l2_normalize(np.asarray(text_vector).reshape(-1))
        return np.mean(a * b, axis=1, dtype=np.float32)

    def cache_key(self) -> str:
        """Identifies the weights, so that cached tile vectors are never reused across encoders."""
        text = json.dumps(self.options, sort_keys=True, default=str)
        resume = (self.options.get("optim") or {}).get("resume") or (self.options.get("model") or {}).get("weights")
        if resume and os.path.isfile(resume):
            st = os.stat(resume)
            text += f"|{st.st_size}|{st.st_mtime_ns}"
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def register_encoder(name: str, target: str) -> None:
    """Register ``target`` ("module:Class") under ``name`` for the yaml's ``model.name``."""
    ENCODER_REGISTRY[name] = target


def import_encoder_class(name: str) -> Callable:
    """The class behind a registered name or a ``package.module:Class`` path."""
    target = ENCODER_REGISTRY.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(ENCODER_REGISTRY))
        raise EncoderError(f"unknown encoder {name!r}: use one of {known} or 'package.module:Class'")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EncoderError(f"cannot import encoder module {module_name!r} (is it on PYTHONPATH?): {exc}") from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise EncoderError(f"module {module_name!r} has no encoder class {class_name!r}") from None


def resolve_path(path: str | None, base_dir: Path) -> str | None:
    """An absolute path as is; a relative one against ``base_dir`` if it exists there, else the repo root.

    When it exists in neither place, the first candidate whose folder exists is returned so that errors
    name it (a preset's ``predict/checkpoints/x.pt`` -> the repo's folder), else the ``base_dir`` one.
    """
    if not path:
        return path
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return str(p)
    candidates = [base / p for base in (base_dir, REPO_ROOT)]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    for candidate in candidates:
        if candidate.parent.is_dir():
            return str(candidate.resolve())
    return str(candidates[0].resolve())


def read_options(yaml_path: str | os.PathLike) -> dict:
    """Parse an encoder yaml and resolve the paths it holds (see ``PATH_KEYS``)."""
    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise EncoderError(f"{yaml_path}: encoder yaml not found")
    try:
        with open(yaml_path, encoding="utf-8") as f:
            options = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise EncoderError(f"{yaml_path}: not valid yaml ({str(exc).splitlines()[0]})") from None
    if not isinstance(options, dict) or not isinstance(options.get("model"), dict) or "name" not in options["model"]:
        raise EncoderError(f"{yaml_path}: missing key 'model.name' (the encoder to build)")
    base = yaml_path.resolve().parent
    for keys in PATH_KEYS:
        node = options
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = resolve_path(node[keys[-1]], base)
    options["_yaml_path"] = str(yaml_path.resolve())
    return options


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_encoder(yaml_path: str | os.PathLike, device: str | None = None,
                 checkpoint: str | None = None, batch_size: int | None = None) -> EncoderSpecModel:
    """Build the encoder a yaml describes, with its weights loaded.

    Args:
        yaml_path: the encoder yaml (``model.name``, ``optim.resume``, ``dataset.vocab_path``, ...).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; CUDA when available if None.
        checkpoint: overrides the yaml's ``optim.resume``.
        batch_size: overrides the yaml's ``model.batch_size`` (tiles per ``image_encoder`` call).
    """
    options = copy.deepcopy(read_options(yaml_path))
    if checkpoint is not None:
        options.setdefault("optim", {})["resume"] = resolve_path(checkpoint, Path.cwd())
    if batch_size is not None:
        options["model"]["batch_size"] = int(batch_size)
    cls = import_encoder_class(str(options["model"]["name"]))
    encoder = cls(options, device or default_device())
    if not isinstance(encoder, EncoderSpecModel):
        missing = [m for m in ("image_encoder", "text_encoder", "cosine_sim") if not callable(getattr(encoder, m, None))]
        if missing:
            raise EncoderError(f"{cls.__name__} lacks {', '.join(missing)} of the EncoderSpecModel contract")
    return encoder


SAMPLE_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def default_image_path() -> str | None:
    """The first image directly in ``test_data/`` (the original used ``sparseresidential_3814.tif`` there),
    or None when there is none, as on a fresh clone."""
    folder = REPO_ROOT / "test_data"
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_IMAGE_SUFFIXES) if folder.is_dir() else []
    return str(images[0]) if images else None


def self_check_tile(image_path: str | None, tile_size: int) -> np.ndarray:
    """uint8 RGB ``(tile_size, tile_size, 3)``: the image resized with PIL's bilinear filter, as the
    original's ``transforms.Resize``; a synthetic colour ramp when ``image_path`` is None."""
    if image_path is None:
        ramp = np.linspace(0, 255, tile_size).astype(np.uint8)
        return np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(128)), axis=-1)
    from PIL import Image

    from predict.dataset import read_image  # local import: dataset pulls in cv2

    rgb = np.ascontiguousarray(read_image(image_path)[:, :, ::-1])
    return np.asarray(Image.fromarray(rgb).resize((tile_size, tile_size), Image.BILINEAR))


def self_check(yaml_path: str, image_path: str | None, text: str, device: str | None = None) -> None:
    """The original's encoder test: vector shapes and one similarity, printed."""
    encoder = load_encoder(yaml_path, device=device)
    tile = self_check_tile(image_path, encoder.tile_size)
    image_vector = encoder.image_encoder(tile[None])
    text_vector = encoder.text_encoder(text)
    sim = encoder.cosine_sim(image_vector, text_vector)
    print(f"Encoder: {encoder.name} on {encoder.device}")
    print(f"Image: {image_path or f'synthetic {encoder.tile_size}x{encoder.tile_size} colour ramp'}")
    print(f"Image vector shape: {image_vector.shape}")
    print(f"Text vector shape: {text_vector.shape}")
    print(f"Similarity: {float(sim[0]):.6f}")
    print("Encoder test successful!")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml_path", default=str(REPO_ROOT / "predict/options/RSITMD/RSITMD_AMFMN.yaml"))
    parser.add_argument("--image_path", default=None,
                        help="image to encode (default: the first image of test_data/, else a synthetic tile)")
    parser.add_argument("--text", default="many airplanes parked in the airport")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        self_check(args.yaml_path, args.image_path or default_image_path(), args.text, args.device)
    except Exception as exc:  # the self-check reports any failure in one line
        print(f"Encoder test failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    from predict.model_encoder import main as package_main  # the package's copy: one EncoderSpecModel class

    sys.exit(package_main())
