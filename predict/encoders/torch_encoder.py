"""What the built-in torch encoders share: the device, ``model.precision``, inference mode and autocast."""
from __future__ import annotations

import contextlib

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

    def inference(self) -> contextlib.AbstractContextManager:
        """``torch.inference_mode()`` and, for fp16/bf16 with autocast, ``torch.autocast``."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.uses_autocast and self.precision != "fp32":
            stack.enter_context(torch.autocast(self.torch_device.type, dtype=torch_dtype(self.precision)))
        return stack
