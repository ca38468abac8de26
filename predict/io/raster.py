"""A user's own scenes in and out: any GeoTIFF/COG, PNG or JPEG read into the pipeline's uint8 BGR pixels
with its georeferencing and nodata mask; the maps back out as Cloud Optimized GeoTIFFs a GIS opens as they
are, and the attention centres and high-probability regions as GeoJSON (RFC 7946).

Georeferencing is whatever the file carries: a CRS and geotransform, a geotransform without CRS, a world
file (``.wld``, ``.jgw``, ``.pgw``, ``.tfw``, read by GDAL) or ground control points (GCPs). Every raster
output carries it on (GCPs as GCPs); vector outputs are in WGS84 longitude/latitude when a CRS is known,
in the input's map coordinates when only a transform is, else in pixel coordinates (``col + 0.5``,
``row + 0.5`` is the centre of pixel ``(col, row)``, as in GDAL). Raster I/O, masks and coordinate
transforms are rasterio's (GDAL and PROJ).
"""
from __future__ import annotations

import os
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import rasterio.warp
import shapely
import shapely.geometry
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import MemoryFile
from rasterio.transform import GCPTransformer
from rasterio.windows import Window

from evaluations.jpeg import image_bytes
from evaluations.metrics import attention_centres
from predict.core.notes import warn
from predict.core.stretch import Stretch, histogram_percentiles, level_counts
from predict.errors import ArgumentError
from predict.io.annotations import SampleError
from predict.io.images import check_png_complete, decode_strictly, require_image_file, warn_first_page_only
from predict.provenance import file_digest, image_key, read_unchanged
from predict.provenance.store import write_atomically

WGS84 = "EPSG:4326"
DEFAULT_STRETCH = Stretch()
COG_BLOCK = 256  # tile side of the written maps; overviews are made down to one tile
COORDINATE_DECIMALS = 7  # 1e-7 degree: about 1 cm on the ground
WORLD_FILE_EXTENSIONS = {".jpg": ".jgw", ".jpeg": ".jgw", ".png": ".pgw", ".tif": ".tfw", ".tiff": ".tfw"}
RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


@dataclass
class RasterImage:
    """A scene as the pipeline sees it, and where it lies (a :class:`~predict.localisation.maps.LoadedImage`
    with its georeferencing).

    Attributes:
        path: the file it came from.
        pixels: uint8 BGR ``(H, W, 3)``: what the pipeline tiles (0 where not valid).
        valid: bool ``(H, W)``, False where the input is nodata (masked, nodata value, alpha 0, non-finite);
            None when every pixel is valid.
        crs: the coordinate reference system of the transform or of the GCPs; None when the file names none.
        transform: pixel (col, row) -> map coordinates of the pixel's corner (identity when the file has no
            geotransform).
        key: the tile-vector store's image key (:func:`predict.provenance.image_key`): the file's content,
            the decoding code and the band and stretch choice.
        gcps: the file's ground control points (empty when it has none).
        digest: sha256 of the file's bytes (:func:`predict.provenance.file_digest`).
    """

    path: str
    pixels: np.ndarray
    valid: np.ndarray | None
    crs: rasterio.crs.CRS | None
    transform: Affine
    key: str
    gcps: Sequence[GroundControlPoint] = ()
    digest: str = ""

    def loaded(self) -> RasterImage:
        """What ``score_tiles`` takes: a :class:`~predict.localisation.maps.LoadedImage`'s ``path``, ``key`` and
        ``pixels``, which a raster has (``io`` does not import ``run``)."""
        return self

    @property
    def has_transform(self) -> bool:
        return self.transform != Affine.identity()

    @property
    def coordinate_system(self) -> str:
        """What vector outputs are in: ``"wgs84"`` (a CRS is known), ``"map"`` (a transform or GCPs without
        CRS: the input's map units) or ``"pixel"`` (pixel coordinates, y down)."""
        if self.has_transform or self.gcps:
            return "wgs84" if self.crs is not None else "map"
        return "pixel"


