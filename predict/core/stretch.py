"""From 12/16-bit or float remote-sensing bands to 8 bits: the percentile stretch GIS viewers show.

The original read every image with ``cv2.imread`` as 8 bits. Deeper data mapped by their container's
full range (65535 for uint16) come out near-black for 12-bit sensors, so such bands are stretched
linearly between their ``low`` and ``high`` percentiles (2 % and 98 % by default), per band, over the
valid pixels only.
"""
from __future__ import annotations

import numpy as np

SAMPLE_LIMIT = 1 << 22  # float bands: percentiles from at most ~4M evenly strided pixels


def band_percentiles(band: np.ndarray, low: float, high: float, valid: np.ndarray | None = None) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles (0-100) of one band's valid, finite values.

    Integer bands of up to 16 bits are counted exactly (a histogram); float bands are sampled.

    >>> band_percentiles(np.arange(101, dtype=np.uint16).reshape(1, -1), 2, 98)
    (2.0, 98.0)
    """
    values = band if valid is None else band[valid]
    if np.issubdtype(values.dtype, np.integer) and values.dtype.itemsize <= 2:
        offset = int(np.iinfo(values.dtype).min)
        counts = np.bincount((values.astype(np.int64) - offset).ravel())
        if counts.sum() == 0:
            return 0.0, 0.0
        cumulative = np.cumsum(counts) / counts.sum()
        lo = int(np.searchsorted(cumulative, low / 100.0, side="left")) + offset
        hi = int(np.searchsorted(cumulative, high / 100.0, side="left")) + offset
        return float(lo), float(hi)
    values = values.ravel()
    if values.size > SAMPLE_LIMIT:
        values = values[:: values.size // SAMPLE_LIMIT + 1]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def percentile_stretch(bands: np.ndarray, low: float = 2.0, high: float = 98.0,
                       valid: np.ndarray | None = None) -> np.ndarray:
    """Stretch each band of ``bands`` ``(H, W)`` or ``(H, W, C)`` linearly so that its ``low`` percentile maps
    to 0 and its ``high`` percentile to 255; uint8 of the same shape.

    Args:
        bands: any integer or float type; non-finite values become 0.
        low, high: percentiles in 0..100, ``low < high``.
        valid: bool ``(H, W)``, the pixels the percentiles are taken over (e.g. not nodata); all when None.

    A band whose two percentiles are equal maps to 0 below that value and 255 from it on.

    >>> ramp = (np.arange(16, dtype=np.uint16) * 273).reshape(4, 4)  # 0..4095: 12-bit data
    >>> percentile_stretch(ramp, 0, 100)[3].tolist()
    [204, 221, 238, 255]
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    squeeze = bands.ndim == 2
    bands = bands[:, :, None] if squeeze else bands
    out = np.empty(bands.shape, np.uint8)
    for k in range(bands.shape[2]):
        band = bands[:, :, k]
        lo, hi = band_percentiles(band, low, high, valid)
        scale = 255.0 / (hi - lo) if hi > lo else np.inf
        if np.issubdtype(band.dtype, np.integer) and band.dtype.itemsize <= 2:
            info = np.iinfo(band.dtype)
            levels = np.arange(int(info.min), int(info.max) + 1, dtype=np.float64)
            lut = np.clip(np.nan_to_num((levels - lo) * scale, nan=255.0, posinf=255.0, neginf=0.0), 0, 255)
            out[:, :, k] = lut.astype(np.uint8)[band.astype(np.int64) - int(info.min)]
        else:
            values = np.nan_to_num(band.astype(np.float64), nan=lo, posinf=lo, neginf=lo)
            scaled = (values - lo) * scale if np.isfinite(scale) else np.where(values >= lo, 255.0, 0.0)
            out[:, :, k] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out
