"""From 12/16-bit or float remote-sensing bands to 8 bits: the percentile stretch GIS viewers show.

The original read every image with ``cv2.imread`` as 8 bits. Deeper data mapped by their container's
full range (65535 for uint16) come out near-black for 12-bit sensors, so such bands are stretched
linearly between their ``low`` and ``high`` percentiles (2 % and 98 % by default) over the valid pixels
only: either with one range for all bands together, which keeps the scene's colour balance (the
encoders were trained on colours, and a per-band stretch turns a dark green lake grey), or per band.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_LIMIT = 1 << 22  # float bands: percentiles from at most ~4M evenly strided pixels


def band_percentiles(band: np.ndarray, low: float, high: float, valid: np.ndarray | None = None) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles (0-100) of the valid, finite values of one band ``(H, W)``, or of
    all bands ``(H, W, C)`` together (``valid``: bool ``(H, W)``).

    Integer bands of up to 16 bits are counted exactly (a histogram); float bands are sampled.

    >>> band_percentiles(np.arange(101, dtype=np.uint16).reshape(1, -1), 2, 98)
    (2.0, 98.0)
    """
    values = band if valid is None else band[valid]
    if counted_exactly(values.dtype):
        return histogram_percentiles(level_counts(values), values.dtype, low, high)
    values = values.ravel()
    if values.size > SAMPLE_LIMIT:
        values = values[:: values.size // SAMPLE_LIMIT + 1]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def counted_exactly(dtype: np.dtype) -> bool:
    """Whether values of ``dtype`` are counted level by level (integers of up to 16 bits)."""
    return np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize <= 2


def level_counts(values: np.ndarray) -> np.ndarray:
    """int64 ``(levels,)`` count of each level of integer ``values`` of up to 16 bits (any shape), from the
    type's minimum: histograms of parts of a scene add up to the whole scene's.

    >>> level_counts(np.array([0, 2, 2], np.uint8))[:4].tolist()
    [1, 0, 2, 0]
    """
    info = np.iinfo(values.dtype)
    return np.bincount((values.astype(np.int64) - int(info.min)).ravel(), minlength=int(info.max) - int(info.min) + 1)


def histogram_percentiles(counts: np.ndarray, dtype: np.dtype, low: float, high: float) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles (0-100) of the values counted in ``counts`` (:func:`level_counts`
    of values of ``dtype``); (0, 0) when none was counted.

    >>> histogram_percentiles(level_counts(np.arange(101, dtype=np.uint8)), np.uint8, 2, 98)
    (2.0, 98.0)
    """
    if counts.sum() == 0:
        return 0.0, 0.0
    offset = int(np.iinfo(dtype).min)
    cumulative = np.cumsum(counts) / counts.sum()
    lo = int(np.searchsorted(cumulative, low / 100.0, side="left")) + offset
    hi = int(np.searchsorted(cumulative, high / 100.0, side="left")) + offset
    return float(lo), float(hi)


def linear_to_uint8(band: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """uint8 of one band ``(H, W)`` mapped linearly from ``lo`` (0) to ``hi`` (255), clipped; when ``lo == hi``
    0 below that value and 255 from it on; non-finite values become 0.

    >>> linear_to_uint8(np.array([[0, 1000, 4095]], np.uint16), 0, 4095).tolist()
    [[0, 62, 255]]
    """
    scale = 255.0 / (hi - lo) if hi > lo else np.inf
    if np.issubdtype(band.dtype, np.integer) and band.dtype.itemsize <= 2:  # a lookup table over every level
        info = np.iinfo(band.dtype)
        levels = np.arange(int(info.min), int(info.max) + 1, dtype=np.float64)
        lut = np.clip(np.nan_to_num((levels - lo) * scale, nan=255.0, posinf=255.0, neginf=0.0), 0, 255)
        return lut.astype(np.uint8)[band.astype(np.int64) - int(info.min)]
    values = np.nan_to_num(band.astype(np.float64), nan=lo, posinf=lo, neginf=lo)
    scaled = (values - lo) * scale if np.isfinite(scale) else np.where(values >= lo, 255.0, 0.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def percentile_stretch(bands: np.ndarray, low: float = 2.0, high: float = 98.0,
                       valid: np.ndarray | None = None, per_band: bool = True) -> np.ndarray:
    """Stretch ``bands`` ``(H, W)`` or ``(H, W, C)`` linearly so that the ``low`` percentile maps to 0 and the
    ``high`` percentile to 255; uint8 of the same shape.

    Args:
        bands: any integer or float type; non-finite values become 0.
        low, high: percentiles in 0..100, ``low < high``.
        valid: bool ``(H, W)``, the pixels the percentiles are taken over (e.g. not nodata); all when None.
        per_band: percentiles of each band apart (True), or of all bands' values together, one range for
            all, which keeps the colour balance (False).

    A band whose two percentiles are equal maps to 0 below that value and 255 from it on.

    >>> ramp = (np.arange(16, dtype=np.uint16) * 273).reshape(4, 4)  # 0..4095: 12-bit data
    >>> percentile_stretch(ramp, 0, 100)[3].tolist()
    [204, 221, 238, 255]
    >>> dim_blue = np.stack([ramp, ramp // 2], axis=-1)  # the second band half the first everywhere
    >>> [percentile_stretch(dim_blue, 0, 100, per_band=p)[3, 3].tolist() for p in (True, False)]
    [[255, 255], [255, 127]]
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    squeeze = bands.ndim == 2
    bands = bands[:, :, None] if squeeze else bands
    joint = None if per_band else band_percentiles(bands, low, high, valid)
    ranges = [joint or band_percentiles(bands[:, :, k], low, high, valid) for k in range(bands.shape[2])]
    out = stretched(bands, ranges)
    return out[:, :, 0] if squeeze else out


def stretched(bands: np.ndarray, ranges: list[tuple[float, float]]) -> np.ndarray:
    """uint8 ``(H, W, C)`` of ``bands`` ``(H, W, C)``, band ``k`` mapped linearly from ``ranges[k]``
    (:func:`linear_to_uint8`): pixel by pixel, so any window of a scene gives that window of the whole."""
    out = np.empty(bands.shape, np.uint8)
    for k, (lo, hi) in enumerate(ranges):
        out[:, :, k] = linear_to_uint8(bands[:, :, k], lo, hi)
    return out


def ranges_of_counts(counts: np.ndarray, dtype: np.dtype, low: float, high: float,
                     per_band: bool) -> list[tuple[float, float]]:
    """The stretch range of each band from the level counts ``counts`` ``(C, levels)`` of its valid values
    (:func:`level_counts`): of each band apart, or one range of all bands together."""
    if per_band:
        return [histogram_percentiles(band_counts, dtype, low, high) for band_counts in counts]
    return [histogram_percentiles(counts.sum(axis=0), dtype, low, high)] * len(counts)


@dataclass(frozen=True)
class Stretch:
    """How :func:`percentile_stretch` brings data deeper than 8 bits to 8 bits: between the ``low`` and
    ``high`` percentiles (0-100) of the valid pixels of all bands together (one range: colours kept), or
    of each band apart with ``per_band``.

    >>> Stretch(), Stretch.parse("1,99,per-band")
    (Stretch(low=2.0, high=98.0, per_band=False), Stretch(low=1.0, high=99.0, per_band=True))
    """

    low: float = 2.0
    high: float = 98.0
    per_band: bool = False

    def __post_init__(self):
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low:g}, {self.high:g}")

    @classmethod
    def parse(cls, text: str) -> Stretch:
        """``"LOW,HIGH"`` or ``"LOW,HIGH,per-band"``; a ValueError saying what is expected otherwise."""
        parts = [p.strip() for p in text.split(",")]
        per_band = len(parts) == 3 and parts[2].lower() in ("per-band", "per_band")
        if len(parts) - per_band != 2:
            raise ValueError(f"expected LOW,HIGH percentiles (e.g. 2,98), optionally ,per-band, got {text!r}")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"expected LOW,HIGH percentiles (e.g. 2,98), optionally ,per-band, got {text!r}") from None
        return cls(low, high, per_band)

    def __call__(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """uint8 of ``bands`` ``(H, W, C)`` stretched this way (see :func:`percentile_stretch`)."""
        return percentile_stretch(bands, self.low, self.high, valid, self.per_band)