def choose_bands(colorinterp: Sequence[ColorInterp], count: int, bands: Sequence[int] | None = None,
                 name: str = "image", notes: list[str] | None = None) -> tuple[int, ...]:
    """The 1-based bands to read: ``bands`` (one for gray, or three for RGB) when given, else the file's
    red, green and blue by colour interpretation, else its first three (its first alone when it has fewer).
    A file of more than three bands without RGB colour interpretation gets a warning naming the bands used
    (to ``notes`` when given: see :mod:`predict.core.notes`).

    >>> choose_bands([ColorInterp.blue, ColorInterp.green, ColorInterp.red], 3)
    (3, 2, 1)
    >>> choose_bands([ColorInterp.gray, ColorInterp.alpha], 2), choose_bands([ColorInterp.undefined] * 4, 4, [4, 3, 2])
    ((1,), (4, 3, 2))
    """
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3):
            raise ArgumentError("bands", f"{list(bands)}: expected one band (gray) or three (red, green, blue)")
        unknown = [b for b in bands if not 1 <= b <= count]
        if unknown:
            raise SampleError(f"{name}: no band {unknown[0]} (the file has {count} band(s), numbered from 1)")
        return bands
    colours = list(colorinterp)
    if all(c in colours for c in RGB):
        return tuple(colours.index(c) + 1 for c in RGB)
    if count > 3:
        warn(f"{name}: {count} bands and none marked red, green and blue; bands 1, 2, 3 read as red, "
             "green, blue (choose others with --bands, e.g. --bands 3,2,1 for blue-green-red-NIR order)", notes)
    return (1, 2, 3) if count >= 3 else (1,)


def bands_to_uint8(bands: np.ndarray, stretch: Stretch | None = DEFAULT_STRETCH,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(H, W, C)`` of bands ``(H, W, C)``: 8-bit data as they are; deeper or float data stretched
    between percentiles of the valid pixels (:class:`~predict.core.stretch.Stretch`: one range for all bands
    by default), or, with ``stretch=None``, scaled from the type's range (integers) or from 0-1 (floats).

    >>> twelve_bit = np.array([[[0], [1000], [4095]]], np.uint16)
    >>> bands_to_uint8(twelve_bit, Stretch(0, 100))[0, :, 0].tolist(), bands_to_uint8(twelve_bit, None)[0, :, 0].tolist()
    ([0, 62, 255], [0, 3, 15])
    """
    if bands.dtype == np.uint8:
        return bands
    if stretch is not None:
        return stretch(bands, valid)
    if np.issubdtype(bands.dtype, np.integer):
        info = np.iinfo(bands.dtype)
        scaled = (bands.astype(np.float64) - info.min) * (255.0 / (float(info.max) - info.min))
    else:
        scaled = np.nan_to_num(bands.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def read_bands(src, path: str, bands: tuple[int, ...], notes: list[str] | None = None,
                window: Window | None = None) -> np.ndarray:
    """The selected bands ``(H, W, C)`` in the file's type (of ``window`` alone when given: a GeoTIFF's). JPEGs are decoded as the benchmark pipeline
    decodes them (:func:`~predict.io.images.decode_strictly`: OpenCV, EXIF orientation, truncation refused;
    GDAL's JPEG decoder gives pixels a few levels apart); a PNG's completeness is checked first (GDAL
    decodes the missing rows of a truncated PNG as zeros, without an error); palettes are expanded."""
    if src.driver == "PNG":
        check_png_complete(image_bytes(path), path, notes)
    if src.driver == "JPEG":
        decoded = decode_strictly(path)
        decoded = decoded[:, :, None] if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        return decoded[:, :, [b - 1 for b in bands]]
    data = np.moveaxis(src.read(list(bands), window=window), 0, -1)
    if len(bands) == 1 and src.colorinterp[bands[0] - 1] == ColorInterp.palette:
        lut = np.zeros((256, 3), np.uint8)
        for index, colour in src.colormap(bands[0]).items():
            lut[index] = colour[:3]
        data = lut[data[:, :, 0]]
    return data


def valid_mask(src, bands: tuple[int, ...], data: np.ndarray, window: Window | None = None) -> np.ndarray | None:
    """bool ``(H, W)``: a pixel of ``data`` (read from ``window``, the whole file when None) is valid where any
    selected band's GDAL mask (nodata value, mask band, alpha) says so and every band is finite; None when
    all are valid."""
    valid = None
    if any(MaskFlags.all_valid not in src.mask_flag_enums[b - 1] for b in bands):
        valid = np.any(src.read_masks(list(bands), window=window) > 0, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.all(np.isfinite(data), axis=2)
        valid = finite if valid is None else valid & finite
    return None if valid is None or valid.all() else valid


def warn_other_pages(src, path: str, notes: list[str] | None = None) -> None:
    """A multi-page TIFF is read from its first page, with the warning of :func:`predict.io.images.read_image`
    naming the file and the page count (GDAL lists every page, not the overviews nor masks, as a subdataset)."""
    pages = [s for s in src.subdatasets if s.startswith("GTIFF_DIR:")]
    if src.driver == "GTiff" and len(pages) > 1:
        warn_first_page_only(path, len(pages), notes)


def gdal_reason(error: BaseException) -> str:
    """The first line of GDAL's own reason for a rasterio error: rasterio's "Read failed. See previous
    exception for details." names none, its chain of causes does (the innermost is GDAL's first complaint,
    e.g. ``TIFFReadEncodedStrip:Read error at scanline 99; got 5514 bytes, expected 6300``)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


