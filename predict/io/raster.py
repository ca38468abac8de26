"""A user's own scenes in and out: any GeoTIFF/COG, PNG or JPEG read into the pipeline's uint8 BGR pixels
with its coordinate system and nodata mask; the probability map back out as a georeferenced GeoTIFF, and
its attention centres and high-probability regions as GeoJSON (RFC 7946: WGS84 longitude/latitude).

Raster I/O, masks and coordinate transforms are rasterio's (GDAL and PROJ).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import MemoryFile

from evaluations.metrics import attention_centres
from predict.core.stretch import band_percentiles, percentile_stretch
from predict.io.annotations import SampleError
from predict.io.atomic import write_atomically
from predict.io.images import decode_strictly
from predict.run.localise import LoadedImage
from predict.run.vectors import file_digest

WGS84 = "EPSG:4326"
DEFAULT_STRETCH = (2.0, 98.0)
PROBMAP_BLOCK = 256  # GeoTIFF tile side of the written maps


@dataclass
class RasterImage:
    """A scene as the pipeline sees it, and where it lies.

    Attributes:
        path: the file it came from.
        pixels: uint8 BGR ``(H, W, 3)``: what the pipeline tiles (0 where not valid).
        valid: bool ``(H, W)``, False where the input is nodata (masked, nodata value, alpha 0, non-finite);
            None when every pixel is valid.
        crs: the coordinate reference system, None when the file is not georeferenced.
        transform: pixel (col, row) -> CRS coordinates of the pixel's corner (identity when not georeferenced).
        key: the tile-vector store's image key: digest of the file's bytes and of the band and stretch choice.
    """

    path: str
    pixels: np.ndarray
    valid: np.ndarray | None
    crs: rasterio.crs.CRS | None
    transform: Affine
    key: str

    def loaded(self) -> LoadedImage:
        """The :class:`~predict.run.localise.LoadedImage` that ``score_tiles`` takes."""
        return LoadedImage(self.path, self.key, self.pixels)


def choose_bands(colorinterp: Sequence[ColorInterp], count: int, bands: Sequence[int] | None = None,
                 name: str = "image") -> tuple[int, ...]:
    """The 1-based bands to read: ``bands`` (one for gray, or three for RGB) when given, else the file's
    red, green and blue by colour interpretation, else its first three (its first alone when it has fewer).

    >>> choose_bands([ColorInterp.blue, ColorInterp.green, ColorInterp.red], 3)
    (3, 2, 1)
    >>> choose_bands([ColorInterp.gray, ColorInterp.alpha], 2), choose_bands([ColorInterp.undefined] * 4, 4, [4, 3, 2])
    ((1,), (4, 3, 2))
    """
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3):
            raise SampleError(f"{name}: --bands takes one band (gray) or three (red, green, blue), got {list(bands)}")
        unknown = [b for b in bands if not 1 <= b <= count]
        if unknown:
            raise SampleError(f"{name}: no band {unknown[0]} (the file has {count} band(s), numbered from 1)")
        return bands
    colours = list(colorinterp)
    if all(c in colours for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return tuple(colours.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue))
    return (1, 2, 3) if count >= 3 else (1,)


def bands_to_uint8(bands: np.ndarray, stretch: tuple[float, float] | None = DEFAULT_STRETCH,
             valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(H, W, C)`` of bands ``(H, W, C)``: 8-bit data as they are; deeper or float data stretched
    between the ``stretch`` percentiles of each band's valid pixels, or, with ``stretch=None``, scaled from
    the type's range (integers) or from 0-1 (floats: reflectance).

    >>> twelve_bit = np.array([[[0], [1000], [4095]]], np.uint16)
    >>> bands_to_uint8(twelve_bit, (0, 100))[0, :, 0].tolist(), bands_to_uint8(twelve_bit, None)[0, :, 0].tolist()
    ([0, 62, 255], [0, 3, 15])
    """
    if bands.dtype == np.uint8:
        return bands
    if stretch is not None:
        return percentile_stretch(bands, stretch[0], stretch[1], valid)
    if np.issubdtype(bands.dtype, np.integer):
        info = np.iinfo(bands.dtype)
        scaled = (bands.astype(np.float64) - info.min) * (255.0 / (float(info.max) - info.min))
    else:
        scaled = np.nan_to_num(bands.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _read_bands(src, path: str, bands: tuple[int, ...]) -> np.ndarray:
    """The selected bands ``(H, W, C)`` in the file's type. JPEGs are decoded as the benchmark pipeline
    decodes them (:func:`~predict.io.images.decode_strictly`: OpenCV, EXIF orientation, truncation refused;
    GDAL's JPEG decoder gives pixels a few levels apart); palettes are expanded."""
    if src.driver == "JPEG":
        decoded = decode_strictly(path)
        decoded = decoded[:, :, None] if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        return decoded[:, :, [b - 1 for b in bands]]
    data = np.moveaxis(src.read(list(bands)), 0, -1)
    if len(bands) == 1 and src.colorinterp[bands[0] - 1] == ColorInterp.palette:
        lut = np.zeros((256, 3), np.uint8)
        for index, colour in src.colormap(bands[0]).items():
            lut[index] = colour[:3]
        data = lut[data[:, :, 0]]
    return data


def _valid_mask(src, bands: tuple[int, ...], data: np.ndarray) -> np.ndarray | None:
    """bool ``(H, W)``: a pixel is valid where any selected band's GDAL mask (nodata value, mask band,
    alpha) says so and every band is finite; None when all are valid."""
    valid = None
    if any(MaskFlags.all_valid not in src.mask_flag_enums[b - 1] for b in bands):
        valid = np.any(src.read_masks(list(bands)) > 0, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.all(np.isfinite(data), axis=2)
        valid = finite if valid is None else valid & finite
    return None if valid is None or valid.all() else valid


def read_raster(path: str | os.PathLike, bands: Sequence[int] | None = None,
                stretch: tuple[float, float] | None = DEFAULT_STRETCH) -> RasterImage:
    """Read a GeoTIFF/COG, PNG or JPEG (any number of bands, 8/16-bit or float) as a :class:`RasterImage`.

    Args:
        path: the file.
        bands: 1-based band numbers, one (gray) or three (red, green, blue); by default the file's RGB colour
            interpretation, else its first three bands (its first band alone when it has fewer).
        stretch: ``(low, high)`` percentiles for data deeper than 8 bits (see :func:`bands_to_uint8`); None scales
            from the data type's range instead. 8-bit data are used as they are.

    A missing, unreadable or undecodable file, or an unknown band, raises :class:`SampleError` naming it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG/JPEG: georeferencing is optional
            with rasterio.open(path) as src:
                chosen = choose_bands(src.colorinterp, src.count, bands, path)
                data = _read_bands(src, path, chosen)
                valid = _valid_mask(src, chosen, data)
                crs, transform = src.crs, src.transform
    except RasterioIOError as exc:
        raise SampleError(f"{path}: cannot read image ({str(exc).splitlines()[0]})") from None
    eight_bit = data.dtype == np.uint8
    pixels = bands_to_uint8(data, stretch, valid)
    pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR) if pixels.shape[2] == 1 else np.ascontiguousarray(pixels[:, :, ::-1])
    if valid is not None:
        pixels[~valid] = 0
    choice = f"bands={list(chosen)};stretch={None if eight_bit else stretch}"
    key = hashlib.sha1(f"{file_digest(path)};{choice}".encode()).hexdigest()
    return RasterImage(path, pixels, valid, crs, transform if crs is not None else Affine.identity(), key)


def write_probmap_tif(path: str | os.PathLike, probmap: np.ndarray, raster: RasterImage) -> None:
    """Write the uint8 ``(H, W)`` map as a tiled, deflate-compressed GeoTIFF with ``raster``'s CRS and
    transform, atomically; where ``raster`` is nodata the map is 0 and masked (GDAL's internal mask band,
    which GIS tools read as nodata)."""
    height, width = probmap.shape
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", tiled=True,
                   blockxsize=PROBMAP_BLOCK, blockysize=PROBMAP_BLOCK, compress="deflate")
    if raster.crs is not None:
        profile.update(crs=raster.crs, transform=raster.transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                if raster.valid is None:
                    dst.write(probmap, 1)
                else:
                    dst.write(np.where(raster.valid, probmap, 0).astype(np.uint8), 1)
                    dst.write_mask(raster.valid)
            data = memory.read()
    write_atomically(path, data)


def pixel_coordinates(raster: RasterImage, cols: Sequence[int], rows: Sequence[int]) -> list[list[float]]:
    """``[x, y]`` of pixels: WGS84 longitude/latitude of each pixel's centre when ``raster`` is georeferenced,
    else the pixel's ``[col, row]``."""
    if raster.crs is None or not len(cols):
        return [[int(c), int(r)] for c, r in zip(cols, rows)]
    xs, ys = raster.transform @ (np.asarray(cols, np.float64) + 0.5, np.asarray(rows, np.float64) + 0.5)
    lons, lats = rasterio.warp.transform(raster.crs, WGS84, xs, ys)
    return [[float(lon), float(lat)] for lon, lat in zip(lons, lats)]


def feature_collection(features: list[dict]) -> dict:
    """A GeoJSON FeatureCollection of ``features``."""
    return {"type": "FeatureCollection", "features": features}


def peaks_feature_collection(probmap: np.ndarray, raster: RasterImage) -> dict:
    """The map's attention centres (as the evaluator finds them, best first) as GeoJSON Points with
    properties ``rank`` (1 = the most probable), ``score`` (map value / 255), ``col``, ``row``."""
    centres = attention_centres(probmap)
    coordinates = pixel_coordinates(raster, [x for x, _ in centres], [y for _, y in centres])
    return feature_collection([
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": xy},
         "properties": {"rank": rank, "score": int(probmap[y, x]) / 255, "col": int(x), "row": int(y)}}
        for rank, ((x, y), xy) in enumerate(zip(centres, coordinates), start=1)])


def regions_feature_collection(probmap: np.ndarray, raster: RasterImage, quantile: float) -> dict:
    """Polygons of the valid pixels where the map is above its ``quantile`` (0-1) over the valid pixels,
    in WGS84 longitude/latitude (pixel corners when not georeferenced); property ``threshold`` (0-1)."""
    if not 0 <= quantile < 1:
        raise ValueError(f"regions quantile must be in [0, 1), got {quantile}")
    threshold = int(band_percentiles(probmap, 100 * quantile, 100 * quantile, raster.valid)[0])
    above = probmap > threshold
    if raster.valid is not None:
        above &= raster.valid
    transform = raster.transform if raster.crs is not None else Affine.identity()
    geometries = [geometry for geometry, _ in
                  rasterio.features.shapes(above.view(np.uint8), mask=above, transform=transform)]
    if raster.crs is not None:
        geometries = [rasterio.warp.transform_geom(raster.crs, WGS84, g) for g in geometries]
    return feature_collection([{"type": "Feature", "geometry": dict(g), "properties": {"threshold": threshold / 255}}
                               for g in geometries])
