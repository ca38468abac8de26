"""The explorer's maps: the page's map of a result at screen resolution (its PNG and peaks, its region
outlines) and the exact full-resolution downloads.

The page shows :func:`~predict.core.preview.preview_map` (the cell map on a grid scaled to the screen, the
filter scaled with it) and its peaks (:func:`preview_peaks`) scaled back to full-resolution pixels: an
approximation. The downloads are exact: the full-resolution map written stripe by stripe as ``selo-localise``
writes it (:mod:`predict.io.scene_maps`), whatever the image's size.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from evaluations.metrics import PEAK_WINDOW, SMOOTH_SIZE, local_maxima, rank_centres, region_centroids
from predict.core.blocks import row_stripes
from predict.core.heatmap import colour_heatmap, normalise_to_uint8, probability_rows, scene_score
from predict.core.pipelines import PipelineSpec
from predict.core.preview import preview_map, preview_scale
from predict.explorer.images import scene_plan
from predict.explorer.results import Result
from predict.io.raster import RasterImage, jet_colour_table, peaks_of_centres, pixel_coordinates, probmap_description
from predict.io.scene_blocks import ScenePixels
from predict.io.scene_maps import copy_cog, scene_peaks, work_file, write_map_work
from predict.localisation import tile_cells
from predict.provenance import seal_file, write_stored

PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # the map PNG is written per query: speed over size
JET_PALETTE = colour_heatmap(np.arange(256, dtype=np.uint8)[None])[0, :, ::-1].reshape(-1).tolist()  # RGB of 0-255


@dataclass
class PageMap:
    """A result's map as the page shows it: ``preview`` (uint8, the preview side on its longer side), its
    ``png`` (JET colours, transparent on nodata), its ``peaks`` ``(x, y, gray)`` in full-resolution pixels,
    best first, their lon/lat when the image is georeferenced, and the scene score (None when not finite)."""

    preview: np.ndarray
    png: bytes
    peaks: list
    peaks_lonlat: list | None
    scene_score: float | None


def page_map(raster: RasterImage, valid: ScenePixels | None, tiles: list, scores: np.ndarray, spec: PipelineSpec,
             preview_side: int, name: str) -> PageMap:
    """The page's map of the tile ``scores`` of ``raster`` (image ``name``) with ``spec``'s filter, at
    ``preview_side`` pixels on its longer side; ``valid``: its pixels when some are nodata, else None."""
    height, width = raster.pixels.shape[:2]
    scale = preview_scale(height, width, preview_side)
    cells = tile_cells(tiles, scores, height, width, fill_uncovered=valid is not None)
    preview = preview_map(cells, spec.map_filter, scale, name)
    if valid is None:
        png = map_png(preview)
    else:  # nodata: 0 (no peak there) and transparent
        valid = valid.valid_nearest(*preview.shape).view(np.uint8)
        preview[valid == 0] = 0
        ok, encoded = cv2.imencode(".png", np.dstack([colour_heatmap(preview), 255 * valid]), PNG_FAST)
        if not ok:
            raise OSError(f"{name}: PNG encoding of the map failed")
        png = bytes(encoded)
    peaks = preview_peaks(preview, scale)
    lonlat = (pixel_coordinates(raster, [x for x, _, _ in peaks], [y for _, y, _ in peaks])
              if raster.crs is not None else None)
    score = scene_score(cells)
    return PageMap(preview, png, peaks, lonlat, score if math.isfinite(score) else None)


def map_png(gray: np.ndarray) -> bytes:
    """PNG bytes of a uint8 map in :func:`~predict.core.heatmap.colour_heatmap`'s colours, as a palette image:
    the same pixels as the colour PNG, written about three times faster (it is written for every query).

    >>> gray = np.array([[0, 128, 255]], np.uint8)
    >>> decoded = cv2.imdecode(np.frombuffer(map_png(gray), np.uint8), cv2.IMREAD_COLOR)
    >>> bool((decoded == colour_heatmap(gray)).all())
    True
    """
    image = Image.frombytes("P", gray.shape[::-1], np.ascontiguousarray(gray).tobytes())
    image.putpalette(JET_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def preview_peaks(preview: np.ndarray, scale: float) -> list[tuple[int, int, int]]:
    """The attention centres of a preview map as ``(x, y, gray)`` in full-resolution pixels, best first.

    The original's peak search (five 50 px box filters, a 1000 px window, gray >= 128) with both sizes scaled
    by ``scale``; the exact centres are :func:`~evaluations.metrics.attention_centres` of the full map.

    >>> gray = np.zeros((100, 100), np.uint8); gray[40:60, 20:30] = 200
    >>> preview_peaks(gray, 0.1)
    [(240, 490, 200)]
    """
    maxima = local_maxima(preview, max(1, round(SMOOTH_SIZE * scale)), max(1, round(PEAK_WINDOW * scale)))
    centres = rank_centres(region_centroids(maxima), preview)
    return [(int(x / scale), int(y / scale), int(preview[y, x])) for x, y in centres]


def region_outlines(preview: np.ndarray, threshold: float, scale: float) -> list[list[list[int]]]:
    """Outer rings of the parts of a preview map at or above ``threshold`` (0-1), in full-resolution pixels
    ``[[x, y], ...]`` (``scale``: preview size / full size), largest first.

    >>> gray = np.zeros((10, 10), np.uint8); gray[2:5, 3:7] = 200
    >>> region_outlines(gray, 0.5, 0.5)
    [[[6, 4], [6, 8], [12, 8], [12, 4]]]
    """
    above = (preview >= round(255 * threshold)).astype(np.uint8)
    contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    return [[[round(int(x) / scale), round(int(y) / scale)] for x, y in contour[:, 0]] for contour in contours]


def write_download(path: str, kind: str, raster: RasterImage, valid: ScenePixels | None, result: Result) -> None:
    """Write the exact full-resolution probability map of ``result`` on ``raster`` (``kind="probmap"``,
    GeoTIFF) or its peaks (``"peaks"``, GeoJSON) at ``path``, as ``selo-localise`` writes them (stripe by
    stripe: :mod:`predict.io.scene_maps`), stored as made by the result's id; ``valid`` as :func:`page_map`'s."""
    height, width = raster.pixels.shape[:2]
    cells = tile_cells(result.tiles, result.scores, height, width, fill_uncovered=valid is not None)
    gray = normalise_to_uint8(cells.values, result.image)  # the whole map's normalisation, on its cells
    stripes = row_stripes(height, scene_plan(height, width).map_rows)
    with work_file(path) as work:
        write_map_work(work, raster, lambda first, stop: probability_rows(cells, gray, result.spec.map_filter,
                                                                          (first, stop)), stripes)
        if kind == "probmap":
            copy_cog(work, path, None, probmap_description(None), jet_colour_table())
            seal_file(path, result.id)
        else:
            centres, values = scene_peaks(work, stripes)
            write_stored(path, json.dumps(peaks_of_centres(centres, values, raster)).encode(), result.id)
