"""The official SeLo indicators (Rsu, Ras, Rda, Rmi) of Yuan et al., TGRS 2022, as pure functions.

The numbers are those of the original evaluator (``evaluations/SLM.py`` of SemanticLocalizationMetrics);
``../shared/reference/evaluator`` pins them to 1e-9. A probability map is handled as the uint8 gray map it
is stored as (``P = gray / 255``); polygons are lists of ``[x, y]`` pixel vertices (x = column, y = row).

Steps, one function each: :func:`annotation_mask` -> :func:`rsu`; :func:`attention_centres` (smoothing,
:func:`window_maximum`, :func:`region_centroids`, :func:`rank_centres`); :func:`annotation_circle` ->
:func:`ras`, :func:`rda`; :func:`rmi`. :func:`evaluate_gray` checks the input and runs them all, finding
the attention centres once (the original searched twice); its two halves, :func:`checked_rsu` and
:func:`score_of`, serve a caller that searches the centres its own way (``predict.testset.evaluate`` lets the
map go during the search when memory is short).

Bad input: :func:`evaluate_gray` raises :class:`EvaluationInputError`. :func:`compute_score` skips the
checks and, like the original, lets NaN through (with numpy's RuntimeWarning) where the original gave NaN.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce
from operator import add

import cv2
import numpy as np

from evaluations.errors import SampleError
from evaluations.jpeg import SOI, read_jpeg_strictly

INDICATORS = ("Rsu", "Ras", "Rda", "Rmi")  # the paper's column order (tables, reports, selo-compare)
ORIGINAL_ORDER = tuple(INDICATORS[k] for k in (0, 2, 1, 3))  # the original evaluator's: Rsu, Rda, Ras, Rmi
RSU_BETA = 0.707
RSU_EPS = 1e-7
SMOOTH_PASSES = 5
SMOOTH_SIZE = 50
SMOOTH_BLOCK_ROWS = 1024  # rows of a block the smoothing computes at once (it reads 125 more each side)
WINDOW_BLOCK = 128  # rows, then columns, of a block of the peak search's window maximum
PEAK_WINDOW = 1000
CENTRE_MIN_GRAY = 128  # the original keeps P >= 0.5; 127/255 < 0.5 <= 128/255
CIRCLE_EXPAND = 1.5
RAS_SCALE = 3
RDA_ETA = 0.5
RMI_WEIGHT_SU, RMI_WEIGHT_AS, RMI_WEIGHT_DA = 0.4, 0.35, 0.25


class EvaluationInputError(ValueError):
    """Bad evaluator input; ``str(error)`` is one line, ``"<name>: <problem>"``."""


@dataclass
class SeloScore:
    """The four indicators of one probability map, with what Ras and Rda were computed from.

    ``centers``: attention centres ``(x, y)`` in the original's order (P descending, ties in raster order);
    ``circles``: one annotation circle ``(cx, cy, r)`` per polygon, in pixels.
    """

    rsu: float
    ras: float
    rda: float
    rmi: float
    centers: list = field(default_factory=list)
    circles: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """``{"Rsu", "Rda", "Ras", "Rmi"}`` as floats, in the original's order."""
        return {name: getattr(self, name.lower()) for name in ORIGINAL_ORDER}


def read_probmap(path: str) -> np.ndarray:
    """Read a probability map file as uint8 gray ``(H, W)``, as the original does (``cv2.IMREAD_GRAYSCALE``);
    a JPEG strictly (:func:`~evaluations.jpeg.read_jpeg_strictly`, the same pixels): corrupt or truncated
    data are an :class:`EvaluationInputError` naming the file, not a patched-up map."""
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: probability map not found")
    with open(path, "rb") as f:
        is_jpeg = f.read(2) == SOI
    if is_jpeg:
        try:
            return read_jpeg_strictly(path, "GRAY")
        except SampleError as error:
            raise EvaluationInputError(str(error)) from None
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if gray is None or gray.size == 0:
        raise EvaluationInputError(f"{path}: cannot decode probability map (corrupt or unsupported format)")
    return gray


def annotation_mask(shape: tuple, polygons: list) -> np.ndarray:
    """Mask M of the annotation, uint8 ``(H, W)`` of 0/1.

    All polygons are filled by ONE ``cv2.fillPoly`` call on int32-truncated vertices, as the original does:
    where polygons overlap the inside of the overlap stays 0 (only outlines cross it), so M is not the union.
    """
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.array(polygon, np.int32) for polygon in polygons], 1)
    return mask


