"""Test samples: annotation files in the SLM schema and the large images they refer to.

``anno.json`` is a list of ``{"caption", "jpg_name", "points"}``; ``points`` is a list of polygons, each
a list of ``[x, y]`` pixel coordinates (x = column, y = row). Images may be JPEG, PNG or (Geo)TIFF,
8- or 16-bit, grayscale, RGB or RGBA; they are returned as uint8 BGR (OpenCV's order).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cv2
import numpy as np


class SampleError(ValueError):
    """Bad input for one sample; ``str(error)`` is one line naming the file and the problem."""


@dataclass(frozen=True)
class Sample:
    idx: int
    jpg_name: str
    caption: str
    polygons: list  # list of polygons, each a list of (x, y) floats


def load_annotations(path: str) -> list[Sample]:
    """Read an SLM annotation file. Structural errors of the file raise :class:`SampleError`.

    Per-polygon problems (too few points, non-finite values) are left to the evaluator, so that one bad
    sample does not stop the others.
    """
    if not os.path.isfile(path):
        raise SampleError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SampleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(items, list):
        raise SampleError(f"{path}: expected a list of samples, got {type(items).__name__}")
    samples = []
    for idx, item in enumerate(items):
        if not isinstance(item, dict) or not {"caption", "jpg_name", "points"} <= set(item):
            raise SampleError(f"{path}: sample {idx} lacks one of 'caption', 'jpg_name', 'points'")
        samples.append(Sample(idx, str(item["jpg_name"]), str(item["caption"]), item["points"]))
    return samples


def _to_uint8(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # Full 16-bit range to 8 bits, the same for every image (no per-image stretch).
        return (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        finite = image[np.isfinite(image)]
        top = float(finite.max()) if finite.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        return np.clip(np.nan_to_num(image) * scale, 0, 255).astype(np.uint8)
    raise SampleError(f"{path}: unsupported pixel type {image.dtype}")


def _to_bgr(image: np.ndarray, path: str, rgb_order: bool) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray, or gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] >= 3:
        image = np.ascontiguousarray(image[:, :, :3])  # alpha and extra bands dropped, as PIL's convert('RGB')
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb_order else image
    raise SampleError(f"{path}: unsupported image shape {image.shape}")


def _read_tiff(path: str) -> np.ndarray | None:
    """Bands as stored (RGB order), or None when tifffile cannot read the file. OpenCV is not used for
    TIFF first because it reinterprets 4-band files (e.g. RGB + NIR) as alpha."""
    import tifffile

    try:
        image = tifffile.imread(path)
    except Exception:
        return None
    if image.ndim == 3 and image.shape[0] <= 4 < image.shape[2]:  # band-first layout
        image = np.moveaxis(image, 0, -1)
    return image


def read_image(path: str) -> np.ndarray:
    """Read an image as uint8 BGR ``(H, W, 3)``; a missing or undecodable file raises :class:`SampleError`."""
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    image = _read_tiff(path) if path.lower().endswith((".tif", ".tiff")) else None
    rgb_order = image is not None
    if image is None:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise SampleError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return _to_bgr(_to_uint8(image, path), path, rgb_order)