_OPENING = threading.Lock()


@contextmanager
def opened(open_dataset, *args, **kwargs):
    """``open_dataset(*args, **kwargs)`` (``rasterio.open``, ``MemoryFile.open``) as a context, without
    rasterio's NotGeoreferencedWarning: georeferencing is optional here (a PNG, JPEG or plain TIFF has none).

    rasterio warns from inside the open. Python's warning filters are process-wide and
    ``warnings.catch_warnings`` is not thread-safe, so the filter is set for the open alone, under a lock:
    two threads of this module never interleave their filters, and no other warning is affected.
    """
    with _OPENING, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
        dataset = open_dataset(*args, **kwargs)
    with dataset:
        yield dataset


def dataset_files(path: str | os.PathLike) -> list[str]:
    """The files GDAL reads as the dataset at ``path`` beside the file itself (its sidecars: an external
    mask ``.msk``, a world file, an ``.aux.xml``, overviews ``.ovr``...), as GDAL lists them now; none for a
    file it cannot open (its reading says why)."""
    path = os.fspath(path)
    try:
        with opened(rasterio.open, path) as src:
            return sidecars_of(src, path)
    except RasterioIOError:
        return []


def sidecars_of(src, path: str) -> list[str]:
    """The files of the open dataset ``src`` other than ``path`` itself."""
    return sorted(f for f in src.files if os.path.realpath(f) != os.path.realpath(path))


def read_raster(path: str | os.PathLike, bands: Sequence[int] | None = None,
                stretch: Stretch | None = DEFAULT_STRETCH, notes: list[str] | None = None) -> RasterImage:
    """Read a GeoTIFF/COG, PNG or JPEG (any number of bands, 8/16-bit or float) as a :class:`RasterImage`.

    Args:
        path: the file.
        bands: 1-based band numbers, one (gray) or three (red, green, blue); by default the file's RGB colour
            interpretation, else its first three bands (its first band alone when it has fewer).
        stretch: how data deeper than 8 bits become 8 bits (see :func:`bands_to_uint8`); None scales from
            the data type's range instead. 8-bit data are used as they are.

    A missing, unreadable or undecodable file, or an unknown band, raises :class:`SampleError` naming it;
    warnings go to ``notes`` when given (see :mod:`predict.core.notes`).
    """
    path = os.fspath(path)
    require_image_file(path)
    return read_unchanged(path, lambda: _decode_raster(path, bands, stretch, notes))