def rsu(gray: np.ndarray, mask: np.ndarray) -> float:
    """Salient-area ratio Rsu of a uint8 map ``(H, W)`` and a 0/1 mask ``(H, W)``: :func:`rsu_of_sums` of
    S_in = sum(P*M), S_all = sum(P), A = sum(M) with P = gray / 255.

    The sums are exact integer sums of the gray values divided by 255 (no float copy of the map); they equal
    the original's float64 sums to ~1e-15 relative. An empty mask gives NaN (numpy's warnings), as the original.

    >>> gray = np.zeros((4, 4), np.uint8); gray[:2, :2] = 255
    >>> mask = np.zeros((4, 4), np.uint8); mask[:2, :2] = 1
    >>> round(rsu(gray, mask), 6)  # all the probability inside the mask: L = 4 / 1e-7, Rsu = 1
    1.0
    >>> mask[:2, :2] = 0; mask[2:, 2:] = 1
    >>> rsu(gray, mask)  # none of it inside: L = 0
    0.0
    """
    x, y, w, h = cv2.boundingRect(mask)  # the mask is 0 outside this box: sum S_in over it only
    inside = mask[y:y + h, x:x + w].view(bool)
    sum_in = np.float64(np.sum(gray[y:y + h, x:x + w], where=inside, dtype=np.int64)) / 255.0
    sum_all = np.float64(np.sum(gray, dtype=np.int64)) / 255.0
    return float(rsu_of_sums(sum_in, sum_all, np.float64(np.count_nonzero(inside)), gray.size))


def rsu_of_sums(sum_in: np.float64, sum_all: np.float64, area: np.float64, n_pixels: int) -> np.float64:
    """Rsu = 1 - exp(-0.707 * L * R), L = S_in / (S_all - S_in + 1e-7), R = (n_pixels - A) / A.

    >>> float(rsu_of_sums(np.float64(2.0), np.float64(4.0), np.float64(4.0), 16))  # L = 1, R = 3
    0.8800...
    """
    left = sum_in / (sum_all - sum_in + RSU_EPS)
    right = (n_pixels - area) / area
    return 1 - np.exp(-RSU_BETA * left * right)


