"""Reading checkpoints safely and loading them strictly, with one-line messages that say what is wrong."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from predict.encoders.base import EncoderError

CHECKPOINT_DIR_HINT = "predict/checkpoints/"


def numpy_scalar_globals() -> list:
    """Numpy scalar and dtype reconstructors, allowed in ``weights_only`` loading.

    Training scripts such as AMFMN's save metadata like ``best_rsum`` as numpy floats beside the state
    dict; unpickling those builds plain numbers and runs no code. Files pickled under numpy 1.x name
    ``numpy.core.multiarray.scalar``, under numpy 2 ``numpy._core.multiarray.scalar``.
    """
    import numpy as np
    from numpy._core.multiarray import scalar

    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtype_classes]


def read_checkpoint(path: str | None, what: str, download_hint: str = "") -> Mapping:
    """``torch.load(path, map_location="cpu", weights_only=True)`` (``safetensors`` for a ``.safetensors``
    file), never running code from the file.

    Args:
        path: the checkpoint file.
        what: what the file is, for messages ("AMFMN checkpoint").
        download_hint: where to get the file, appended to the missing-file message.
    """
    if not path or not os.path.isfile(path):
        hint = f"; download it from {download_hint}" if download_hint else ""
        raise EncoderError(f"{path or '(none given)'}: {what} not found{hint} and put it under {CHECKPOINT_DIR_HINT}")
    try:
        if str(path).endswith(".safetensors"):  # hub repos often publish only this tensors-only format
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only refusals all mean "not a usable checkpoint"
        raise EncoderError(f"{path}: cannot read {what} ({load_failure(exc)})") from None


REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_failure(error: Exception) -> str:
    """Why ``torch.load`` failed, in words that fit the file: a refused Python object, or a damaged file.

    torch's weights-only refusal advises loading with ``weights_only=False``, which is wrong for a damaged
    file (a truncated pickle names a cut-off global such as ``torch.``) and unsafe for any other.

    >>> load_failure(EOFError())
    'corrupt or truncated file: EOFError'
    >>> load_failure(RuntimeError("Weights only load failed. ...\\n\\tWeightsUnpickler error: Unsupported global: "
    ...                           "GLOBAL __main__.Net was not an allowed global by default."))
    'refused: holds Python objects (__main__.Net), not only tensors; save a state_dict() instead'
    """
    text = str(error).strip()
    refused = REFUSED_GLOBAL.search(text)
    if refused and all(part.isidentifier() for part in refused.group(1).split(".")):
        return f"refused: holds Python objects ({refused.group(1)}), not only tensors; save a state_dict() instead"
    reason = next((line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line), None)
    reason = (reason or (text.splitlines()[0] if text else type(error).__name__)).split(" Please use")[0]
    return f"corrupt or truncated file: {reason}"


def unwrap_state_dict(checkpoint: Mapping, keys: tuple[str, ...] = ("model", "state_dict")) -> dict:
    """The state dict inside a checkpoint: ``ckpt['model']``, ``ckpt['state_dict']`` or the mapping itself,
    with a ``module.`` prefix (DataParallel) removed from every key."""
    state = checkpoint
    for key in keys:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise EncoderError("checkpoint holds no state dict of tensors (looked under " + ", ".join(keys) + ")")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def shapes_compatible(saved: tuple, own: tuple) -> bool:
    """Equal shapes, or a ``[1]`` tensor for a 0-d one (e.g. ``num_batches_tracked`` saved through numpy),
    which ``load_state_dict`` accepts as well."""
    return saved == own or (own == () and saved == (1,))


def describe_mismatch(model: torch.nn.Module, state: Mapping) -> tuple[list, list, list]:
    """Missing keys, unexpected keys and ``(key, checkpoint shape, model shape)`` mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and not shapes_compatible(tuple(state[k].shape), tuple(v.shape))]
    return missing, unexpected, shapes


def mismatch_message(path: str, missing: list, unexpected: list, shapes: list, limit: int = 5) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:limit])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:limit])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (first: "
                     + ", ".join(f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in shapes[:limit]) + ")")
    return f"{path}: checkpoint does not match the architecture: " + "; ".join(parts)


def load_weights(model: torch.nn.Module, state: Mapping, path: str, strict: bool = True) -> tuple[list, list]:
    """Load ``state`` into ``model``; with ``strict`` any difference is an :class:`EncoderError`.

    Shape mismatches are always errors. Returns the missing and unexpected keys (empty when strict).
    """
    missing, unexpected, shapes = describe_mismatch(model, state)
    if shapes or (strict and (missing or unexpected)):
        raise EncoderError(mismatch_message(path, missing, unexpected, shapes))
    model.load_state_dict(state, strict=strict)
    return missing, unexpected