def _decode_raster(path: str, bands: Sequence[int] | None, stretch: Stretch | None,
                   notes: list[str] | None) -> RasterImage:
    """:func:`read_raster`'s decoding; its key is taken after the pixels are read (and
    :func:`~predict.provenance.read_unchanged` checks the file did not change meanwhile)."""
    try:
        with opened(rasterio.open, path) as src:
            warn_other_pages(src, path, notes)
            chosen = choose_bands(src.colorinterp, src.count, bands, path, notes)
            data = read_bands(src, path, chosen, notes)
            valid = valid_mask(src, chosen, data)
            gcps, gcps_crs = src.gcps
            crs, transform = src.crs or gcps_crs, src.transform
            sidecars = sidecars_of(src, path)
    except RasterioIOError as exc:
        raise SampleError(f"{path}: cannot read image ({gdal_reason(exc)})") from None
    eight_bit = data.dtype == np.uint8
    pixels = bands_to_uint8(data, stretch, valid)
    pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR) if pixels.shape[2] == 1 else np.ascontiguousarray(pixels[:, :, ::-1])
    if valid is not None:
        pixels[~valid] = 0
    to_eight_bits = None if eight_bit else vars(stretch) if stretch is not None else "data type's range"
    key = image_key(path, decoder=__name__, sidecars=sidecars, bands=list(chosen), stretch=to_eight_bits)
    return RasterImage(path, pixels, valid, crs, transform, key, tuple(gcps), file_digest(path))


# ---- coordinates --------------------------------------------------------------------------------------------