def usable_cores() -> int:
    """Threads for the blocks of one map: the cores this process may use. Counted as
    ``predict.core.stripes.usable_cores`` counts them, not imported from it: evaluations imports nothing
    from predict, and predict.core nothing from evaluations."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _on_threads(work, parts: int, workers: int) -> None:
    """``work(part, scratch)`` for ``part`` in ``range(parts)``, on up to ``workers`` threads, each with its own
    ``scratch`` dict for buffers it reuses from part to part (OpenCV releases the GIL)."""
    threads = max(1, min(workers, parts))

    def run(first: int) -> None:
        scratch = {}
        for part in range(first, parts, threads):
            work(part, scratch)

    if threads == 1:
        run(0)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))


def _buffer(scratch: dict, key: str, shape: tuple) -> np.ndarray:
    """A uint8 buffer of ``shape`` from ``scratch``, allocated once at the largest size asked for."""
    if key not in scratch or scratch[key].size < shape[0] * shape[1]:
        scratch[key] = np.empty(shape, np.uint8)
    return scratch[key].reshape(-1)[:shape[0] * shape[1]].reshape(shape)


def smooth_gray(gray: np.ndarray, size: int = SMOOTH_SIZE, workers: int | None = None) -> np.ndarray:
    """The original's smoothing before the peak search: five uint8 ``size`` x ``size`` box filters (50),
    uint8 ``(H, W)``.

    Computed on row blocks of ``SMOOTH_BLOCK_ROWS`` on ``workers`` threads (default: the usable cores):
    a block carries the ``5 * (size // 2)`` rows beyond it that its five passes reach, and at the map's
    top and bottom its edge is the map's, so each block's rows are bit for bit the whole map's; only the
    result is full-size.
    """
    height, width = gray.shape
    halo = SMOOTH_PASSES * (size // 2)
    smooth = np.empty_like(gray)

    def block(part: int, scratch: dict) -> None:
        top, bottom = part * SMOOTH_BLOCK_ROWS, min(height, (part + 1) * SMOOTH_BLOCK_ROWS)
        first, last = max(0, top - halo), min(height, bottom + halo)
        current, spare = (_buffer(scratch, key, (last - first, width)) for key in ("a", "b"))
        cv2.boxFilter(gray[first:last], -1, (size, size), dst=current)
        for _ in range(SMOOTH_PASSES - 1):
            cv2.boxFilter(current, -1, (size, size), dst=spare)
            current, spare = spare, current
        smooth[top:bottom] = current[top - first:bottom - first]

    _on_threads(block, -(-height // SMOOTH_BLOCK_ROWS), workers or usable_cores())
    return smooth


def _corner_kernel(offset: int, vertical: bool) -> np.ndarray:
    """A 1-D dilation kernel whose only taps are its ends: offsets 0 and ``offset`` along one axis."""
    kernel = np.zeros((offset + 1, 1) if vertical else (1, offset + 1), np.uint8)
    kernel.reshape(-1)[::offset] = 1
    return kernel


def _running_maximum(current: np.ndarray, spare: np.ndarray, size: int, vertical: bool) -> np.ndarray:
    """``current[i]`` (along one axis) becomes the maximum over ``[i, i + size)``, zeros past the end, by
    doubling (a window of 2w is the max of two of w): about log2(size) 2-tap dilations; ``spare`` is a
    buffer of the same shape. Returns the buffer holding the result."""
    width, steps = 1, []
    while 2 * width <= size:
        steps.append(width)
        width *= 2
    if width < size:
        steps.append(size - width)
    for offset in steps:
        cv2.dilate(current, _corner_kernel(offset, vertical), dst=spare, anchor=(0, 0),
                   borderType=cv2.BORDER_CONSTANT, borderValue=0)
        current, spare = spare, current
    return current


def window_maximum(image: np.ndarray, size: int, workers: int | None = None) -> np.ndarray:
    """Maximum over the ``size`` x ``size`` window of each pixel of a uint8 ``(H, W)`` image.

    Equals ``scipy.ndimage.maximum_filter(image, size)``: window offsets ``[-(size//2), size - 1 - size//2]``
    per axis, clipped to the image (scipy's 'reflect' border only repeats values already in the window).
    The maximum is separable: along rows on blocks of rows, then along columns on blocks of columns, each
    on ``workers`` threads (default: the usable cores) and by doubling (:func:`_running_maximum`); the
    blocks' buffers are small, so the only full-size array is the result.
    """
    height, width = image.shape
    before = size // 2
    out = np.empty_like(image)

    # Zeros in front make every window start inside the buffer (0 never wins a uint8 max); past the end,
    # the dilation's constant 0 border does the same.
    def rows(part: int, scratch: dict) -> None:
        top, bottom = part * WINDOW_BLOCK, min(height, (part + 1) * WINDOW_BLOCK)
        current, spare = (_buffer(scratch, key, (bottom - top, width + before)) for key in ("a", "b"))
        current[:, :before] = 0
        current[:, before:] = image[top:bottom]
        out[top:bottom] = _running_maximum(current, spare, size, vertical=False)[:, :width]

    def columns(part: int, scratch: dict) -> None:
        left, right = part * WINDOW_BLOCK, min(width, (part + 1) * WINDOW_BLOCK)
        current, spare = (_buffer(scratch, key, (height + before, right - left)) for key in ("a", "b"))
        current[:before] = 0
        current[before:] = out[:, left:right]
        out[:, left:right] = _running_maximum(current, spare, size, vertical=True)[:height]

    workers = workers or usable_cores()
    _on_threads(rows, -(-height // WINDOW_BLOCK), workers)
    _on_threads(columns, -(-width // WINDOW_BLOCK), workers)
    return out


# the peak search's two full-size buffers, per pixel of the map (measured with a 10000 x 10001 map): with the
# decoded map itself, the memory of evaluating a map
PEAK_SEARCH_BYTES_PER_PIXEL = 2


def local_maxima(gray: np.ndarray, smooth_size: int = SMOOTH_SIZE, window: int = PEAK_WINDOW) -> np.ndarray:
    """uint8 ``(H, W)``, non-zero where the smoothed map is > 0 and equals its ``window`` x ``window``
    maximum (1000; both sizes in pixels, smaller for a downscaled map)."""
    return smooth_maxima(smooth_gray(gray, smooth_size), window)


def smooth_maxima(smooth: np.ndarray, window: int = PEAK_WINDOW) -> np.ndarray:
    """:func:`local_maxima` of a map already smoothed (:func:`smooth_gray`), made in ``smooth``'s buffer."""
    peaks = window_maximum(smooth, window)
    peaks = cv2.compare(peaks, smooth, cv2.CMP_EQ, dst=peaks)  # 255 or 0
    return cv2.min(peaks, smooth, dst=smooth)  # 0 where the smoothed map is 0


def _runs(flags: np.ndarray) -> list:
    """``(start, stop)`` of each run of consecutive True values of a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))).tolist()
    return list(zip(edges[::2], edges[1::2]))


def _box_regions(binary: np.ndarray, top: int, bottom: int, left: int, right: int) -> list:
    """``((first row, first column), (cx, cy))`` of the 8-connected regions of ``binary`` inside a box that
    no region crosses, in map coordinates."""
    box = np.ascontiguousarray(binary[top:bottom, left:right])
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(box, connectivity=8, ltype=cv2.CV_32S)
    regions = []
    for label in range(1, count):
        row, col, width = (stats[label, cv2.CC_STAT_TOP], stats[label, cv2.CC_STAT_LEFT],
                           stats[label, cv2.CC_STAT_WIDTH])
        first_col = col + int(np.argmax(labels[row, col:col + width] == label))
        # centroid = integer coordinate sum / area: int() is the exact floor, as skimage's mean gives.
        cx, cy = centroids[label]
        regions.append(((top + row, left + first_col), (int(cx) + left, int(cy) + top)))
    return regions


def region_centroids(binary: np.ndarray, workers: int | None = None) -> list:
    """Int-truncated centroids ``(x, y)`` of the 8-connected non-zero regions of a uint8 ``(H, W)`` map, in
    raster order.

    Raster order (by each region's first pixel) is the label order of ``skimage.measure.label``, which the
    original's stable sort keeps among equal probabilities. No region crosses an empty row, nor a column
    empty over a band of rows: only the boxes left are labelled, on ``workers`` threads (default: the usable
    cores).
    """
    boxes = [(top, bottom, left, right) for top, bottom in _runs(binary.max(axis=1) > 0)
             for left, right in _runs(binary[top:bottom].max(axis=0) > 0)]
    boxes.sort(key=lambda box: (box[1] - box[0]) * (box[3] - box[2]), reverse=True)  # the threads' shares even
    found = [[] for _ in boxes]

    def label(part: int, scratch: dict) -> None:
        found[part] = _box_regions(binary, *boxes[part])

    _on_threads(label, len(boxes), workers or usable_cores())
    return [centre for _, centre in sorted(region for regions in found for region in regions)]


def rank_centres(points: list, values: np.ndarray, threshold=CENTRE_MIN_GRAY) -> list:
    """Attention centres: ``points`` ``(x, y)`` where ``values`` (the gray map, or the original's P) is >=
    ``threshold`` (gray 128, i.e. P >= 0.5), by value descending (stable).

    >>> gray = np.array([[200, 90, 255]], np.uint8)
    >>> rank_centres([(0, 0), (1, 0), (2, 0)], gray)
    [(2, 0), (0, 0)]
    """
    kept = [(x, y) for x, y in points if values[y, x] >= threshold]
    return sorted(kept, key=lambda p: values[p[1], p[0]], reverse=True)  # reverse keeps ties in order


def attention_centres(gray: np.ndarray) -> list:
    """The original's attention centres ``(x, y)`` of a uint8 gray map ``(H, W)``, best first."""
    return rank_centres(region_centroids(local_maxima(gray)), gray)


def annotation_circle(polygon) -> tuple:
    """Annotation circle ``(cx, cy, r)`` (ints, pixels) of one polygon ``[[x, y], ...]``.

    cx, cy = int(mean of the vertices) (truncation toward zero, repeated vertices counted);
    r = int(1.5 * mean distance of the vertices to (cx, cy)).

    >>> annotation_circle([[0, 0], [4, 0], [4, 4], [0, 4]])  # r = int(1.5 * sqrt(8))
    (2, 2, 4)
    """
    vertices = np.array(polygon)
    if vertices.ndim != 2 or vertices.shape[1:] != (2,) or len(vertices) == 0:
        raise EvaluationInputError("polygon vertices are not [x, y] pairs")
    if not np.all(np.isfinite(vertices)):
        raise EvaluationInputError("polygon has non-finite coordinates")
    # Left-to-right sums and numpy's norm per vertex, as the original, to get its exact float rounding.
    cx = int(reduce(add, vertices[:, 0]) / len(vertices))
    cy = int(reduce(add, vertices[:, 1]) / len(vertices))
    centre = np.array([cx, cy])
    radius = int(np.mean([np.linalg.norm(vertex - centre) for vertex in vertices]) * CIRCLE_EXPAND)
    return cx, cy, radius


def _distances(circle: tuple, centres: list) -> np.ndarray:
    """Distances (pixels) from the circle's centre to each attention centre: exact integers squared, one sqrt."""
    delta = np.array(centres, np.int64).reshape(-1, 2) - np.array(circle[:2], np.int64)
    return np.sqrt((delta * delta).sum(axis=1).astype(np.float64))


def ras(circles: list, centres: list) -> float:
    """Attention shift Ras in [0, 1] (lower is better) from circles ``(cx, cy, r)`` and centres ``(x, y)``.

    Offset of a circle: mean distance to the centres within distance <= r, or r if none. G = mean of
    offset / r; Ras = (exp(3G) - 1) / (exp(3) - 1). With no centre at all only the first circle counts
    (the original's quirk; Ras = 1). A zero-radius circle gives NaN when a centre lies on it (the
    original's 0.0 / 0) and raises :class:`EvaluationInputError` otherwise (its int 0 / 0).

    >>> ras([(2, 2, 4)], [(2, 2)]), ras([(2, 2, 4)], [(5, 2)]), ras([(2, 2, 4)], [])  # G = 0, 3/4, 1
    (0.0, 0.4447..., 1.0)
    """
    if not centres:
        if not circles:
            raise EvaluationInputError("no annotation polygon and no attention centre: Ras is undefined")
        circles = circles[:1]
    ratios = []
    for index, circle in enumerate(circles):
        radius = circle[2]
        near = _distances(circle, centres)
        near = near[near <= radius]
        if near.size == 0 and radius == 0:
            raise EvaluationInputError(f"polygon {index}: zero-radius annotation circle (Ras divides 0 by 0)")
        offset = np.mean(near) if near.size else np.float64(radius)
        ratios.append(offset / radius)
    granular = np.mean(ratios)
    return float((np.exp(RAS_SCALE * granular) - 1) / (np.exp(RAS_SCALE) - 1))


def rda(circles: list, centres: list) -> float:
    """Attention dispersion Rda in [0, 1] from circles ``(cx, cy, r)`` and centres ``(x, y)``.

    Per circle, n = number of centres within distance <= r: n <= 1 gives n; otherwise
    0.5 * (1 - d / r) + exp(-0.5 * (n + 2)), d = mean distance of those centres to their mean point.
    Rda = mean over circles (NaN for no circle, as the original).

    >>> rda([(0, 0, 10), (50, 50, 10)], [(0, 0), (3, 4)])  # mean of 0.5 * (1 - 2.5 / 10) + e^-2 and 0
    0.2551...
    """
    values = []
    for circle in circles:
        inside = np.array(centres, np.int64).reshape(-1, 2)[_distances(circle, centres) <= circle[2]]
        if len(inside) <= 1:
            values.append(float(len(inside)))
            continue
        mean_point = np.average(inside, axis=0)
        spread = np.mean([np.linalg.norm(mean_point - point) for point in inside]) / circle[2]
        values.append(0.5 * (1 - spread) + np.exp(-RDA_ETA * (len(inside) + 2)))
    return float(np.mean(values))


def rmi(rsu_value: float, ras_value: float, rda_value: float) -> float:
    """Mean indicator Rmi = 0.4 * Rsu + 0.35 * (1 - Ras) + 0.25 * Rda.

    >>> rmi(1.0, 0.0, 1.0), rmi(0.0, 1.0, 0.0), rmi(0.5, 0.5, 0.5)
    (1.0, 0.0, 0.5)"""
    return RMI_WEIGHT_SU * rsu_value + RMI_WEIGHT_AS * (1 - ras_value) + RMI_WEIGHT_DA * rda_value


def compute_score(gray: np.ndarray, polygons: list) -> SeloScore:
    """All four indicators of a uint8 map ``(H, W)`` WITHOUT input checks (the original's behaviour).

    Degenerate input gives NaN where the original gave NaN; use :func:`evaluate_gray` to get errors instead.
    """
    circles = [annotation_circle(polygon) for polygon in polygons]
    return score_of(circles, rsu(gray, annotation_mask(gray.shape, polygons)), attention_centres(gray))


def score_of(circles: list, rsu_value: float, centres: list) -> SeloScore:
    """The score of a map from its annotation circles, its Rsu and its attention centres: Ras, Rda, Rmi."""
    ras_value = ras(circles, centres)
    rda_value = rda(circles, centres)
    return SeloScore(rsu_value, ras_value, rda_value, rmi(rsu_value, ras_value, rda_value), centres, circles)


def check_gray(gray, name: str = "probmap") -> None:
    """Raise :class:`EvaluationInputError` ``"<name>: ..."`` unless ``gray`` is a non-empty uint8 ``(H, W)`` map
    (None, as an undecodable file reads, is not)."""
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8 or gray.size == 0:
        raise EvaluationInputError(f"{name}: expected a non-empty uint8 (H, W) gray map")


def check_polygons(polygons, shape: tuple, name: str = "probmap") -> None:
    """Raise :class:`EvaluationInputError` ``"<name>: polygon <k>: <problem>"`` for polygons that make the
    indicators undefined: not a list, no polygon, fewer than 3 ``[x, y]`` vertices, non-finite coordinates, a polygon
    entirely outside the ``(H, W)`` map (its vertices' box misses it) or a zero-radius circle."""
    if not isinstance(polygons, (list, tuple)):
        raise EvaluationInputError(f"{name}: polygons must be a list of polygons (each a list of [x, y] "
                                   f"vertices), got {type(polygons).__name__}")
    if len(polygons) == 0:
        raise EvaluationInputError(f"{name}: no annotation polygon")
    height, width = shape[:2]
    for index, polygon in enumerate(polygons):
        try:
            vertices = np.array(polygon, dtype=np.float64)
        except (TypeError, ValueError):
            raise EvaluationInputError(f"{name}: polygon {index}: vertices are not [x, y] number pairs") from None
        if vertices.ndim != 2 or vertices.shape[1] != 2:
            raise EvaluationInputError(f"{name}: polygon {index}: vertices are not [x, y] number pairs")
        if len(vertices) < 3:
            raise EvaluationInputError(f"{name}: polygon {index}: {len(vertices)} points, at least 3 needed")
        if not np.all(np.isfinite(vertices)) or np.abs(vertices).max() >= 2**31:
            raise EvaluationInputError(f"{name}: polygon {index}: non-finite or out-of-range coordinates")
        xs, ys = np.trunc(vertices[:, 0]), np.trunc(vertices[:, 1])  # the mask's int32 truncation
        if xs.max() < 0 or ys.max() < 0 or xs.min() >= width or ys.min() >= height:
            raise EvaluationInputError(f"{name}: polygon {index}: entirely outside the {height}x{width} map")
        if annotation_circle(vertices)[2] == 0:
            raise EvaluationInputError(f"{name}: polygon {index}: zero-radius annotation circle (all vertices "
                                       "within 2/3 px of their mean)")


def checked_rsu(gray: np.ndarray, polygons: list, name: str = "probmap") -> tuple[list, float]:
    """The first half of :func:`evaluate_gray`: its input checks, then the annotation circles and Rsu.

    Input that makes an indicator undefined raises :class:`EvaluationInputError` naming ``name`` (and the
    polygon index): see :func:`check_gray`, :func:`check_polygons`, and a mask that covers no pixel.
    """
    check_gray(gray, name)
    check_polygons(polygons, gray.shape, name)
    circles = [annotation_circle(polygon) for polygon in polygons]
    with np.errstate(divide="ignore", invalid="ignore"):  # the one NaN left is reported below
        rsu_value = rsu(gray, annotation_mask(gray.shape, polygons))
    if math.isnan(rsu_value):  # only an empty mask makes Rsu NaN
        raise EvaluationInputError(f"{name}: the polygons cover no pixel of the map")
    return circles, rsu_value


def evaluate_gray(gray: np.ndarray, polygons: list, name: str = "probmap") -> SeloScore:
    """Rsu, Ras, Rda, Rmi of a uint8 gray map ``(H, W)`` (as read from the probmap file) and its polygons.

    Input that makes an indicator undefined raises :class:`EvaluationInputError` naming ``name`` (and the
    polygon index): see :func:`checked_rsu`. The map is kept through the peak search; a caller short of
    memory can let it go there by composing :func:`checked_rsu`, :func:`smooth_gray`, :func:`smooth_maxima`,
    :func:`region_centroids`, :func:`rank_centres` and :func:`score_of` itself.
    """
    circles, rsu_value = checked_rsu(gray, polygons, name)
    return score_of(circles, rsu_value, attention_centres(gray))
