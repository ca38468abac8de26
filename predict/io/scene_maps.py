"""A scene's outputs written stripe by stripe: the probability map and mask COGs, the peaks, the regions and
the overlay of :mod:`predict.scenes`, the same bytes whatever the stripes, at the memory of a few stripes.

The map's rows come from a function (the normalised cells filtered stripe by stripe:
:func:`~predict.core.heatmap.probability_rows`) and go to a tiled GeoTIFF work file beside the outputs,
masked on nodata; the COGs are GDAL's copies of it (overviews and all), the peaks are found on stripes of it
read with the margin the evaluator's smoothing and window maximum reach
(:class:`~predict.core.blocks.StripeRegions` joins the regions across stripes), the regions are GDAL's
polygons of the mask's work file, and the overlay is encoded in JPEG stripes (:mod:`predict.io.jpeg`) as the
scene is read again. The work files are removed however the writing ends; every output is written atomically.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from evaluations.metrics import PEAK_WINDOW, SMOOTH_SIZE, rank_centres, smooth_gray, smooth_maxima
from predict.core.blocks import StripeRegions, row_stripes
from predict.core.heatmap import colour_heatmap, overlay
from predict.core.stretch import level_counts
from predict.io.jpeg import StripeJoiner, encode_jpeg, restart_interval, stripe_rows
from predict.io.maps import STRIPE_BYTES
from predict.io.raster import (COG_OPTIONS, MASK_COLOURS, RasterImage, georeference_profile, jet_colour_table,
                               label_band, mask_labels, opened, peaks_of_centres, plain_profile, probmap_description,
                               quantile_threshold, regions_of_shapes)
from predict.provenance import atomic_path, atomic_writer

PEAK_MARGIN = 5 * (SMOOTH_SIZE // 2) + PEAK_WINDOW // 2  # rows a peak-search row depends on (smoothing, window)


@contextmanager
def work_file(beside: str) -> Iterator[str]:
    """A temporary path beside ``beside``, removed when the block ends."""
    path = os.path.join(os.path.dirname(beside) or ".", f".{os.path.basename(beside)}.{secrets.token_hex(6)}.work.tif")
    try:
        yield path
    finally:
        for leftover in (path, path + ".aux.xml"):
            with suppress(FileNotFoundError):
                os.unlink(leftover)


def write_map_work(path: str, raster: RasterImage, rows_of: Callable[[int, int], np.ndarray],
                   stripes: list[tuple[int, int]]) -> np.ndarray:
    """Write the map's rows (``rows_of(first, stop)``: uint8 ``(stop - first, W)``) stripe by stripe to a
    tiled GeoTIFF at ``path``, 0 and masked where the scene is nodata (a mask band only when some pixel is);
    return the level counts of its valid pixels (:func:`~predict.core.stretch.level_counts`)."""
    height, width = raster.pixels.shape[:2]
    counts = np.zeros(256, np.int64)
    masked_from = None  # the first row of the first stripe with nodata: rows above are written valid then
    with opened(rasterio.open, path, "w", **plain_profile(raster, height, width)) as dst:
        for first, stop in stripes:
            rows = rows_of(first, stop)
            valid = raster.pixels.read(first, stop)[1] if raster.pixels.masked else None
            window = Window(0, first, width, stop - first)
            if valid is not None and not valid.all() and masked_from is None:
                masked_from = first
                if first:
                    dst.write_mask(np.full((first, width), 255, np.uint8), window=Window(0, 0, width, first))
            if valid is not None:
                rows[~valid] = 0
                counts += level_counts(rows[valid])
            else:
                counts += level_counts(rows)
            dst.write(rows, 1, window=window)
            if masked_from is not None:
                dst.write_mask(np.full(rows.shape, 255, np.uint8) if valid is None else valid, window=window)
    return counts


def copy_cog(work: str, path: str, tags: dict | None, description: str, colours: dict) -> None:
    """The COG of the work file at ``work`` (``COG_OPTIONS``, as :func:`~predict.io.raster.cog_bytes`), with
    ``tags``, ``description`` and ``colours``, written atomically at ``path``."""
    with opened(rasterio.open, work, "r+") as dst:
        label_band(dst, tags, description, colours)
    with opened(rasterio.open, work) as src, atomic_path(path) as tmp:
        rasterio.shutil.copy(src, tmp, **COG_OPTIONS)


def write_above_work(work: str, path: str, threshold: int, stripes: list[tuple[int, int]]) -> None:
    """The map's pixels above ``threshold`` (1, else 0: nodata is 0 in the map) as a GeoTIFF at ``path``
    with the map's mask, in pixel space (GDAL's polygons of a georeferenced band are in its map
    coordinates: the regions are made from pixel edges, :func:`~predict.io.raster.regions_of_shapes`)."""
    with opened(rasterio.open, work) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("transform", "crs", "gcps")}
        has_mask = src.mask_flag_enums[0] == [MaskFlags.per_dataset]
        with opened(rasterio.open, path, "w", **profile) as dst:
            for first, stop in stripes:
                window = Window(0, first, src.width, stop - first)
                dst.write((src.read(1, window=window) > threshold).view(np.uint8), 1, window=window)
                if has_mask:
                    dst.write_mask(src.read_masks(1, window=window), window=window)


def georeference(path: str, raster: RasterImage) -> None:
    """Give the GeoTIFF at ``path`` ``raster``'s georeferencing (:func:`~predict.io.raster.georeference_profile`)."""
    profile = georeference_profile(raster)
    with opened(rasterio.open, path, "r+") as dst:
        if "gcps" in profile:
            dst.gcps = (profile["gcps"], profile["crs"])
            return
        if "transform" in profile:
            dst.transform = profile["transform"]
        if profile.get("crs") is not None:
            dst.crs = profile["crs"]