def map_coordinates(raster: RasterImage, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input's map coordinates of pixel-space points (``xs`` columns, ``ys`` rows, float, 0 at the
    image's top-left corner): through the geotransform, or the GCPs' polynomial (GDAL's order 1 for a few
    GCPs); the pixel coordinates themselves when the file has neither."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if raster.gcps and not raster.has_transform:
        mx, my = GCPTransformer(list(raster.gcps)).xy(ys, xs, offset="ul")
        return np.asarray(mx, np.float64), np.asarray(my, np.float64)
    return raster.transform @ (xs, ys)


def output_coordinates(raster: RasterImage, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``(N, 2)`` positions of pixel-space points in the vector outputs' system
    (:attr:`RasterImage.coordinate_system`), rounded to :data:`COORDINATE_DECIMALS`."""
    mx, my = map_coordinates(raster, xs, ys)
    if raster.coordinate_system == "wgs84" and len(mx):
        mx, my = rasterio.warp.transform(raster.crs, WGS84, mx, my)
    return np.round(np.column_stack([mx, my]), COORDINATE_DECIMALS)


def pixel_coordinates(raster: RasterImage, cols: Sequence[int], rows: Sequence[int]) -> list[list[float]]:
    """``[x, y]`` of the centres of pixels ``(cols[i], rows[i])``: WGS84 longitude/latitude when a CRS is
    known, else the input's map coordinates, else ``[col + 0.5, row + 0.5]``."""
    xs, ys = np.asarray(cols, np.float64) + 0.5, np.asarray(rows, np.float64) + 0.5
    return output_coordinates(raster, xs, ys).tolist()


def rfc7946_geometry(geometry: shapely.Geometry) -> dict:
    """GeoJSON of a (multi)polygon with RFC 7946's ring orientation: exterior rings counter-clockwise,
    holes clockwise (in the plane of the coordinates: longitude east, latitude north).

    >>> clockwise = shapely.Polygon([(0, 0), (0, 1), (1, 1), (1, 0)])
    >>> rfc7946_geometry(clockwise)["coordinates"][0][:3]
    [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    """
    mapping = shapely.geometry.mapping(shapely.orient_polygons(geometry))
    return {"type": mapping["type"], "coordinates": _as_lists(mapping["coordinates"])}


def _as_lists(coordinates):
    """Nested tuples of coordinates as nested lists (JSON's form, and geojson-pydantic's)."""
    if coordinates and isinstance(coordinates[0], (int, float)):
        return [float(c) for c in coordinates]
    return [_as_lists(c) for c in coordinates]


def _unwrapped(ring: np.ndarray, near: float | None = None) -> np.ndarray | None:
    """``(N, 2)`` lon/lat ring with longitudes made continuous (no jump of 360 between vertices), shifted by
    whole turns to start nearest longitude ``near``; None when the ring goes round a pole."""
    ring = np.array(ring, np.float64)
    ring[:, 0] = np.unwrap(ring[:, 0], period=360.0)
    if abs(ring[-1, 0] - ring[0, 0]) > 180:
        return None
    if near is not None:
        ring[:, 0] -= 360.0 * np.round((ring[0, 0] - near) / 360.0)
    return ring


def split_at_antimeridian(geometry: shapely.Geometry) -> shapely.Geometry | None:
    """A lon/lat (multi)polygon whose rings may jump across the antimeridian, as pieces within
    -180..180 longitude; None when a ring goes round a pole.

    >>> across = shapely.Polygon([(179, 0), (-179, 0), (-179, 1), (179, 1)])
    >>> sorted(p.bounds for p in split_at_antimeridian(across).geoms)
    [(-180.0, 0.0, -179.0, 1.0), (179.0, 0.0, 180.0, 1.0)]
    """
    pieces = []
    for polygon in getattr(geometry, "geoms", [geometry]):
        exterior = _unwrapped(polygon.exterior.coords)
        holes = [_unwrapped(ring.coords, near=exterior[0, 0]) for ring in polygon.interiors] if exterior is not None else []
        if exterior is None or any(hole is None for hole in holes):
            return None
        continuous = shapely.make_valid(shapely.Polygon(exterior, holes))  # pixel staircases may touch themselves
        for turn in (-360.0, 0.0, 360.0):
            piece = continuous.intersection(shapely.box(turn - 180, -90, turn + 180, 90))
            piece = shapely.transform(piece, lambda xy, turn=turn: xy - [turn, 0.0])
            pieces += [p for p in getattr(piece, "geoms", [piece]) if p.geom_type == "Polygon" and not p.is_empty]
    return pieces[0] if len(pieces) == 1 else shapely.MultiPolygon(pieces)


def pixel_region_geometry(raster: RasterImage, pixel_geometry: dict) -> dict:
    """A polygon of pixel edges (``rasterio.features.shapes`` in pixel space) in the outputs' coordinate
    system: through the geotransform or GCPs; to WGS84 when a CRS is known, cut at the antimeridian
    (:func:`split_at_antimeridian`; GDAL's cutting, which closes pole caps, for a ring round a pole);
    rounded and oriented as RFC 7946 wants."""
    geometry = shapely.geometry.shape(pixel_geometry)
    if raster.coordinate_system != "pixel":
        geometry = shapely.transform(geometry, lambda xy: np.column_stack(map_coordinates(raster, xy[:, 0], xy[:, 1])))
    if raster.coordinate_system == "wgs84":
        lonlat = shapely.transform(geometry, lambda xy: np.column_stack(rasterio.warp.transform(raster.crs, WGS84, xy[:, 0], xy[:, 1])))
        geometry = (split_at_antimeridian(lonlat)
                    or shapely.geometry.shape(rasterio.warp.transform_geom(raster.crs, WGS84, geometry)))
    geometry = shapely.transform(geometry, lambda xy: np.round(xy, COORDINATE_DECIMALS))
    return rfc7946_geometry(geometry)


# ---- vector outputs -----------------------------------------------------------------------------------------

def feature_collection(features: list[dict]) -> dict:
    """A GeoJSON FeatureCollection of ``features``."""
    return {"type": "FeatureCollection", "features": features}


def peaks_feature_collection(probmap: np.ndarray, raster: RasterImage, properties: dict | None = None) -> dict:
    """The map's attention centres (as the evaluator finds them, best first) as GeoJSON Points at their
    pixel's centre (:func:`peaks_of_centres`)."""
    centres = attention_centres(probmap)
    return peaks_of_centres(centres, [int(probmap[y, x]) for x, y in centres], raster, properties)


def peaks_of_centres(centres: Sequence[tuple[int, int]], values: Sequence[int], raster: RasterImage,
                     properties: dict | None = None) -> dict:
    """Attention centres ``(x, y)`` (best first) whose map values are ``values`` (0-255) as GeoJSON Points
    at their pixel's centre, with ``properties`` (the query, encoder...) and ``rank`` (1 = the most
    probable), ``score`` (map value / 255), ``col``, ``row`` (the pixel) and ``coordinate_system``
    (:attr:`RasterImage.coordinate_system`)."""
    coordinates = pixel_coordinates(raster, [x for x, _ in centres], [y for _, y in centres])
    return feature_collection([
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": xy},
         "properties": {**(properties or {}), "rank": rank, "score": value / 255, "col": int(x),
                        "row": int(y), "coordinate_system": raster.coordinate_system}}
        for rank, ((x, y), value, xy) in enumerate(zip(centres, values, coordinates), start=1)])


def quantile_mask(probmap: np.ndarray, valid: np.ndarray | None, quantile: float) -> tuple[np.ndarray, int]:
    """bool ``(H, W)``: the valid pixels where the map is above its ``quantile`` (0-1) over the valid pixels;
    and that threshold (0-255).

    >>> quantile_mask(np.array([[0, 100, 200, 255]], np.uint8), None, 0.5)
    (array([[False, False,  True,  True]]), 100)
    """
    threshold = quantile_threshold(level_counts(probmap if valid is None else probmap[valid]), quantile)
    above = probmap > threshold
    return (above if valid is None else above & valid), threshold


def quantile_threshold(counts: np.ndarray, quantile: float) -> int:
    """A uint8 map's ``quantile`` (0-1) from the level counts of its valid pixels
    (:func:`~predict.core.stretch.level_counts`; those of a map's stripes add up).

    >>> quantile_threshold(level_counts(np.array([0, 100, 200, 255], np.uint8)), 0.5)
    100
    """
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    return int(histogram_percentiles(counts, np.uint8, 100 * quantile, 100 * quantile)[0])


def regions_feature_collection(probmap: np.ndarray, raster: RasterImage, quantile: float,
                               properties: dict | None = None) -> dict:
    """Polygons of the valid pixels where the map is above its ``quantile`` (0-1) over the valid pixels,
    in the outputs' coordinate system (:func:`pixel_region_geometry`), with ``properties``, ``threshold``
    (0-1) and ``coordinate_system``."""
    above, threshold = quantile_mask(probmap, raster.valid, quantile)
    shapes = rasterio.features.shapes(above.view(np.uint8), mask=above, transform=Affine.identity())
    return regions_of_shapes(shapes, raster, threshold, properties)


def regions_of_shapes(shapes, raster: RasterImage, threshold: int, properties: dict | None = None) -> dict:
    """The pixel-space polygons ``shapes`` (``rasterio.features.shapes`` of a map's pixels above
    ``threshold`` (0-255)) as :func:`regions_feature_collection`'s features."""
    extra = {"threshold": threshold / 255, "coordinate_system": raster.coordinate_system}
    return feature_collection([{"type": "Feature", "geometry": pixel_region_geometry(raster, g),
                                "properties": {**(properties or {}), **extra}} for g, _ in shapes])


# ---- raster outputs -----------------------------------------------------------------------------------------

def jet_colour_table() -> dict[int, tuple[int, int, int, int]]:
    """The colour table of the probability maps: OpenCV's JET, the colours of the overlay."""
    colours = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    return {value: (*map(int, rgb), 255) for value, rgb in enumerate(colours)}


MASK_COLOURS = {0: (0, 0, 0, 0), 1: (255, 0, 0, 255)}  # outside the mask transparent, inside red


def georeference_profile(raster: RasterImage) -> dict:
    """The rasterio profile keys that carry ``raster``'s georeferencing: CRS and transform, or GCPs."""
    if raster.gcps and not raster.has_transform:
        return {"gcps": list(raster.gcps), "crs": raster.crs}
    profile = {"transform": raster.transform} if raster.has_transform else {}
    return profile | ({"crs": raster.crs} if raster.crs is not None else {})


def cog_bytes(band: np.ndarray, raster: RasterImage, *, tags: dict | None = None, description: str = "",
              colours: dict | None = None) -> bytes:
    """A uint8 ``(H, W)`` band as the bytes of a Cloud Optimized GeoTIFF (deflate, 256 x 256 tiles, internal
    overviews down to one tile) with ``raster``'s georeferencing, ``tags`` as metadata, the band
    ``description`` and colour table ``colours``; where ``raster`` is nodata the band is 0 and masked
    (GDAL's internal mask band, overviews included), which GIS tools read as nodata.

    Overviews are nearest-neighbour: the maps are smooth (a 251 median or 255 Gaussian), and GDAL averages
    a band with a colour table by a nearest-colour search (38 s instead of 4 s for a 10000 x 10000 map)."""
    height, width = band.shape
    with MemoryFile() as plain, MemoryFile() as optimised:
        with opened(plain.open, **plain_profile(raster, height, width)) as dst:
            dst.write(band if raster.valid is None else np.where(raster.valid, band, 0).astype(np.uint8), 1)
            if raster.valid is not None:
                dst.write_mask(raster.valid)
            label_band(dst, tags, description, colours)
        with opened(plain.open) as src:
            rasterio.shutil.copy(src, optimised.name, **COG_OPTIONS)
        return optimised.read()


COG_OPTIONS = dict(driver="COG", compress="deflate", blocksize=COG_BLOCK, overview_resampling="nearest")


def plain_profile(raster: RasterImage, height: int, width: int) -> dict:
    """The profile of the tiled GeoTIFF a COG of ``raster``'s map is copied from (``COG_OPTIONS``)."""
    return dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", tiled=True,
                blockxsize=COG_BLOCK, blockysize=COG_BLOCK, **georeference_profile(raster))


