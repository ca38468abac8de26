"""Reading the large images: JPEG, PNG or (Geo)TIFF, 8- or 16-bit or float, grayscale, RGB or RGBA, returned
as uint8 BGR (OpenCV's order).

Decoding is strict: a truncated JPEG or PNG, or corrupt data inside a JPEG's entropy-coded stream, is an
error, never the part of the image the decoder got to nor a picture libjpeg patched up. JPEGs are decoded by
simplejpeg's libjpeg-turbo in its strict mode (:func:`read_jpeg_strictly`), PNGs by OpenCV; 8-bit JPEG and
PNG come out exactly as the original's ``cv2.imread(path)`` (EXIF orientation applied). Bytes after a PNG's
``IEND`` chunk are ignored with a warning; a TIFF of several pages is read from its first, with a warning.
Deeper data (16-bit, float) are stretched per band between their 2nd and 98th percentiles, as GIS
viewers show them (:func:`predict.core.stretch.percentile_stretch`), where the original's ``cv2.imread``
kept the top 8 bits.
"""
from __future__ import annotations

import os
import re

import cv2
import numpy as np
import simplejpeg

from predict.core.notes import warn
from predict.core.stretch import percentile_stretch
from predict.io.annotations import SampleError

STRETCH_PERCENTILES = (2.0, 98.0)
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker: FF, then not stuffing, restart or fill
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xDA)}  # TEM, RSTn, SOI, EOI: no length field
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# OpenCV flags: depth and colour as stored (16-bit stays 16-bit, gray stays gray), alpha dropped, and EXIF
# orientation applied as cv2.imread(path) does (IMREAD_UNCHANGED would ignore it).
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
# :func:`read_image`'s peak per pixel: the BGR array it returns (3) and the file's bytes (3.2 measured on
# the like-SLM 10000 x 10001 JPEG); a TIFF's RGB bands and their BGR copy, 6
DECODING_BYTES_PER_PIXEL = {"tiff": 6, "other": 4}
HEADER_BYTES = 1 << 20  # read for a size: the header segments of a JPEG with a large EXIF block included


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


def check_complete(data: bytes, path: str, notes: list[str] | None = None) -> None:
    """Raise :class:`SampleError` naming ``path`` when JPEG or PNG bytes are incomplete (see
    :func:`jpeg_problem`; a PNG whose chunks end before ``IEND``); warn when bytes follow a PNG's ``IEND``
    (the image is whole: they are ignored). Other formats are left to their decoder."""
    if data.startswith(b"\xff\xd8"):
        if problem := jpeg_problem(data):
            raise SampleError(f"{path}: truncated or corrupt JPEG ({problem})")
    elif data.startswith(PNG_SIGNATURE):
        end = png_end(data)
        if end is None:
            raise SampleError(f"{path}: truncated or corrupt PNG (truncated: the chunks end before an IEND chunk)")
        if end < len(data):
            warn(f"{path}: {len(data) - end} bytes after the PNG's IEND chunk; ignored (the image is complete)",
                 notes, stacklevel=3)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) in a JPEG's ``APP1`` segment, as OpenCV reads it; 1 (as stored) without
    one or with an unreadable EXIF. Only the header segments are read (PIL's ``Image.open`` would check the
    pixel count of a large image and warn).

    >>> exif_orientation(b"\\xff\\xd8\\xff\\xda\\x00\\x02")
    1
    """
    from PIL import Image

    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] not in (0xDA, 0xD9):
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if data[position + 1] == 0xE1 and data[position + 4:position + 10] == b"Exif\x00\x00":
            exif = Image.Exif()
            try:
                exif.load(data[position + 10:end])
            except Exception:  # PIL raises what its TIFF parser meets in a damaged EXIF block
                return 1
            orientation = exif.get(0x0112, 1)
            return orientation if orientation in range(1, 9) else 1
        position = end
    return 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` turned to display as EXIF ``orientation`` says, with OpenCV's steps for it (its
    ``ApplyExifOrientation``): 5-8 transpose first, then 2/6 flip left-right, 3/7 both ways, 4/8 upside down.

    >>> orient(np.array([[1, 2], [3, 4]], np.uint8), 6).tolist()  # rotated 90 degrees clockwise
    [[3, 1], [4, 2]]
    """
    if orientation in (5, 6, 7, 8):
        image = cv2.transpose(image)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return image if flip is None else cv2.flip(image, flip)


def decode_jpeg_strictly(data: bytes, path: str, colorspace: str | None = "BGR") -> np.ndarray:
    """The pixels of the JPEG bytes ``data`` (the file at ``path``), EXIF orientation applied: uint8
    ``(H, W, 3)`` in ``colorspace`` ``"BGR"`` or ``"RGB"``, or ``(H, W)`` for ``"GRAY"`` (the luma, as
    ``cv2.IMREAD_GRAYSCALE``); None: as stored, gray for a gray JPEG, else BGR (``cv2.IMREAD_ANYCOLOR``).

    libjpeg's recoverable errors ("Corrupt JPEG data", a bad Huffman code, a premature end), which OpenCV
    only prints while it patches the picture up, raise :class:`SampleError` naming ``path``."""
    if not data.startswith(b"\xff\xd8"):
        raise SampleError(f"{path}: not a JPEG file (no start-of-image marker)")
    check_complete(data, path)
    try:
        if colorspace is None:
            colorspace = "GRAY" if simplejpeg.decode_jpeg_header(data, strict=True)[2] == "Gray" else "BGR"
        image = simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True)
    except ValueError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SampleError(f"{path}: corrupt JPEG data ({reason})") from None
    if colorspace == "GRAY":
        image = image[:, :, 0]
    return orient(image, exif_orientation(data))


def _file_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    with open(path, "rb") as f:
        return f.read()


def read_jpeg_strictly(path: str, colorspace: str = "BGR") -> np.ndarray:
    """The JPEG file at ``path`` as :func:`decode_jpeg_strictly` decodes it: uint8 ``(H, W, 3)`` BGR (or
    RGB), ``(H, W)`` for ``"GRAY"``; exactly ``cv2.imread(path)``'s pixels for a sound file. A missing,
    truncated or corrupt file raises :class:`SampleError` naming it."""
    return decode_jpeg_strictly(_file_bytes(path), path, colorspace)


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
    stays ``(H, W)``, colour is BGR, 16-bit stays 16-bit), JPEGs by :func:`decode_jpeg_strictly`; a missing,
    truncated, corrupt or undecodable file raises :class:`SampleError` naming it (never a partly decoded
    image)."""
    data = _file_bytes(path)
    if data.startswith(b"\xff\xd8"):
        return decode_jpeg_strictly(data, path, colorspace=None)
    check_complete(data, path, notes)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), DECODE_FLAGS)
    if image is None or image.size == 0:
        raise SampleError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return image


def read_image(path: str, notes: list[str] | None = None) -> np.ndarray:
    """Read an image as uint8 BGR ``(H, W, 3)``; a missing, truncated or undecodable file raises
    :class:`SampleError`. 16-bit and float data are stretched (see the module's docstring); warnings go to
    ``notes`` when given (see :mod:`predict.core.notes`)."""
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
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

    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head.startswith(b"\xff\xd8"):
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
