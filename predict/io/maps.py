"""The three JPEG maps a SeLo run writes per sample, under the original's file names."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from predict.core.heatmap import colour_heatmap, overlay
from predict.io.atomic import write_atomically

MAP_KINDS = ("probmap", "heatmap", "addmap")


def map_name(kind: str, idx: int) -> str:
    """``<kind>_<idx>.jpg``, the original's file names."""
    return f"{kind}_{idx}.jpg"


def map_path(cache_path: str, kind: str, idx: int) -> str:
    """``<cache>/<kind>_<idx>.jpg``."""
    return os.path.join(cache_path, map_name(kind, idx))


def encode_jpeg(image: np.ndarray, path: str = "image") -> np.ndarray:
    """JPEG bytes of a uint8 gray or BGR image at OpenCV's quality 95, as the original's ``cv2.imwrite``."""
    ok, data = cv2.imencode(".jpg", image)
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    return data


def write_jpeg(path: str, image: np.ndarray) -> np.ndarray:
    """Write ``image`` as a JPEG (quality 95) atomically; return the encoded bytes."""
    data = encode_jpeg(image, path)
    write_atomically(path, memoryview(data))  # no copy: a 10000 x 10001 overlay's JPEG is tens of MB
    return data


def write_probmap(cache_path: str, idx: int, probmap: np.ndarray) -> np.ndarray:
    """Write ``probmap_{idx}.jpg``; return its JPEG bytes."""
    return write_jpeg(map_path(cache_path, "probmap", idx), probmap)


def decode_probmap(data: np.ndarray) -> np.ndarray:
    """The uint8 ``(H, W)`` map of a probmap's JPEG bytes: what the indicators are computed on, as the
    original's evaluator read the file."""
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def write_colour_maps(cache_path: str, idx: int, image_bgr: np.ndarray, heatmap: np.ndarray, *,
                      concurrent: bool = True) -> np.ndarray:
    """Write ``heatmap_{idx}.jpg`` (``heatmap``: the JET colours of the probmap, :func:`colour_heatmap`) and
    ``addmap_{idx}.jpg`` (the colours over the image); return the overlay, BGR ``(H, W, 3)``.

    The two encodes run concurrently (OpenCV releases the GIL); with ``concurrent=False`` one after the
    other, the overlay computed into ``heatmap``'s buffer: 3 bytes per pixel less at the peak.
    """
    if not concurrent:
        write_jpeg(map_path(cache_path, "heatmap", idx), heatmap)
        addmap = overlay(image_bgr, heatmap, out=heatmap)
        write_jpeg(map_path(cache_path, "addmap", idx), addmap)
        return addmap
    with ThreadPoolExecutor(1) as pool:
        heatmap_written = pool.submit(write_jpeg, map_path(cache_path, "heatmap", idx), heatmap)
        addmap = overlay(image_bgr, heatmap)
        write_jpeg(map_path(cache_path, "addmap", idx), addmap)
        heatmap_written.result()
    return addmap
