"""Reading the large images: JPEG, PNG or (Geo)TIFF, 8- or 16-bit, grayscale, RGB or RGBA, returned as
uint8 BGR (OpenCV's order)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from predict.io.annotations import SampleError


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
