"""A scene of any size read by windows at bounded memory: the pixels the pipeline tiles, stripe by stripe.

:func:`open_scene` opens a GeoTIFF/COG (PNG and JPEG are decoded whole, as :func:`~predict.io.raster.read_raster`
does) and gives a :class:`~predict.io.raster.RasterImage` whose ``pixels`` is a :class:`ScenePixels`: the
uint8 BGR ``(H, W, 3)`` pixels of ``read_raster``, byte for byte, made on demand for row stripes. A stripe is
decoded in windows aligned to the file's blocks (at most :data:`DECODE_PIXELS` at once), so the memory of
reading is that of the stripe's 8-bit pixels, whatever the file's type and the scene's size.

Data deeper than 8 bits are stretched between percentiles of the whole scene (:mod:`predict.core.stretch`).
Up to :data:`EXACT_PERCENTILE_PIXELS` pixels they are counted exactly, over every valid pixel (a first pass
over the file: the same range as ``read_raster``'s); beyond, they are estimated from a fixed sample, a
regular grid of at most :data:`SAMPLE_BLOCKS` x :data:`SAMPLE_BLOCKS` of the file's blocks, the same for a
file whatever the memory budget (the image key says so). Float data below the limit are read whole to
take their percentiles, as ``read_raster`` does.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import cv2
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from predict.core.blocks import row_stripes
from predict.core.stripes import results_ahead
from predict.core.stretch import (Stretch, band_percentiles, counted_exactly, level_counts, ranges_of_counts,
                                  stretched)
from predict.core.tiling import Tile, effective_box
from predict.io.annotations import SampleError
from predict.io.images import require_image_file
from predict.io.raster import (DEFAULT_STRETCH, RasterImage, bands_to_uint8, choose_bands, gdal_reason, opened,
                               read_bands, sidecars_of, valid_mask, warn_other_pages)
from predict.provenance import file_digest, image_key

EXACT_PERCENTILE_PIXELS = 1 << 27  # up to ~11600 x 11600 px: the stretch's percentiles over every pixel
SAMPLE_BLOCKS = 16  # beyond: over a regular grid of at most 16 x 16 of the file's blocks
DECODE_PIXELS = 1 << 22  # pixels decoded at once, in the file's type (a 16-bit 4-band window: 32 MB)
WINDOWED_DRIVERS = ("GTiff", "COG")


class ScenePixels:
    """The uint8 BGR pixels ``(H, W, 3)`` of an open scene, read by row stripes (see the module).

    ``shape`` is the scene's; ``masked`` says whether any pixel may be nodata. The tile-vector store cuts
    tiles through :meth:`tile_batches` in :meth:`encoding_order`, reading stripes of ``stripe_rows`` rows
    (and ``margin`` more: the largest tile) one at a time, the next one decoded in a thread while the
    encoder works on the tiles of the current one. A scene held in one stripe is decoded once and kept.
    """

    def __init__(self, src, path: str, bands: tuple[int, ...], ranges: list[tuple[float, float]] | None,
                 masked: bool):
        self.src, self.path, self.bands, self.ranges = src, path, bands, ranges
        self.masked = masked
        self.shape = (src.height, src.width, 3)
        self.stripe_rows, self.margin = src.height, 0
        self._lock = threading.Lock()  # one GDAL read at a time on the dataset
        self._whole: tuple[np.ndarray, np.ndarray | None] | None = None
        self._half_valid: dict[Tile, bool] = {}  # tile -> at least half valid, as counted once
        self._nearest: dict[tuple[int, int], np.ndarray] = {}  # the valid mask shrunk (valid_nearest)

    def plan(self, stripe_rows: int, margin: int) -> None:
        """Read stripes of ``stripe_rows`` rows, each with ``margin`` more (the largest tile side)."""
        self.stripe_rows, self.margin = max(1, stripe_rows), margin

    @property
    def block_rows(self) -> int:
        """Rows of the file's blocks (its strips' or tiles'); 1 for a file decoded whole."""
        return self.src.block_shapes[0][0] if self.src.driver in WINDOWED_DRIVERS else 1

    @property
    def whole(self) -> bool:
        return self.stripe_rows >= self.shape[0]

    def describe(self) -> str:
        """How the scene is read, for the log."""
        height, width = self.shape[:2]
        if self.whole:
            return f"{width} x {height} px read as one block"
        return (f"{width} x {height} px read in {len(row_stripes(height, self.stripe_rows))} stripes of "
                f"{self.stripe_rows} rows (+{self.margin} rows for the largest tile)")

    # ---- decoding --------------------------------------------------------------------------------------

    def read(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """BGR uint8 ``(stop - first, W, 3)`` and valid bool ``(stop - first, W)`` (None when the scene has no
        nodata) of rows ``first:stop``."""
        if self.whole or self.src.driver not in WINDOWED_DRIVERS:
            if self._whole is None:
                self._whole = self._decode(0, self.shape[0])
            pixels, valid = self._whole
            return pixels[first:stop], None if valid is None else valid[first:stop]
        return self._decode(first, stop)

    def _decode(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        width = self.shape[1]
        pixels = np.empty((max(0, stop - first), width, 3), np.uint8)
        valid = np.ones(pixels.shape[:2], bool) if self.masked else None
        if first >= stop:
            return pixels, valid
        if self.src.driver not in WINDOWED_DRIVERS:  # PNG, JPEG: decoded whole, as read_raster does
            data = read_bands(self.src, self.path, self.bands)
            data_valid = valid_mask(self.src, self.bands, data)
            self._convert(data[first:stop], None if data_valid is None else data_valid[first:stop], pixels, valid)
            return pixels, valid
        for window in decode_windows(self.src, first, stop):
            data, window_valid = read_window(self.src, self.path, self.bands, window, self._lock)
            r, c = window.row_off - first, window.col_off
            self._convert(data, window_valid, pixels[r:r + window.height, c:c + window.width],
                          None if valid is None else valid[r:r + window.height, c:c + window.width])
        return pixels, valid

    def _convert(self, data: np.ndarray, data_valid: np.ndarray | None, pixels: np.ndarray,
                 valid: np.ndarray | None) -> None:
        """``read_raster``'s pixels of ``data`` ``(h, w, C)`` into ``pixels`` ``(h, w, 3)`` (and ``valid``):
        8-bit data as they are, deeper data stretched between the scene's ranges (or from the type's range
        when there are none)."""
        eight = stretched(data, self.ranges) if self.ranges is not None and data.dtype != np.uint8 \
            else bands_to_uint8(data, None)
        if eight.shape[2] == 1:
            cv2.cvtColor(eight, cv2.COLOR_GRAY2BGR, dst=pixels)
        else:
            pixels[:] = eight[:, :, ::-1]
        if data_valid is not None and valid is not None:
            valid[:] = data_valid
            pixels[~data_valid] = 0

    def decimated(self, height: int, width: int) -> np.ndarray:
        """uint8 BGR ``(height, width, 3)``: the scene at a lower resolution, converted as :meth:`read` does
        (nodata 0). A GeoTIFF is read decimated (GDAL's average, from the file's overviews when it has them),
        never decoded whole; other files (and palette images, whose indices cannot be averaged) are decoded
        whole and shrunk by area."""
        if self.src.driver not in WINDOWED_DRIVERS or self.src.colorinterp[self.bands[0] - 1] == ColorInterp.palette:
            whole = self.read(0, self.shape[0])[0]
            return cv2.resize(whole, (width, height), interpolation=cv2.INTER_AREA)
        data, data_valid = read_decimated(self.src, self.path, self.bands, height, width, self._lock)
        pixels = np.empty((height, width, 3), np.uint8)
        self._convert(data, data_valid, pixels, None if data_valid is None else np.empty((height, width), bool))
        return pixels

    def valid_nearest(self, height: int, width: int) -> np.ndarray:
        """bool ``(height, width)``: the valid mask shrunk as ``cv2.resize(valid, (width, height),
        interpolation=cv2.INTER_NEAREST)`` of the whole mask would (the pixel at ``floor(i * H / height)``),
        read stripe by stripe; kept for the next call of the same size."""
        if (height, width) not in self._nearest:
            rows, cols = nearest_indices(self.shape[0], height), nearest_indices(self.shape[1], width)
            shrunk = np.ones((height, width), bool)
            if self.masked:
                for top, pixels, valid in self.stripes():
                    inside = (rows >= top) & (rows < top + len(pixels))
                    if valid is not None and inside.any():
                        shrunk[inside] = valid[rows[inside] - top][:, cols]
            self._nearest[(height, width)] = shrunk
        return self._nearest[(height, width)]

    def nodata_pixels(self, rows: tuple[int, int] | None = None) -> int:
        """How many pixels of the scene (or of its ``rows`` ``(row0, row1)``) are nodata, counted stripe by
        stripe (0 when none may be)."""
        if not self.masked:
            return 0
        return sum(int(np.count_nonzero(~valid)) for _, _, valid in self.stripes(rows=rows) if valid is not None)

    # ---- stripes and tiles -----------------------------------------------------------------------------

    def stripes(self, size: int | None = None,
                rows: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``(top, pixels, valid)`` of consecutive stripes of ``size`` rows (the plan's by default) covering
        the scene (or its ``rows`` ``(row0, row1)``), the next one decoded in a thread meanwhile."""
        first, stop = rows or (0, self.shape[0])
        bounds = [(first + top, first + bottom) for top, bottom in row_stripes(stop - first, size or self.stripe_rows)]
        with ThreadPoolExecutor(1, thread_name_prefix="selo-read") as pool:
            ahead = pool.submit(self.read, *bounds[0]) if bounds else None
            for k, (top, _) in enumerate(bounds):
                pixels, valid = ahead.result()
                ahead = pool.submit(self.read, *bounds[k + 1]) if k + 1 < len(bounds) else None
                yield top, pixels, valid

    def encoding_order(self, tiles: Sequence[Tile]) -> list[Tile]:
        """``tiles`` sorted by the pixels they cover, top to bottom: the order a sweep of stripes cuts them in
        (whatever the stripes, so the encoder's batches, and its vectors, do not depend on the memory budget)."""
        height, width = self.shape[:2]
        return sorted(tiles, key=lambda tile: effective_box(tile, height, width))

    def _sweep(self, tiles: Sequence[Tile]) -> Iterator[tuple[Tile, np.ndarray, np.ndarray | None]]:
        """``(effective box in the stripe, stripe pixels, stripe valid)`` of each of ``tiles`` (in
        :meth:`encoding_order`). A tile belongs to the stripe holding its first row, read with ``margin``
        more rows (more when a tile is taller); only stripes holding tiles are read, rows shared with the previous one are kept, and
        the next one's new rows are decoded in a thread meanwhile."""
        height, width = self.shape[:2]
        rows = self.stripe_rows
        boxes = [effective_box(tile, height, width) for tile in tiles]
        margin = max([self.margin] + [r1 - r0 for r0, r1, _, _ in boxes])  # a tile taller than the plan's: cut whole
        needed = sorted({r0 // rows for r0, _, _, _ in boxes})
        windows = [(k * rows, min(height, (k + 1) * rows + margin)) for k in needed]
        fresh = [(max(top, before), bottom) for (top, bottom), before in zip(windows, [0] + [w[1] for w in windows])]
        longest = max((bottom - top for top, bottom in windows), default=0)
        pixels = np.empty((longest, width, 3), np.uint8)  # one buffer: a stripe's rows, then the next one's
        valid = np.empty((longest, width), bool) if self.masked else None
        held_top, held_bottom = 0, 0
        with ThreadPoolExecutor(1, thread_name_prefix="selo-read") as pool:
            stripes = zip(needed, windows, results_ahead(pool, lambda span: self.read(*span), fresh, depth=1))
            current = None
            for r0, r1, c0, c1 in boxes:
                while current != r0 // rows:
                    current, (top, bottom), (new_pixels, new_valid) = next(stripes)
                    kept = max(0, held_bottom - top)  # rows of the previous stripe's margin: moved up, not decoded again
                    for buffer, new in ((pixels, new_pixels), (valid, new_valid)):
                        if buffer is not None:
                            buffer[:kept] = buffer[top - held_top:held_bottom - held_top]
                            buffer[kept:bottom - top] = new
                    held_top, held_bottom = top, bottom
                yield (r0 - held_top, r1 - held_top, c0, c1), pixels, valid

    def tile_batches(self, tiles: Sequence[Tile], size: int, batch_size: int) -> Iterator[np.ndarray]:
        """:func:`~predict.core.tiling.tile_batches` of ``tiles`` (in :meth:`encoding_order`) cut stripe by
        stripe: the same uint8 RGB ``(n, size, size, 3)`` batches."""
        batch = np.empty((min(batch_size, len(tiles)), size, size, 3), np.uint8)
        filled = 0
        for (r0, r1, c0, c1), pixels, _ in self._sweep(tiles):
            crop = pixels[r0:r1, c0:c1]
            if crop.shape[:2] != (size, size):
                crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
            cv2.cvtColor(crop, cv2.COLOR_BGR2RGB, dst=batch[filled])
            filled += 1
            if filled == len(batch):
                yield batch.copy()
                filled = 0
        if filled:
            yield batch[:filled].copy()

    def mostly_valid(self, tiles: Sequence[Tile]) -> list[Tile]:
        """The tiles at least half of whose pixels are valid, in the order given (as
        :func:`~predict.localisation.mostly_valid` on the whole mask); each tile's pixels are counted once
        for the life of the open scene (a second query reads nothing for them)."""
        if not self.masked:
            return list(tiles)
        ordered = self.encoding_order([tile for tile in dict.fromkeys(tiles) if tile not in self._half_valid])
        for tile, ((r0, r1, c0, c1), _, valid) in zip(ordered, self._sweep(ordered)):  # each tile counted once
            self._half_valid[tile] = 2 * np.count_nonzero(valid[r0:r1, c0:c1]) >= (r1 - r0) * (c1 - c0)
        return [tile for tile in tiles if self._half_valid[tile]]


def nearest_indices(size: int, shrunk: int) -> np.ndarray:
    """int ``(shrunk,)``: the index of the pixel ``cv2.resize`` with ``INTER_NEAREST`` takes for each of
    ``shrunk`` pixels from ``size`` (``floor(i / (shrunk / size))``, as OpenCV computes it).

    >>> valid = np.random.default_rng(0).random((37, 53)) > 0.5
    >>> rows, cols = nearest_indices(37, 11), nearest_indices(53, 17)
    >>> bool((valid[rows][:, cols] == cv2.resize(valid.view(np.uint8), (17, 11),
    ...                                            interpolation=cv2.INTER_NEAREST).astype(bool)).all())
    True
    """
    return np.minimum(np.floor(np.arange(shrunk) * (1.0 / (shrunk / size))).astype(np.int64), size - 1)


def decode_windows(src, first: int, stop: int) -> list[Window]:
    """Windows covering rows ``first:stop`` of ``src``, aligned to its blocks, of at most about
    :data:`DECODE_PIXELS` pixels each (at least one block wide)."""
    block_height, block_width = src.block_shapes[0]
    columns = max(block_width, DECODE_PIXELS // max(1, stop - first) // block_width * block_width)
    return [Window(c, first, min(columns, src.width - c), stop - first) for c in range(0, src.width, columns)]


def read_window(src, path: str, bands: tuple[int, ...], window: Window,
                lock: threading.Lock | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The selected bands ``(h, w, C)`` of ``window`` in the file's type and their valid mask (None when all
    valid); a GDAL failure (a truncated or undecodable block) is a :class:`SampleError` naming the file and
    the window."""
    try:
        with lock or threading.Lock():
            data = read_bands(src, path, bands, window=window)
            return data, valid_mask(src, bands, data, window)
    except RasterioIOError as exc:
        raise SampleError(f"{path}: cannot read the window of rows {window.row_off}-{window.row_off + window.height}, "
                          f"columns {window.col_off}-{window.col_off + window.width} ({gdal_reason(exc)})") from None


def read_decimated(src, path: str, bands: tuple[int, ...], height: int, width: int,
                   lock: threading.Lock) -> tuple[np.ndarray, np.ndarray | None]:
    """The selected bands ``(height, width, C)`` of the whole file read decimated (rasterio's ``out_shape``:
    GDAL averages, from the overviews when the file has them) and their valid mask (nearest; None when all
    valid); a GDAL failure is a :class:`SampleError` naming the file and the size asked."""
    try:
        with lock:
            data = np.moveaxis(src.read(list(bands), out_shape=(len(bands), height, width),
                                        resampling=Resampling.average), 0, -1)
            valid = None
            if any(MaskFlags.all_valid not in src.mask_flag_enums[b - 1] for b in bands):
                valid = np.any(src.read_masks(list(bands), out_shape=(len(bands), height, width),
                                              resampling=Resampling.nearest) > 0, axis=0)
    except RasterioIOError as exc:
        raise SampleError(f"{path}: cannot read it decimated to {width} x {height} px ({gdal_reason(exc)})") from None
    if np.issubdtype(data.dtype, np.floating):
        finite = np.all(np.isfinite(data), axis=2)
        valid = finite if valid is None else valid & finite
    return data, None if valid is None or valid.all() else valid


def may_be_masked(src, bands: tuple[int, ...]) -> bool:
    """Whether any pixel of the selected bands may be nodata (a mask, nodata value, alpha, or float data)."""
    return (any(MaskFlags.all_valid not in src.mask_flag_enums[b - 1] for b in bands)
            or np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.floating))


def sample_windows(src) -> list[Window]:
    """The fixed sample of a huge scene's stretch: a regular grid of at most :data:`SAMPLE_BLOCKS` x
    :data:`SAMPLE_BLOCKS` of the file's blocks, corners included."""
    block_height, block_width = src.block_shapes[0]
    rows = np.unique(np.linspace(0, (src.height - 1) // block_height, SAMPLE_BLOCKS).round().astype(int))
    cols = np.unique(np.linspace(0, (src.width - 1) // block_width, SAMPLE_BLOCKS).round().astype(int))
    return [Window(c * block_width, r * block_height, min(block_width, src.width - c * block_width),
                   min(block_height, src.height - r * block_height)) for r in rows for c in cols]


def stretch_ranges(src, path: str, bands: tuple[int, ...], stretch: Stretch) -> tuple[list, str | None]:
    """The stretch range of each band (see the module) and how its percentiles were taken: None when
    exactly (every valid pixel), else a description of the estimate (for the image key)."""
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    exact = src.height * src.width <= EXACT_PERCENTILE_PIXELS
    if exact and (not counted_exactly(dtype) or src.driver not in WINDOWED_DRIVERS):  # as read_raster: whole
        data = read_bands(src, path, bands)
        valid = valid_mask(src, bands, data)
        if not stretch.per_band:
            return [band_percentiles(data, stretch.low, stretch.high, valid)] * len(bands), None
        return [band_percentiles(data[:, :, k], stretch.low, stretch.high, valid) for k in range(len(bands))], None
    windows = sample_windows(src) if not exact else \
        [w for first, stop in row_stripes(src.height, src.block_shapes[0][0]) for w in decode_windows(src, first, stop)]
    counts, samples = None, []
    for window in windows:
        data, valid = read_window(src, path, bands, window)
        values = data.reshape(-1, data.shape[2]) if valid is None else data[valid]
        if counted_exactly(dtype):
            found = np.stack([level_counts(values[:, k]) for k in range(values.shape[1])])
            counts = found if counts is None else counts + found
        else:
            samples.append(values[np.all(np.isfinite(values), axis=1)])
    how = None if exact else f"estimated from a grid of {len(sample_windows(src))} of the file's blocks"
    if counts is not None:
        return ranges_of_counts(counts, dtype, stretch.low, stretch.high, stretch.per_band), how
    values = np.concatenate(samples) if samples else np.zeros((0, len(bands)))
    if not stretch.per_band:
        return [band_percentiles(values, stretch.low, stretch.high)] * len(bands), how
    return [band_percentiles(values[:, k], stretch.low, stretch.high) for k in range(len(bands))], how


def open_scene(path: str | os.PathLike, stack: ExitStack, bands: Sequence[int] | None = None,
               stretch: Stretch | None = DEFAULT_STRETCH, notes: list[str] | None = None) -> RasterImage:
    """A :class:`~predict.io.raster.RasterImage` of the file at ``path`` whose ``pixels`` is a
    :class:`ScenePixels` (its ``valid`` is None: the pixels' ``masked`` says whether there is nodata); the
    file stays open until ``stack`` closes. Errors and warnings as :func:`~predict.io.raster.read_raster`'s."""
    path = os.fspath(path)
    require_image_file(path)
    digest = file_digest(path)
    try:
        src = stack.enter_context(opened(rasterio.open, path))
        warn_other_pages(src, path, notes)
        chosen = choose_bands(src.colorinterp, src.count, bands, path, notes)
        if len({src.block_shapes[b - 1] for b in chosen}) > 1:
            raise SampleError(f"{path}: bands {list(chosen)} have different block sizes "
                              f"{[src.block_shapes[b - 1] for b in chosen]}; they cannot be read window by window")
        dtype = np.dtype(src.dtypes[chosen[0] - 1])
        eight_bit = dtype == np.uint8
        ranges, how = None, None
        if not eight_bit and stretch is not None:
            ranges, how = stretch_ranges(src, path, chosen, stretch)
        gcps, gcps_crs = src.gcps
        crs, transform, sidecars = src.crs or gcps_crs, src.transform, sidecars_of(src, path)
    except RasterioIOError as exc:
        raise SampleError(f"{path}: cannot read image ({gdal_reason(exc)})") from None
    to_eight_bits = None if eight_bit else vars(stretch) | ({"percentiles": how} if how else {}) \
        if stretch is not None else "data type's range"
    # keyed by this module's code (it imports predict.io.raster): how it reads and stretches a scene decides its pixels
    key = image_key(path, decoder=__name__, sidecars=sidecars, bands=list(chosen), stretch=to_eight_bits)
    pixels = ScenePixels(src, path, chosen, ranges, may_be_masked(src, chosen))
    return RasterImage(path, pixels, None, crs, transform, key, tuple(gcps), digest)


def changed_while_read(path: str) -> SampleError:
    """The one line of a scene whose file changed between two passes of its reading."""
    return SampleError(f"{path}: the file changed while it was read; read it again once it is complete")


def require_unchanged(path: str, digest: str) -> None:
    """A scene read pass after pass must be of one content: :func:`changed_while_read` when the file at
    ``path`` no longer has ``digest`` (:func:`~predict.provenance.file_digest`)."""
    if file_digest(path) != digest:
        raise changed_while_read(path)


SAMPLE_ROWS = 1024  # rows of a scene an encoder's runtime is checked and calibrated on: 4 rows of 256 px tiles


def middle_rows(path: str | os.PathLike, rows: int = SAMPLE_ROWS, bands: Sequence[int] | None = None,
                stretch: Stretch | None = DEFAULT_STRETCH) -> np.ndarray:
    """uint8 BGR ``(min(rows, H), W, 3)``: the middle rows of the scene at ``path`` as :func:`open_scene` gives
    them, read by windows: tiles of the images at hand for an encoder's runtime
    (:func:`predict.core.tiling.tile_sample`) without reading a whole scene."""
    with ExitStack() as stack:
        pixels = open_scene(path, stack, bands, stretch).pixels
        first = max(0, (pixels.shape[0] - rows) // 2)
        return pixels.read(first, min(pixels.shape[0], first + rows))[0]
