"""JPEG encoding as the original's ``cv2.imwrite`` (quality 95): an image whole, or in stripes of rows, each
encoded on its own (on any thread) and joined into one file.

A baseline JPEG with a restart interval of exactly one stripe's MCUs restarts its entropy coding (and its DC
predictions) at every stripe boundary, so a stripe whose top is on an MCU row can be encoded alone: the
stripes' entropy-coded segments, joined with restart markers under the first stripe's header (its height
made the whole image's), are byte for byte what libjpeg writes for the whole image with that restart
interval. The quantised coefficients do not depend on the interval, so the file decodes to the same pixels
as ``cv2.imencode`` of the whole image without one. A run thus never holds a full-size colour image to
write one, and encodes a large image on several cores.

>>> rng = np.random.default_rng(0)
>>> image = rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)
>>> interval = restart_interval(32, 50, 3)
>>> parts = [encode_jpeg(image[top:top + 32], interval=interval) for top in range(0, 70, 32)]
>>> import io
>>> joiner = StripeJoiner(io.BytesIO(), 70)
>>> for part in parts:
...     joiner.add(part)
>>> joiner.close()
>>> joined = joiner.file.getvalue()
>>> joined == cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_RST_INTERVAL, interval])[1].tobytes()
True
>>> decode = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
>>> np.array_equal(decode(joined), decode(cv2.imencode(".jpg", image)[1]))
True
"""
from __future__ import annotations

import math
import struct
from contextlib import suppress
from typing import BinaryIO

import cv2
import numpy as np

from evaluations.jpeg import EOI, SOS, jpeg_markers

MAX_RESTART_INTERVAL = 65535  # MCUs: the DRI marker's 16 bits
SOF_BASELINE, RST0 = 0xC0, 0xD0
EOI_BYTES = bytes((0xFF, EOI))


def mcu_size(channels: int) -> int:
    """Side of OpenCV's JPEG MCU in pixels: 8 for gray, 16 for colour (4:2:0 chroma subsampling)."""
    return 8 if channels == 1 else 16


def restart_interval(rows: int, width: int, channels: int) -> int:
    """MCUs in a stripe of ``rows`` (a multiple of the MCU side) by ``width`` pixels: its restart interval.

    >>> restart_interval(32, 50, 3)  # 2 MCU rows of ceil(50 / 16) = 4 MCUs
    8
    """
    mcu = mcu_size(channels)
    return rows // mcu * -(-width // mcu)


def stripe_rows(height: int, width: int, channels: int, stripe_bytes: int, multiple: int = 1) -> int:
    """Rows per stripe for an ``(height, width, channels)`` image: about ``stripe_bytes`` of pixels, a
    multiple of the MCU side and of ``multiple``, within the largest restart interval; ``height`` (one
    stripe, encoded as a whole) where no smaller stripe fits those rules.

    >>> stripe_rows(10000, 10000, 3, 8 << 20, multiple=13)
    208
    >>> stripe_rows(100, 100, 3, 8 << 20)  # one stripe
    100
    """
    step = math.lcm(mcu_size(channels), multiple)
    largest = MAX_RESTART_INTERVAL // restart_interval(step, width, channels) * step if width else 0
    rows = min(max(step, stripe_bytes // max(width * channels, 1) // step * step), largest)
    return rows if 0 < rows < height else height


def encode_jpeg(image: np.ndarray, path: str = "image", interval: int = 0) -> np.ndarray:
    """JPEG bytes of a uint8 gray or BGR image at OpenCV's quality 95 (the original's ``cv2.imwrite``), with
    a restart marker every ``interval`` MCUs (0: none); a failure raises ``OSError`` naming ``path``."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_RST_INTERVAL, interval])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    return data


def _scan_start(data: bytes | memoryview) -> tuple[int, int]:
    """Offsets in a baseline JPEG of its entropy-coded data (after the SOS segment) and of the frame
    header's height field."""
    height_at = None
    with suppress(ValueError):  # broken header segments: not a stripe
        for marker, start, end in jpeg_markers(data):
            if marker == SOF_BASELINE:
                height_at = start + 5
            if marker == SOS:
                if height_at is not None:
                    return end, height_at
                break
    raise ValueError("not a baseline JPEG with a frame and a scan header")


class StripeJoiner:
    """Writes one JPEG of ``height`` rows to ``file`` from the JPEGs of its stripes, given top to bottom by
    :meth:`add`, each encoded by :func:`encode_jpeg` with the restart interval of one stripe (a single
    stripe, encoded without one, is written as it is); :meth:`close` ends the file."""

    def __init__(self, file: BinaryIO, height: int):
        self.file, self.height, self.stripes = file, height, 0

    def add(self, part: bytes | np.ndarray) -> None:
        data = memoryview(part).cast("B")
        scan, height_at = _scan_start(data)
        if data[-2:] != EOI_BYTES:
            raise ValueError(f"JPEG stripe {self.stripes} does not end with an EOI marker")
        if self.stripes == 0:
            header = bytearray(data[:scan])
            struct.pack_into(">H", header, height_at, self.height)
            self.file.write(header)
        else:
            self.file.write(bytes((0xFF, RST0 + (self.stripes - 1) % 8)))
        self.file.write(data[scan:-2])
        self.stripes += 1

    def close(self) -> None:
        self.file.write(EOI_BYTES)