def label_band(dst, tags: dict | None, description: str, colours: dict | None) -> None:
    """A map's colour table ``colours``, metadata ``tags`` and band ``description``, on the open ``dst``."""
    if colours:
        dst.write_colormap(1, colours)
    dst.update_tags(**{k: _tag_text(v) for k, v in (tags or {}).items() if v is not None})
    dst.set_band_description(1, description)


def _tag_text(value) -> str:
    """A metadata value as text: numbers and strings as they are, lists as comma-joined."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def write_probmap_tif(path: str | os.PathLike, probmap: np.ndarray, raster: RasterImage, tags: dict | None = None) -> None:
    """Write the uint8 ``(H, W)`` map as a Cloud Optimized GeoTIFF (:func:`cog_bytes`) atomically, with the JET
    colour table, the band description ``probability (0-255) of: <query>`` and ``tags`` (the query,
    encoder, pipeline... that made it)."""
    write_atomically(path, cog_bytes(probmap, raster, tags=tags, description=probmap_description(tags),
                                     colours=jet_colour_table()))


def probmap_description(tags: dict | None) -> str:
    """The probability map's band description: ``probability (0-255) of: <query>``."""
    query = (tags or {}).get("query")
    return f"probability (0-255) of: {query}" if query else "probability (0-255)"


