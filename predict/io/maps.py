"""The three JPEG maps a SeLo run writes per sample, under the original's file names."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from predict.core.heatmap import colour_heatmap, overlay
from predict.core.preview import shrink_by
from predict.core.stripes import results_ahead
from predict.io.jpeg import StripeJoiner, encode_jpeg, restart_interval, stripe_rows
from predict.provenance.store import atomic_writer, write_atomically

MAP_KINDS = ("probmap", "heatmap", "addmap")
STRIPE_BYTES = 8 << 20  # colours per stripe: small beside a large map's, large beside a JPEG header
# the memory of writing a sample's maps, per pixel of the map, beyond the map itself: the JPEGs kept for its
# evaluation and report, and the colour stripes in flight (measured with the like-SLM 10000 x 10001 image)
MAPS_BYTES_PER_PIXEL = 0.5


def map_name(kind: str, idx: int) -> str:
    """``<kind>_<idx>.jpg``, the original's file names."""
    return f"{kind}_{idx}.jpg"


def map_path(cache_path: str, kind: str, idx: int) -> str:
    """``<cache>/<kind>_<idx>.jpg``."""
    return os.path.join(cache_path, map_name(kind, idx))


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


def write_maps(cache_path: str, idx: int, image_bgr: np.ndarray, probmap: np.ndarray, *, workers: int = 1,
               shrink: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Write the three JPEGs of sample ``idx``: ``probmap_{idx}.jpg`` (the uint8 ``(H, W)`` map),
    ``heatmap_{idx}.jpg`` (its JET colours, :func:`colour_heatmap`) and ``addmap_{idx}.jpg`` (those colours
    over the BGR ``image_bgr``, :func:`overlay`), on ``workers`` threads. Returns the probmap's JPEG bytes
    and, with ``shrink`` (a whole factor), the overlay shrunk by it (:func:`shrink_by`, for the report).

    The probmap is encoded whole, as the original's file. The colour maps are made, encoded and written in
    stripes of rows (:mod:`predict.io.jpeg`): they decode to the pixels of the whole images encoded
    at once, and no full-size colour image is ever held, only ``workers + 1`` stripes.
    """
    height, width = probmap.shape
    rows = stripe_rows(height, width, 3, STRIPE_BYTES, multiple=shrink or 1)
    interval = restart_interval(rows, width, 3) if rows < height else 0

    def stripe(top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        colours = colour_heatmap(probmap[top:top + rows])
        heatmap = encode_jpeg(colours, interval=interval)
        addmap = encode_jpeg(overlay(image_bgr[top:top + rows], colours, out=colours), interval=interval)
        return heatmap, addmap, None if shrink is None else shrink_by(colours, shrink)

    pieces = []
    with (ThreadPoolExecutor(workers) as pool, atomic_writer(map_path(cache_path, "heatmap", idx)) as heatmap_file,
          atomic_writer(map_path(cache_path, "addmap", idx)) as addmap_file):
        probmap_jpeg = pool.submit(write_probmap, cache_path, idx, probmap)
        joiners = StripeJoiner(heatmap_file, height), StripeJoiner(addmap_file, height)
        for *parts, piece in results_ahead(pool, stripe, range(0, height, rows), workers):
            for joiner, part in zip(joiners, parts):
                joiner.add(part)
            pieces.append(piece)
        for joiner in joiners:
            joiner.close()
        written = probmap_jpeg.result()
    return written, None if shrink is None else np.concatenate(pieces)
