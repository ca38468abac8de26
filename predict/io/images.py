"""Reading the large images: JPEG, PNG or (Geo)TIFF, 8- or 16-bit or float, grayscale, RGB or RGBA, returned
as uint8 BGR (OpenCV's order).

Decoding is strict: a truncated JPEG or PNG, or corrupt data inside a JPEG's entropy-coded stream, is an
error, never the part of the image the decoder got to nor a picture libjpeg patched up. JPEGs are decoded by
simplejpeg's libjpeg-turbo in its strict mode (:func:`~evaluations.jpeg.decode_jpeg_strictly`, which the
evaluator reads maps with), PNGs by OpenCV; 8-bit JPEG and PNG come out exactly as the original's
``cv2.imread(path)`` (EXIF orientation applied). Bytes after a PNG's ``IEND`` chunk are ignored with a
warning; a TIFF of several pages is read from its first, with a warning. Deeper data (16-bit, float) are
stretched per band between their 2nd and 98th percentiles, as GIS viewers show them
(:func:`predict.core.stretch.percentile_stretch`), where the original's ``cv2.imread`` kept the top 8 bits.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import simplejpeg

from evaluations.jpeg import SOI, decode_jpeg_strictly, exif_orientation, image_bytes
from predict.core.notes import warn
from predict.core.stretch import percentile_stretch
from predict.io.annotations import SampleError, file_problem

STRETCH_PERCENTILES = (2.0, 98.0)
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")  # the files read as images, in a folder
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# OpenCV flags: depth and colour as stored (16-bit stays 16-bit, gray stays gray), alpha dropped, and EXIF
# orientation applied as cv2.imread(path) does (IMREAD_UNCHANGED would ignore it).
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
IMAGE_BYTES_PER_PIXEL = 3  # what :func:`read_image` returns: uint8 BGR
# its peak per pixel: the BGR array and the file's bytes (3.2 measured on the like-SLM 10000 x 10001 JPEG);
# a TIFF's RGB bands and their BGR copy, 6
DECODING_BYTES_PER_PIXEL = {"tiff": 6, "other": 4}
HEADER_BYTES = 1 << 20  # read for a size: the header segments of a JPEG with a large EXIF block included


def require_image_file(path: str | os.PathLike) -> None:
    """Raise :class:`SampleError` unless ``path`` is a regular file (or a link to one), with the one line that
    says what it is instead (:func:`~predict.io.annotations.file_problem`: missing, a folder, a FIFO, a device).
    Only the path's status is read, so that a FIFO or ``/dev/zero`` is refused at once instead of read forever.

    >>> require_image_file("/dev/zero")
    Traceback (most recent call last):
      ...
    evaluations.errors.SampleError: /dev/zero: not a regular file (a character device); give an image file
    """
    path = os.fspath(path)
    if problem := file_problem(path, "image", "an image file"):
        raise SampleError(f"{path}: {problem}")


def png_end(data: bytes) -> int | None:
    """Offset in the PNG bytes ``data`` just past its ``IEND`` chunk (CRC included), found by walking the
    chunks (4-byte length, 4-byte type, data, 4-byte CRC); None when they end before one.

    >>> iend = (0).to_bytes(4, "big") + b"IEND" + bytes(4)
    >>> png_end(PNG_SIGNATURE + iend + b"extra"), png_end(PNG_SIGNATURE + iend[:-1])
    (20, None)
    """
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        end = position + 12 + int.from_bytes(data[position:position + 4], "big")
        if data[position + 4:position + 8] == b"IEND":
            return end if end <= len(data) else None
        position = end
    return None


def check_png_complete(data: bytes, path: str, notes: list[str] | None = None) -> None:
    """Raise :class:`SampleError` naming ``path`` when PNG bytes are incomplete (their chunks end before
    ``IEND``); warn when bytes follow the ``IEND`` chunk (the image is whole: they are ignored). Other formats
    are left to their decoder (a JPEG's completeness to :func:`~evaluations.jpeg.decode_jpeg_strictly`)."""
    if data.startswith(PNG_SIGNATURE):
        end = png_end(data)
        if end is None:
            raise SampleError(f"{path}: truncated or corrupt PNG (truncated: the chunks end before an IEND chunk)")
        if end < len(data):
            warn(f"{path}: {len(data) - end} bytes after the PNG's IEND chunk; ignored (the image is complete)",
                 notes, stacklevel=3)


def to_uint8(image: np.ndarray, path: str, notes: list[str] | None = None) -> np.ndarray:
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
            warn(f"{path}: {bits}-bit data in a 16-bit container (max {int(image.max())}); "
                 f"stretched {low:g}-{high:g} % per band", notes, stacklevel=3)
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


def warn_first_page_only(path: str, pages: int, notes: list[str] | None = None) -> None:
    """The warning of a TIFF of several full-resolution pages, whichever reader counted them: the first page
    is read, in every command."""
    warn(f"{path}: TIFF of {pages} pages; reading the first page only", notes, stacklevel=4)


def _read_tiff(path: str, notes: list[str] | None = None) -> np.ndarray | None:
    """Bands of the first page as stored (RGB order), or None when tifffile cannot read the file. OpenCV is
    not used for TIFF first because it reinterprets 4-band files (e.g. RGB + NIR) as alpha.

    A file of several full-resolution pages (overviews and masks are not counted) is read from its first,
    with a warning naming the file and the page count, as OpenCV and GDAL read it."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            pages = [page for page in tiff.pages if not (page.is_reduced or page.is_mask)]
            if len(pages) > 1:
                warn_first_page_only(path, len(pages), notes)
            image = pages[0].asarray()
    except Exception:
        return None
    if image.ndim == 3 and image.shape[0] <= 4 < image.shape[2]:  # band-first layout
        image = np.moveaxis(image, 0, -1)
    return image


def decode_strictly(path: str, notes: list[str] | None = None) -> np.ndarray:
    """The file at ``path`` decoded as ``cv2.imread(path, IMREAD_ANYDEPTH | IMREAD_ANYCOLOR)`` does (gray
    stays ``(H, W)``, colour is BGR, 16-bit stays 16-bit), JPEGs by :func:`~evaluations.jpeg.decode_jpeg_strictly`; a
    path that is not an image file (:func:`require_image_file`), a truncated, corrupt or undecodable file raises
    :class:`SampleError` naming it (never a partly decoded image)."""
    require_image_file(path)
    data = image_bytes(path)
    if data.startswith(SOI):
        return decode_jpeg_strictly(data, path, colorspace=None)
    check_png_complete(data, path, notes)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), DECODE_FLAGS)
    if image is None or image.size == 0:
        raise SampleError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return image


def read_image(path: str, notes: list[str] | None = None) -> np.ndarray:
    """Read an image as uint8 BGR ``(H, W, 3)``; a path that is not an image file (missing, a folder, a FIFO:
    :func:`require_image_file`), a truncated or an undecodable file raises :class:`SampleError`. 16-bit and
    float data are stretched (see the module's docstring); warnings go to ``notes`` when given (see
    :mod:`predict.core.notes`)."""
    require_image_file(path)
    image = _read_tiff(path, notes) if path.lower().endswith((".tif", ".tiff")) else None
    rgb_order = image is not None
    if image is None:
        image = decode_strictly(path, notes)
    if image.size == 0:
        raise SampleError(f"{path}: cannot decode image (empty)")
    return _to_bgr(to_uint8(image, path, notes), path, rgb_order)


def decoding_bytes(path: str, pixels: int) -> int:
    """The memory :func:`read_image` needs at its peak for an image of ``pixels`` at ``path``."""
    return int(pixels * DECODING_BYTES_PER_PIXEL["tiff" if path.lower().endswith((".tif", ".tiff")) else "other"])


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of the image :func:`read_image` would return, from the file's header (EXIF
    rotations by 90 degrees swap the two), else by decoding it. JPEG and PNG headers are read here: PIL
    would warn about the pixel count of a 10000 x 10000 image."""
    from PIL import Image, UnidentifiedImageError

    require_image_file(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head.startswith(SOI):
        try:
            height, width, *_ = simplejpeg.decode_jpeg_header(head)
        except ValueError:  # no frame header in the first bytes: decoding says why
            return read_image(path).shape[:2]
        return (width, height) if exif_orientation(head) in (5, 6, 7, 8) else (height, width)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return read_image(path).shape[:2]
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
