"""Static int8 quantisation of an exported image network, calibrated on tiles of the images at hand:
ONNX Runtime's ``quantize_static`` (QDQ) and NNCF's post-training quantisation for OpenVINO.

The calibration is the batch an encoder's ``network_input`` gives for those tiles, ``(N, C, H, W)``
float32. Dynamic quantisation is not offered: ONNX Runtime turns the convolutions into ConvInteger, which
runs slower than eager torch on a CPU.
"""
from __future__ import annotations

import logging
import os

import numpy as np

CALIBRATION_BATCH = 8  # tiles per calibration step


def _batches(calibration: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH])
            for start in range(0, len(calibration), CALIBRATION_BATCH)]


def quantize_onnxruntime(onnx_path: str, calibration: np.ndarray, out_path: str, input_name: str) -> None:
    """Write at ``out_path`` the ONNX model ``onnx_path`` with int8 weights (per channel) and uint8 activations
    whose ranges come from ``calibration`` (QDQ format, min-max). ``reduce_range``: 7-bit weights, as ONNX
    Runtime advises on CPUs without VNNI (u8 x s8 products saturate in AVX2's ``vpmaddubsw`` otherwise).
    Not pre-processed with ``quant_pre_process``, which fails on AMFMN and open_clip's ViT."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{input_name: batch} for batch in _batches(calibration)])

        def get_next(self):
            return next(self.feeds, None)

    root = logging.getLogger()
    advice = lambda record: "pre-process" not in record.getMessage()  # noqa: E731 - its advice does not apply (above)
    root.addFilter(advice)
    try:
        quantize_static(onnx_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(advice)


def quantize_openvino(onnx_path: str, calibration: np.ndarray, out_xml: str) -> None:
    """Write at ``out_xml`` (and the ``.bin`` beside it) the OpenVINO IR of ``onnx_path`` quantised by NNCF on
    ``calibration`` (its default mixed preset), the weights it leaves unquantised kept in f32."""
    import nncf
    import openvino

    model = openvino.Core().read_model(onnx_path)
    batches = _batches(calibration)
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    os.makedirs(os.path.dirname(out_xml) or ".", exist_ok=True)
    openvino.save_model(quantized, out_xml, compress_to_fp16=False)
