"""Strict JPEG decoding, and the project's one JPEG marker parser (:func:`jpeg_markers`).

A truncated JPEG, or corrupt data inside its entropy-coded stream, is an error, never the part of the image
the decoder got to nor a picture libjpeg patched up: simplejpeg's libjpeg-turbo decodes in its strict mode,
and EXIF orientation is applied as OpenCV applies it, so a sound file gives exactly ``cv2.imread``'s pixels.
The evaluator reads probability maps with it (:func:`~evaluations.metrics.read_probmap`); ``predict`` reads
images with it too, and walks JPEG markers with :func:`jpeg_markers`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator

import cv2
import numpy as np
import simplejpeg

from evaluations.errors import SampleError

SOI = b"\xff\xd8"  # start of image: the first two bytes of every JPEG
SOS, EOI, APP1 = 0xDA, 0xD9, 0xE1  # start of scan, end of image, the EXIF segment's marker
MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker: FF, then not stuffing, restart or fill
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xDA)}  # TEM, RSTn, SOI, EOI: no length field
EXIF_HEADER = b"Exif\x00\x00"
TRUNCATED = "truncated: no end-of-image marker"


def jpeg_markers(data: bytes | memoryview) -> Iterator[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker of the JPEG bytes ``data`` after its start-of-image, up to its
    end-of-image: the byte after ``FF``, the offset of the ``FF``, and the offset just past the marker's
    segment (its length field counted; 2 bytes on for a marker without one).

    The next marker is searched for, so the entropy-coded data of a scan (where ``FF`` is followed by a
    stuffed 00 or a restart marker) and fill bytes are stepped over; a segment's payload is jumped over by
    its length (an EXIF thumbnail may hold ``FF`` bytes). Bytes that end before an end-of-image marker, or an
    impossible segment length, raise ``ValueError`` naming the problem when the walk gets there, so a
    reader of the header segments that stops at the first scan never meets a problem of the data after it.

    >>> [(hex(m), start, end) for m, start, end in jpeg_markers(b"\\xff\\xd8\\xff\\xe0\\x00\\x04ab\\xff\\xd9")]
    [('0xe0', 2, 8), ('0xd9', 8, 10)]
    """
    position = len(SOI)
    while True:
        match = MARKER.search(data, position)
        if match is None:
            raise ValueError(TRUNCATED)
        marker, position = data[match.start() + 1], match.end()
        if marker not in STANDALONE_MARKERS:
            if position + 2 > len(data):
                raise ValueError(TRUNCATED)
            length = int.from_bytes(data[position:position + 2], "big")
            if length < 2:
                raise ValueError(f"corrupt segment length {length} at byte {position}")
            position += length
            if position > len(data):
                raise ValueError(TRUNCATED)
        yield marker, match.start(), position
        if marker == EOI:
            return


def jpeg_problem(data: bytes) -> str | None:
    """Why the JPEG bytes ``data`` are not a complete image (truncated before its end-of-image marker,
    broken segment structure), or None when they are: every marker is walked up to ``FF D9``
    (:func:`jpeg_markers`); bytes after it (padding, appended metadata) are allowed.

    >>> jpeg_problem(b"\\xff\\xd8\\xff\\xd9") is None
    True
    >>> jpeg_problem(b"\\xff\\xd8\\xff\\xda\\x00\\x02abc")
    'truncated: no end-of-image marker'
    """
    if not data.startswith(SOI):
        return "no JPEG start-of-image marker"
    try:
        for _ in jpeg_markers(data):
            pass
    except ValueError as error:
        return str(error)
    return None


def exif_block(data: bytes) -> bytes | None:
    """The EXIF data of a JPEG's first ``APP1`` segment before its first scan, or None without one (or
    with broken header segments, which the decoder reports)."""
    try:
        for marker, start, end in jpeg_markers(data):
            if marker in (SOS, EOI):
                return None
            if marker == APP1 and data[start + 4:start + 10] == EXIF_HEADER:
                return data[start + 10:end]
    except ValueError:
        return None


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) in a JPEG's ``APP1`` segment, as OpenCV reads it; 1 (as stored) without
    one or with an unreadable EXIF. Only the header segments are read (PIL's ``Image.open`` would check the
    pixel count of a large image and warn).

    >>> exif_orientation(b"\\xff\\xd8\\xff\\xda\\x00\\x02")
    1
    """
    from PIL import Image

    block = exif_block(data)
    if block is None:
        return 1
    exif = Image.Exif()
    try:
        exif.load(block)
    except Exception:  # PIL raises what its TIFF parser meets in a damaged EXIF block
        return 1
    orientation = exif.get(0x0112, 1)
    return orientation if orientation in range(1, 9) else 1


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

    Incomplete bytes (:func:`jpeg_problem`) and libjpeg's recoverable errors ("Corrupt JPEG data", a bad
    Huffman code, a premature end), which OpenCV only prints while it patches the picture up, raise
    :class:`~evaluations.errors.SampleError` naming ``path``."""
    if not data.startswith(SOI):
        raise SampleError(f"{path}: not a JPEG file (no start-of-image marker)")
    if problem := jpeg_problem(data):
        raise SampleError(f"{path}: truncated or corrupt JPEG ({problem})")
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


def image_bytes(path: str) -> bytes:
    """The bytes of the image file at ``path``; :class:`~evaluations.errors.SampleError` when it is missing."""
    if not os.path.isfile(path):
        raise SampleError(f"{path}: image not found")
    with open(path, "rb") as f:
        return f.read()


def read_jpeg_strictly(path: str, colorspace: str = "BGR") -> np.ndarray:
    """The JPEG file at ``path`` as :func:`decode_jpeg_strictly` decodes it: uint8 ``(H, W, 3)`` BGR (or
    RGB), ``(H, W)`` for ``"GRAY"``; exactly ``cv2.imread(path)``'s pixels for a sound file. A missing,
    truncated or corrupt file raises :class:`~evaluations.errors.SampleError` naming it."""
    return decode_jpeg_strictly(image_bytes(path), path, colorspace)
