"""What the built-in torch encoders share: the device, ``model.precision``, inference mode and autocast."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from predict.encoders.base import EncoderError, EncoderSpecModel, resolve_precision


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device``; an unknown name, or CUDA where there is none, is an :class:`EncoderError`."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise EncoderError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} asked for, but CUDA is not available here: use device='cpu'")
    return parsed


def default_device() -> str:
    """``"cuda"`` when a GPU is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(precision: str) -> torch.dtype:
    """``torch.float32`` / ``float16`` / ``bfloat16`` for ``"fp32"`` / ``"fp16"`` / ``"bf16"``."""
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class TorchEncoder(EncoderSpecModel):
    """An encoder whose network is a ``torch.nn.Module``.

    Attributes:
        torch_device: the checked device.
        precision: ``fp32``, ``fp16`` (CUDA only) or ``bf16``, from yaml ``model.precision``.
        uses_autocast: whether the reduced precision runs as autocast (False where the model itself is
            cast, as open_clip does).
    """

    uses_autocast = True

    def __init__(self, options: dict | None = None, device: str | None = None):
        super().__init__(options, device)
        self.torch_device = check_device(self.device)
        self.device = str(self.torch_device)
        where = self.options.get("_yaml_path", self.name)
        self.precision = resolve_precision(str((self.options.get("model") or {}).get("precision", "fp32")),
                                           self.torch_device.type, where)

    def working_bytes(self, batch_size: int) -> int:
        """The activations of ``batch_size`` tiles: :func:`activation_bytes_per_tile` of the networks this
        encoder holds, measured once on the device's memory (0 on a GPU: the host's memory holds no activations)."""
        if self.torch_device.type != "cpu":
            return 0
        if "_tile_activation_bytes" not in vars(self):
            networks = [value for value in vars(self).values() if isinstance(value, torch.nn.Module)]
            self._tile_activation_bytes = activation_bytes_per_tile(self, networks)
        return batch_size * self._tile_activation_bytes

    def inference(self) -> contextlib.AbstractContextManager:
        """``torch.inference_mode()`` and, for fp16/bf16 with autocast, ``torch.autocast``."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.uses_autocast and self.precision in ("fp16", "bf16"):
            stack.enter_context(torch.autocast(self.torch_device.type, dtype=torch_dtype(self.precision)))
        return stack


def _tensor_bytes(value) -> int:
    """Bytes of the tensors in a module's output (a tensor, or a tuple, list or dict of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(item) for item in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    return 0


def activation_bytes_per_tile(encoder, networks: list[torch.nn.Module]) -> int:
    """The working memory of one tile through ``encoder.image_encoder``: its float copy, and twice the
    largest output of any module of ``networks`` (a layer's input and output), from forward hooks on one
    blank tile. For AMFMN 9.2 MB: 590 MB at its batch of 64, where the process's peak grew by 566 MB.

    A batch's activations are those of its tiles side by side, so the batch needs that many times this
    (:meth:`TorchEncoder.working_bytes`); counted as the run's memory plan counts it, not to the byte.
    """
    largest = [0]

    def record(module, inputs, output):
        largest[0] = max(largest[0], _tensor_bytes(output))

    handles = [module.register_forward_hook(record) for network in networks for module in network.modules()]
    try:
        encoder.image_encoder(np.zeros((1, encoder.tile_size, encoder.tile_size, 3), np.uint8))
    finally:
        for handle in handles:
            handle.remove()
    return 3 * encoder.tile_size ** 2 * 4 + 2 * largest[0]
