"""Reading the large images: JPEG, PNG or (Geo)TIFF, 8- or 16-bit or float, grayscale, RGB or RGBA, returned
as uint8 BGR (OpenCV's order).

Decoding is strict: a truncated JPEG or PNG is an error, never the part of the image the decoder got to.
8-bit JPEG and PNG come out exactly as the original's ``cv2.imread(path)`` (EXIF orientation applied).
Deeper data (16-bit, float) are stretched per band between their 2nd and 98th percentiles, as GIS
viewers show them (:func:`predict.core.stretch.percentile_stretch`), where the original's ``cv2.imread``
kept the top 8 bits.
"""
from __future__ import annotations

import os
import re
import warnings

import cv2
import numpy as np

from predict.core.stretch import percentile_stretch
from predict.io.annotations import SampleError

STRETCH_PERCENTILES = (2.0, 98.0)
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker: FF, then not stuffing, restart or fill
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xDA)}  # TEM, RSTn, SOI, EOI: no length field
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# OpenCV flags: depth and colour as stored (16-bit stays 16-bit, gray stays gray), alpha dropped, and EXIF
# orientation applied as cv2.imread(path) does (IMREAD_UNCHANGED would ignore it).
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def jpeg_problem(data: bytes) -> str | None:
    """Why the JPEG bytes ``data`` are not a complete image (truncated before its end-of-image marker,
    broken segment structure), or None when they are.

    Walks the marker segments and the entropy-coded data of every scan up to ``FF D9``; bytes after it
    (padding, appended metadata) are allowed.

    >>> jpeg_problem(b"\\xff\\xd8\\xff\\xd9") is None
    True
    >>> jpeg_problem(b"\\xff\\xd8\\xff\\xda\\x00\\x02abc")
    'truncated: no end-of-image marker'
    """
    if not data.startswith(b"\xff\xd8"):
        return "no JPEG start-of-image marker"
    pos = 2
    while True:
        match = JPEG_MARKER.search(data, pos)
        if match is None:
            return "truncated: no end-of-image marker"
        marker = data[match.start() + 1]
        if marker == 0xD9:
            return None
        pos = match.end()
        if marker in STANDALONE_MARKERS:
            continue
        if pos + 2 > len(data):
            return "truncated: no end-of-image marker"
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            return f"corrupt segment length {length} at byte {pos}"
        pos += length  # the segment's payload may hold FF bytes (an EXIF thumbnail): jump over it
        if pos > len(data):
            return "truncated: no end-of-image marker"


def png_problem(data: bytes) -> str | None:
    """Why the PNG bytes ``data`` are not complete (no ``IEND`` chunk at the end), or None."""
    if not data.startswith(PNG_SIGNATURE):
        return "no PNG signature"
    if data.rstrip(b"\x00")[-8:-4] != b"IEND":  # the last chunk: type IEND, then its 4-byte CRC
        return "truncated: no IEND chunk at the end"
    return None


def file_problem(data: bytes) -> str | None:
    """The :func:`jpeg_problem` or :func:`png_problem` of a JPEG's or PNG's bytes; None for other formats."""
    if data.startswith(b"\xff\xd8"):
        problem = jpeg_problem(data)
        return problem and f"truncated or corrupt JPEG ({problem})"
    if data.startswith(PNG_SIGNATURE):
        problem = png_problem(data)
        return problem and f"truncated or corrupt PNG ({problem})"
    return None


def to_uint8(image: np.ndarray, path: str) -> np.ndarray:
    """uint8 as is; 16-bit, other integer and float data stretched 2-98 % per band, with a warning naming
    ``path`` when uint16 data use only part of their 16-bit range (e.g. 12-bit sensors)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.integer)
                                       or np.issubdtype(image.dtype, np.floating)):
        raise SampleError(f"{path}: unsupported pixel type {image.dtype}")
    low, high = STRETCH_PERCENTILES
    if image.dtype == np.uint16:
        bits = int(image.max()).bit_length()
        if bits < 16:
            warnings.warn(f"{path}: {bits}-bit data in a 16-bit container (max {int(image.max())}); "
                          f"stretched {low:g}-{high:g} % per band", stacklevel=3)
    return percentile_stretch(image, low, high)


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


def decode_strictly(path: str, flags: int = DECODE_FLAGS) -> np.ndarray:
    """``cv2.imdecode`` of the file at ``path`` with ``flags``; a missing, truncated or undecodable file
    raises :class:`SampleError` naming it (never a partly decoded image)."""
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    with open(path, "rb") as f:
        data = f.read()
    if problem := file_problem(data):
        raise SampleError(f"{path}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise SampleError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return image


def read_image(path: str) -> np.ndarray:
    """Read an image as uint8 BGR ``(H, W, 3)``; a missing, truncated or undecodable file raises
    :class:`SampleError`. 16-bit and float data are stretched (see the module's docstring)."""
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    image = _read_tiff(path) if path.lower().endswith((".tif", ".tiff")) else None
    rgb_order = image is not None
    if image is None:
        image = decode_strictly(path)
    if image.size == 0:
        raise SampleError(f"{path}: cannot decode image (empty)")
    return _to_bgr(to_uint8(image, path), path, rgb_order)


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of the image :func:`read_image` would return, from the file's header where PIL
    can read it (EXIF rotations by 90 degrees swap the two), else by decoding it."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return read_image(path).shape[:2]
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
