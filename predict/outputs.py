"""What a SeLo run writes: the three JPEG maps per sample and log.txt in the original's line format."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
from tqdm import tqdm

from predict.heatmap import colour_heatmap, overlay

MAP_KINDS = ("probmap", "heatmap", "addmap")
LOGGER_NAME = "selo"


def map_path(cache_path: str, kind: str, idx: int) -> str:
    """``<cache>/<kind>_<idx>.jpg``, the original's file names."""
    return os.path.join(cache_path, f"{kind}_{idx}.jpg")


def maps_exist(cache_path: str, idx: int) -> bool:
    return all(os.path.isfile(map_path(cache_path, kind, idx)) for kind in MAP_KINDS)


def write_jpeg(path: str, image: np.ndarray) -> bytes:
    """Write ``image`` as a JPEG (OpenCV's quality 95) atomically; return the encoded bytes."""
    ok, data = cv2.imencode(".jpg", image)  # OpenCV's default quality 95, as the original's cv2.imwrite
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data.tobytes())
    os.replace(tmp, path)  # a map file is either complete or absent, so a crash never leaves half a map
    return data


def save_maps(cache_path: str, idx: int, image_bgr: np.ndarray, probmap: np.ndarray) -> np.ndarray:
    """Write ``probmap_{idx}``, ``heatmap_{idx}`` and ``addmap_{idx}`` JPEGs; return the probability map
    as decoded from its JPEG, which is what the indicators are computed on (as the original did)."""
    data = write_jpeg(map_path(cache_path, "probmap", idx), probmap)
    heatmap = colour_heatmap(probmap)
    write_jpeg(map_path(cache_path, "heatmap", idx), heatmap)
    addmap = overlay(image_bgr, heatmap)
    del heatmap  # the 10000 x 10001 maps are 300 MB each: keep at most two alive
    write_jpeg(map_path(cache_path, "addmap", idx), addmap)
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


class TqdmHandler(logging.Handler):
    """Writes log records above the progress bar instead of through it."""

    def emit(self, record):
        tqdm.write(self.format(record))


def setup_logger(cache_path: str, console_level: int = logging.WARNING) -> logging.Logger:
    """The run's logger: every line to ``<cache>/log.txt`` (appended, so a resumed run keeps its history),
    warnings and errors to the terminal above the progress bar."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    file_handler = logging.FileHandler(os.path.join(cache_path, "log.txt"), encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    console = TqdmHandler(level=console_level)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(file_handler)
    logger.addHandler(console)
    return logger
