"""An encoder's image network outside torch: exported to ONNX once, run by ONNX Runtime or OpenVINO.

Every function here takes and returns plain arrays: the float32 batch an encoder's ``network_input`` gives,
``(B, C, H, W)``, and its ``(B, D)`` vectors. What is stored, and under which key, is
:mod:`predict.encoders.runtimes`' business.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
import onnxruntime
import openvino
import torch

EXPORTED_RUNTIMES = ("onnxruntime", "openvino")
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "tiles", "vectors"
# OpenVINO's CPU plugin runs f32 networks in bf16 where it can unless told otherwise: exact means f32.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}

Batch = Callable[[np.ndarray], np.ndarray]


def export_onnx(network: torch.nn.Module, example: torch.Tensor, path: str) -> None:
    """Write ``network`` as an ONNX model at ``path`` with a free batch axis, traced on ``example``
    ``(B, C, H, W)`` float32.

    The TorchScript exporter (``dynamo=False``): it needs no ``onnxscript`` at run time and exports every
    built-in network as it is. Not under ``no_grad`` or inference mode: open_clip's attention then takes
    PyTorch's fused kernel, which has no ONNX form.
    """
    torch.onnx.export(network.eval(), (example,), path, dynamo=False, opset_version=OPSET,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def onnxruntime_batch(model: bytes) -> Batch:
    """A function running the ONNX ``model`` (its bytes) on ONNX Runtime's CPU provider.

    Its threads sleep between operators instead of spinning (as ``OMP_WAIT_POLICY=PASSIVE`` has torch's do):
    a run decodes images and finishes maps on the same cores while the encoder works (AMFMN's like-SLM run:
    597 s spinning, 387 s not). Without the memory arena: the same speed, 0.2 GB less resident.
    """
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False  # its arena keeps a batch's activations (~0.5 GB for AMFMN) for good
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def openvino_batch(model_path: str) -> Batch:
    """A function running the model at ``model_path`` (ONNX, or OpenVINO IR ``.xml`` beside its ``.bin``) on
    OpenVINO's CPU plugin, in f32 where the model is not quantised."""
    compiled = openvino.Core().compile_model(model_path, "CPU", OPENVINO_CONFIG)
    request = compiled.create_infer_request()
    one_at_a_time = threading.Lock()  # an infer request is not thread-safe; ONNX Runtime's session is

    def run(batch: np.ndarray) -> np.ndarray:
        with one_at_a_time:  # share_outputs=False: the result outlives the request's buffer
            return np.array(request.infer({0: batch}, share_outputs=False)[0])

    return run


def exported_versions() -> dict[str, str]:
    """The versions that determine an exported model and its vectors."""
    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-row cosine of ``vectors`` to ``reference`` (both ``(N, D)``), float64 ``(N,)``.

    >>> cosines(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [1.0, 0.0]])).round(4)
    array([1.    , 0.7071])
    """
    a, b = np.asarray(vectors, np.float64), np.asarray(reference, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)


def in_batches(run: Batch, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """``run`` over ``inputs`` ``(N, C, H, W)``, ``batch_size`` at a time, concatenated ``(N, D)``."""
    return np.concatenate([run(np.ascontiguousarray(inputs[start:start + batch_size]))
                           for start in range(0, len(inputs), batch_size)])


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