def write_mask_tif(path: str | os.PathLike, probmap: np.ndarray, raster: RasterImage, quantile: float,
                   tags: dict | None = None) -> int:
    """Write the binary mask (1 inside, 0 outside) of the map above its ``quantile`` (:func:`quantile_mask`)
    as a Cloud Optimized GeoTIFF, atomically; return the threshold (0-255)."""
    above, threshold = quantile_mask(probmap, raster.valid, quantile)
    tags, description = mask_labels(quantile, threshold, tags)
    write_atomically(path, cog_bytes(above.view(np.uint8), raster, tags=tags, description=description,
                                     colours=MASK_COLOURS))
    return threshold


def mask_labels(quantile: float, threshold: int, tags: dict | None) -> tuple[dict, str]:
    """The mask's metadata (``tags`` with its quantile and threshold) and band description."""
    tags = (tags or {}) | {"mask_quantile": quantile, "mask_threshold": threshold / 255}
    return tags, f"probability above its {quantile:g} quantile ({threshold}/255)"


def world_file_text(transform: Affine) -> str:
    """The six lines of a world file: pixel size and rotation, then the centre of the top-left pixel.

    >>> world_file_text(Affine(0.5, 0, 500000, 0, -0.5, 5000000)).split()
    ['0.5', '0.0', '0.0', '-0.5', '500000.25', '4999999.75']
    """
    x, y = transform @ (0.5, 0.5)
    return "\n".join(repr(float(v)) for v in (transform.a, transform.d, transform.b, transform.e, x, y)) + "\n"