def scene_peaks(work: str, stripes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """The attention centres ``(x, y)`` of the map in the work file, best first, and their map values: as
    ``evaluations.metrics.attention_centres`` of the whole map, each stripe's peak search carrying the
    :data:`PEAK_MARGIN` rows it depends on."""
    regions = StripeRegions()
    with opened(rasterio.open, work) as src:
        for first, stop in stripes:
            top, bottom = max(0, first - PEAK_MARGIN), min(src.height, stop + PEAK_MARGIN)
            gray = src.read(1, window=Window(0, top, src.width, bottom - top))
            regions.add(smooth_maxima(smooth_gray(gray))[first - top:stop - top], first)
        points = regions.centroids()
        values = {(y, x): int(src.read(1, window=Window(x, y, 1, 1))[0, 0]) for x, y in points}
    centres = rank_centres(points, values)
    return centres, [values[y, x] for x, y in centres]


def write_overlay(path: str, raster: RasterImage, work: str, stripe_height: int) -> None:
    """The JET colours of the map over the scene (:func:`~predict.core.heatmap.overlay`, black on nodata) as
    a JPEG at ``path``, atomically: encoded in stripes whose rows depend on the scene's size alone
    (:func:`~predict.io.jpeg.stripe_rows`), read ``stripe_height`` rows (rounded to them) at a time."""
    height, width = raster.pixels.shape[:2]
    jpeg_rows = stripe_rows(height, width, 3, STRIPE_BYTES)
    interval = restart_interval(jpeg_rows, width, 3) if jpeg_rows < height else 0
    reading = max(1, stripe_height // jpeg_rows) * jpeg_rows
    with opened(rasterio.open, work) as src, atomic_writer(path) as file:
        joiner = StripeJoiner(file, height)
        for top, pixels, valid in raster.pixels.stripes(reading):
            rows = src.read(1, window=Window(0, top, width, len(pixels)))
            for first in range(0, len(pixels), jpeg_rows):  # colours a JPEG stripe at a time
                part = slice(first, first + jpeg_rows)
                overlaid = overlay(pixels[part], colour_heatmap(rows[part]))
                if valid is not None:
                    overlaid[~valid[part]] = 0  # nodata stays black, as in the image
                joiner.add(encode_jpeg(overlaid, path, interval))
        joiner.close()


def write_scene_maps(raster: RasterImage, rows_of: Callable[[int, int], np.ndarray], paths: dict[str, str],
                     tags: dict, stripe_height: int, regions: float | None = None,
                     mask: float | None = None) -> tuple[dict, dict | None]:
    """Write the probability map (``paths["probmap"]``), overlay and, with ``mask`` (a quantile), the mask
    COG of a scene's map made ``stripe_height`` rows at a time by ``rows_of(first, stop)``; return the peaks'
    and (with ``regions``, a quantile) the regions' GeoJSON feature collections
    (:func:`~predict.io.raster.peaks_feature_collection`, :func:`~predict.io.raster.regions_feature_collection`).
    """
    height = raster.pixels.shape[0]
    stripes = row_stripes(height, stripe_height)
    with ExitStack() as cleanup:
        work = cleanup.enter_context(work_file(paths["probmap"]))
        counts = write_map_work(work, raster, rows_of, stripes)
        copy_cog(work, paths["probmap"], tags, probmap_description(tags), jet_colour_table())
        centres, values = scene_peaks(work, stripes)
        peaks = peaks_of_centres(centres, values, raster, tags)
        region_features = None
        for quantile in dict.fromkeys(q for q in (regions, mask) if q is not None):
            threshold = quantile_threshold(counts, quantile)
            above = cleanup.enter_context(work_file(paths["probmap"]))
            write_above_work(work, above, threshold, stripes)
            if quantile == regions:
                with opened(rasterio.open, above) as src:
                    band = rasterio.band(src, 1)
                    shapes = rasterio.features.shapes(band, mask=band, transform=Affine.identity())
                    region_features = regions_of_shapes(shapes, raster, threshold, tags)
            if quantile == mask:
                georeference(above, raster)
                mask_tags, description = mask_labels(quantile, threshold, tags)
                copy_cog(above, paths["mask"], mask_tags, description, MASK_COLOURS)
        write_overlay(paths["overlay"], raster, work, stripe_height)
    return peaks, region_features