def pam_xml(raster: RasterImage, tags: dict | None = None) -> str:
    """GDAL's ``.aux.xml`` of an image beside its world file: the CRS of its transform, or its GCPs with
    theirs, and ``tags`` as metadata."""
    root = ET.Element("PAMDataset")
    if raster.crs is not None and raster.has_transform:
        ET.SubElement(root, "SRS").text = raster.crs.to_wkt()  # no axis mapping: GDAL reads x, y (lon, lat)
    if raster.gcps and not raster.has_transform:
        gcp_list = ET.SubElement(root, "GCPList", Projection=raster.crs.to_wkt() if raster.crs else "")
        for gcp in raster.gcps:
            ET.SubElement(gcp_list, "GCP", Id=str(gcp.id or ""), Pixel=repr(gcp.col), Line=repr(gcp.row),
                          X=repr(gcp.x), Y=repr(gcp.y), Z=repr(gcp.z or 0.0))
    if tags:
        metadata = ET.SubElement(root, "Metadata")
        for key, value in tags.items():
            if value is not None:
                ET.SubElement(metadata, "MDI", key=key).text = _tag_text(value)
    return ET.tostring(root, encoding="unicode") + "\n"


def georeference_sidecars(image_path: str, raster: RasterImage, tags: dict | None = None) -> dict[str, str]:
    """Write beside ``image_path`` (a JPEG or PNG of ``raster``'s pixel grid) the files that georeference
    it for GDAL and QGIS: a world file when ``raster`` has a geotransform, and ``<image>.aux.xml`` (CRS,
    GCPs, ``tags``); atomically. Returns ``{"world_file": path, "aux_xml": path}`` of those written."""
    written = {}
    root, extension = os.path.splitext(image_path)
    if raster.has_transform:
        written["world_file"] = root + WORLD_FILE_EXTENSIONS.get(extension.lower(), ".wld")
        write_atomically(written["world_file"], world_file_text(raster.transform))
    written["aux_xml"] = image_path + ".aux.xml"
    write_atomically(written["aux_xml"], pam_xml(raster, tags))
    return written
