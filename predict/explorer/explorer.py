"""The explorer's state behind ``selo-serve`` (:mod:`predict.cli.serve`): the images of one folder, their tile
vectors (encoded once, kept on disk), one job queue for the encoder, and SeLo maps of typed queries at screen
resolution.

    >>> from predict import load_encoder
    >>> encoder = load_encoder("demo", device="cpu")  # the demo preset  # doctest: +SKIP
    >>> explorer = Explorer(encoder, ExplorerConfig(images_dir="scenes"))  # doctest: +SKIP
    >>> explorer.localise("scene.jpg", "a red track around a green football field")  # doctest: +SKIP

A request whose first-stage tiles are all encoded is answered at once (:class:`Result`): it runs on one of
``query_workers`` threads beside any encoding, so a cached query never waits behind an encode. A request
that needs tiles encoded becomes a :class:`Job` in one queue for the encoder, served first in, first out per
client and the clients in turn; it answers its position and progress until done, and can be cancelled.
Asking again for the same request (any client) finds the same job, then its result.

Results are keyed by content (:func:`~predict.provenance.digest_of` of the image's content key, the
encoder's vector key, the query, the pipeline, the seed, the preview side and the code) and kept on disk,
so a result shown in a page's history can still be downloaded later. The content key is that of the pixels
the map was computed from, taken when they were decoded: a job whose image was replaced while it waited
files its map under the new content's id, never under the id it was asked with. A download whose image has
changed since is refused (409), never computed on the new file under the old id. Names of images are the
file names as :meth:`Explorer.image_names` lists them; a path or a name not listed is a :class:`RequestError`.

Every file kept in the outputs folder (result records, maps, thumbnails, downloads) is a stored file of
:mod:`predict.provenance`, written with the digest of its bytes and the key that made it (a result's id, an
image's key and side), and used or served only once verified; one that fails is logged in one line naming
it and the reason, then made again.

The page shows :func:`~predict.core.preview.preview_map` (the cell map on a grid scaled to the screen, the
filter scaled with it) and its peaks (:func:`preview_peaks`) scaled back to full-resolution pixels: an
approximation. The downloads are exact: :func:`~predict.scenes.run.raster_probmap` at full resolution, as
``selo-localise`` writes it.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from evaluations.metrics import PEAK_WINDOW, SMOOTH_SIZE, local_maxima, rank_centres, region_centroids
from predict.core.cell_median import load_kernel
from predict.core.heatmap import colour_heatmap, scene_score
from predict.core.pipelines import PIPELINES, PipelineSpec, get_pipeline
from predict.core.preview import preview_map, preview_scale
from predict.encoders.base import EncoderSpecModel
from predict.io.jpeg import encode_jpeg
from predict.io.raster import (
    RasterImage,
    dataset_files,
    peaks_feature_collection,
    pixel_coordinates,
    read_raster,
    write_probmap_tif,
)
from predict.localisation import LoadedImage, StageTimer, TileVectorStore, mostly_valid, score_tiles, tile_cells
from predict.provenance import (
    StoredFileError,
    code_digest,
    dataset_digest,
    digest_of,
    read_stored,
    record_path,
    seal_file,
    stored_problem,
    vectors_key,
    write_stored,
)
from predict.scenes import raster_probmap

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
STEP_RANGE = (64, 4096)  # pixels: smaller steps would ask the encoder for tens of thousands of tiles
MAX_STEPS = 6
STEPS_TEXT = re.compile(r"[0-9]+(?:_[0-9]+)*")  # ASCII digits only: no "256.7", no other scripts' digits
PREVIEW_SIDE_RANGE = (64, 8192)  # pixels
DOWNLOADS = {"probmap": "_probmap.tif", "peaks": "_peaks.geojson"}
ENCODE_CHUNK = 512  # tiles encoded between two saves of the vectors (a cancel loses at most this much)
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # the map PNG is written per query: speed over size
JET_PALETTE = colour_heatmap(np.arange(256, dtype=np.uint8)[None])[0, :, ::-1].reshape(-1).tolist()  # RGB of 0-255
RESULT_ID = re.compile(r"[0-9a-f]{32}")

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the explorer refuses: HTTP ``status`` and one line naming the parameter and the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """Raised inside a job's encoding when the job was cancelled."""


@dataclass
class ExplorerConfig:
    """What the explorer serves and where it keeps its state.

    Attributes:
        images_dir: the folder whose images (directly in it) are served; it must exist.
        cache_dir: tile vectors (``.npz``, shared with ``selo-localise``); default
            ``<images_dir>/.selo/tile_vectors``.
        outputs_dir: preview maps, result records, thumbnails and downloads; default
            ``<images_dir>/.selo/outputs``.
        preview_side: longer side of the page's map, pixels.
        seed: seed of v2's word shuffles.
        max_query: longest query accepted, characters.
        max_tiles: most first-stage tiles one request may ask for (a bound on one request's encoding).
        query_workers: threads answering queries whose tiles are encoded (one per core).
    """

    images_dir: str
    cache_dir: str | None = None
    outputs_dir: str | None = None
    preview_side: int = 1024
    seed: int = 0
    max_query: int = 300
    max_tiles: int = 20000
    query_workers: int = 2

    def __post_init__(self):
        if not os.path.isdir(self.images_dir):
            raise ValueError(f"--images {self.images_dir}: no such folder")
        low, high = PREVIEW_SIDE_RANGE
        if not low <= self.preview_side <= high:
            raise ValueError(f"--preview_side {self.preview_side}: expected {low} to {high} pixels")
        if self.max_tiles < 1 or self.query_workers < 1:
            raise ValueError(f"max_tiles {self.max_tiles} and query_workers {self.query_workers} must be >= 1")
        self.images_dir = os.path.abspath(self.images_dir)
        self.cache_dir = os.path.abspath(self.cache_dir or os.path.join(self.images_dir, ".selo", "tile_vectors"))
        self.outputs_dir = os.path.abspath(self.outputs_dir or os.path.join(self.images_dir, ".selo", "outputs"))


def parse_steps(steps) -> list[int] | None:
    """Tile sides from ``"256_512"`` (ASCII digits joined by ``_``) or a list of integers; None when not given.
    Anything else (floats, booleans, other scripts' digits, ``"256__512"``) is a :class:`RequestError`.

    >>> parse_steps("256_512"), parse_steps([512]), parse_steps(None)
    ([256, 512], [512], None)
    >>> parse_steps("256.7")
    Traceback (most recent call last):
    predict.explorer.explorer.RequestError: steps '256.7': expected tile sides in pixels joined by '_' (e.g. 256_512)
    """
    if steps is None or steps == "" or steps == []:
        return None
    if isinstance(steps, str) and STEPS_TEXT.fullmatch(steps):
        return [int(s) for s in steps.split("_")]
    if isinstance(steps, list) and steps and all(type(s) is int for s in steps):
        return steps
    raise RequestError(422, f"steps {steps!r}: expected tile sides in pixels joined by '_' (e.g. 256_512)")


def safe_stem(text: str, limit: int = 40) -> str:
    """``text`` as a file-name part: letters, digits, ``-`` and ``.`` kept, runs of anything else as ``_``.

    >>> safe_stem("scene 1.jpg"), safe_stem("a green field / two courts")
    ('scene_1.jpg', 'a_green_field_two_courts')
    """
    return re.sub(r"[^\w.-]+", "_", text, flags=re.ASCII).strip("_.")[:limit] or "x"


def lonlat_affine(raster: RasterImage, height: int, width: int) -> dict | None:
    """For a georeferenced image: pixel ``(x, y)`` -> lon/lat as an affine fit through three corners,
    ``{"lon": [c, a, b], "lat": [c, a, b]}`` meaning ``lon = c + a x + b y``, and the ground size of a pixel
    ``metres_per_pixel`` (along the top edge); None when the image is not georeferenced."""
    if raster.crs is None:
        return None
    (lon0, lat0), (lon1, lat1), (lon2, lat2) = pixel_coordinates(raster, [0, width - 1, 0], [0, 0, height - 1])
    across, down = max(1, width - 1), max(1, height - 1)
    metres = 6371008.8 * math.radians(math.hypot((lon1 - lon0) * math.cos(math.radians(lat0)), lat1 - lat0)) / across
    return {"lon": [lon0 - 0.5 * ((lon1 - lon0) / across + (lon2 - lon0) / down), (lon1 - lon0) / across,
                    (lon2 - lon0) / down],
            "lat": [lat0 - 0.5 * ((lat1 - lat0) / across + (lat2 - lat0) / down), (lat1 - lat0) / across,
                    (lat2 - lat0) / down],
            "metres_per_pixel": metres}


def region_outlines(preview: np.ndarray, threshold: float, scale: float) -> list[list[list[int]]]:
    """Outer rings of the parts of a preview map at or above ``threshold`` (0-1), in full-resolution pixels
    ``[[x, y], ...]`` (``scale``: preview size / full size), largest first.

    >>> gray = np.zeros((10, 10), np.uint8); gray[2:5, 3:7] = 200
    >>> region_outlines(gray, 0.5, 0.5)
    [[[6, 4], [6, 8], [12, 8], [12, 4]]]
    """
    above = (preview >= round(255 * threshold)).astype(np.uint8)
    contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    return [[[round(int(x) / scale), round(int(y) / scale)] for x, y in contour[:, 0]] for contour in contours]


def preview_peaks(preview: np.ndarray, scale: float) -> list[tuple[int, int, int]]:
    """The attention centres of a preview map as ``(x, y, gray)`` in full-resolution pixels, best first.

    The original's peak search (five 50 px box filters, a 1000 px window, gray >= 128) with both sizes scaled
    by ``scale``; the exact centres are :func:`~evaluations.metrics.attention_centres` of the full map.

    >>> gray = np.zeros((100, 100), np.uint8); gray[40:60, 20:30] = 200
    >>> preview_peaks(gray, 0.1)
    [(240, 490, 200)]
    """
    maxima = local_maxima(preview, max(1, round(SMOOTH_SIZE * scale)), max(1, round(PEAK_WINDOW * scale)))
    centres = rank_centres(region_centroids(maxima), preview)
    return [(int(x / scale), int(y / scale), int(preview[y, x])) for x, y in centres]


def map_png(gray: np.ndarray) -> bytes:
    """PNG bytes of a uint8 map in :func:`~predict.core.heatmap.colour_heatmap`'s colours, as a palette image:
    the same pixels as the colour PNG, written about three times faster (it is written for every query).

    >>> gray = np.array([[0, 128, 255]], np.uint8)
    >>> decoded = cv2.imdecode(np.frombuffer(map_png(gray), np.uint8), cv2.IMREAD_COLOR)
    >>> bool((decoded == colour_heatmap(gray)).all())
    True
    """
    image = Image.frombytes("P", gray.shape[::-1], np.ascontiguousarray(gray).tobytes())
    image.putpalette(JET_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def made(path: str) -> bool:
    """Whether a stored file or its record lies at ``path``: one never made is simply made, without a line
    in the log."""
    return os.path.lexists(path) or os.path.lexists(record_path(path))


def kept(path: str, key: str) -> bool:
    """Whether the stored file at ``path`` is whole and made by ``key`` (verified: :func:`stored_problem`),
    so that it may be used or served as it is. One that lies there but fails is logged in one line naming
    it and the reason, and the caller makes it again.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "a.png")
    ...     before = kept(path, "k1")
    ...     _ = write_stored(path, b"png", "k1")
    ...     before, kept(path, "k1")
    (False, True)
    """
    if not made(path):
        return False
    problem = stored_problem(path, key)
    if problem is not None:
        logger.warning("%s: %s; made again", path, problem)
    return problem is None


@dataclass(frozen=True)
class Request:
    """What was asked: a map of ``query`` on ``image`` with ``spec`` (``query`` None: only its tiles encoded)."""

    image: str
    query: str | None
    spec: PipelineSpec


@dataclass(frozen=True)
class ImageState:
    """An image as last read: its ``digest`` (file and sidecars: :func:`~predict.provenance.dataset_digest`),
    content ``key`` (the vector store's), size, georeference
    (:func:`lonlat_affine`) and whether some of its pixels are nodata."""

    digest: str
    key: str
    height: int
    width: int
    geo: dict | None
    has_nodata: bool


@dataclass
class Result:
    """A finished request: the map of ``query`` on ``image`` (or, with ``query`` None, its tiles encoded)."""

    id: str
    image: str
    query: str | None
    spec: PipelineSpec
    height: int
    width: int
    image_key: str
    tiles_encoded: int
    seconds: float
    geo: dict | None = None
    tiles: list = field(default_factory=list)
    scores: np.ndarray | None = None
    preview: np.ndarray | None = None  # uint8 (h, w): the page's map, for its region outlines
    peaks: list = field(default_factory=list)  # (x, y, gray) in full-resolution pixels, best first
    peaks_lonlat: list | None = None  # [lon, lat] of each peak when the image is georeferenced
    scene_score: float | None = None
    unknown_words: list = field(default_factory=list)

    def download_name(self, kind: str) -> str:
        """The name a download is saved under: image, query and kind, e.g. ``scene_two_courts_probmap.tif``."""
        stem = safe_stem(os.path.splitext(self.image)[0])
        return f"{stem}_{safe_stem(self.query or 'tiles')}{DOWNLOADS[kind]}"

    def as_dict(self) -> dict:
        answer = {"status": "done", "image": self.image, "height": self.height, "width": self.width,
                  "pipeline": self.spec.name, "steps": list(self.spec.steps), "tiles_encoded": self.tiles_encoded,
                  "seconds": round(self.seconds, 4), "geo": self.geo}
        if self.query is None:
            return answer
        return {**answer, "query": self.query, "result": self.id, "map_url": f"/outputs/{self.id}.png",
                "scene_score": self.scene_score, "unknown_words": self.unknown_words,
                "peaks": [{"rank": i + 1, "x": x, "y": y, "probability": round(gray / 255, 4),
                           **({"lon": self.peaks_lonlat[i][0], "lat": self.peaks_lonlat[i][1]}
                              if self.peaks_lonlat else {})}
                          for i, (x, y, gray) in enumerate(self.peaks)],
                "downloads": {kind: {"url": f"/api/download?result={self.id}&kind={kind}",
                                     "filename": self.download_name(kind)} for kind in DOWNLOADS}}

    def save(self, folder: str) -> None:
        """Write the record (``<id>.npz`` arrays, then ``<id>.json``, the commit point) for :meth:`load`: two
        stored files made by the result's id, the json naming the image content the map was computed from."""
        arrays = {"tiles": np.asarray(self.tiles, np.int64).reshape(-1, 4), "scores": np.asarray(self.scores),
                  "preview": self.preview}
        path = os.path.join(folder, self.id)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_stored(path + ".npz", buffer.getvalue(), self.id)
        meta = {"image": self.image, "query": self.query, "pipeline": self.spec.name, "steps": list(self.spec.steps),
                "height": self.height, "width": self.width, "image_key": self.image_key, "seconds": self.seconds,
                "tiles_encoded": self.tiles_encoded, "geo": self.geo, "peaks": self.peaks,
                "peaks_lonlat": self.peaks_lonlat, "scene_score": self.scene_score, "unknown_words": self.unknown_words}
        write_stored(path + ".json", json.dumps(meta).encode(), self.id)

    @classmethod
    def load(cls, folder: str, result_id: str) -> Result:
        """The record :meth:`save` wrote, both files verified (:func:`~predict.provenance.read_stored`);
        :class:`~predict.provenance.StoredFileError` when one is missing, changed, made by another id or
        not a record."""
        path = os.path.join(folder, result_id)
        text, packed = read_stored(path + ".json", result_id), read_stored(path + ".npz", result_id)
        try:
            meta = json.loads(text)
            with np.load(io.BytesIO(packed)) as arrays:
                tiles, scores, preview = arrays["tiles"], arrays["scores"], arrays["preview"]
            return cls(result_id, meta["image"], meta["query"], get_pipeline(meta["pipeline"], meta["steps"]),
                       meta["height"], meta["width"], meta["image_key"], meta["tiles_encoded"], meta["seconds"],
                       meta["geo"], [tuple(int(v) for v in t) for t in tiles], scores, preview,
                       [tuple(p) for p in meta["peaks"]], meta["peaks_lonlat"], meta["scene_score"],
                       meta["unknown_words"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StoredFileError(path + ".json", f"not a result record ({type(error).__name__}: {error})") from None


@dataclass
class Job:
    """A request waiting for the encoder or being encoded; ``clients`` are those waiting for it.
    ``result_id`` is the id its request had when asked, by which it is found again; its result is filed
    under the id of the pixels it ran on, another one when the image was replaced while it waited."""

    id: str
    request: Request
    result_id: str
    clients: list
    state: str = "queued"  # queued, encoding, done, failed, cancelled
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.perf_counter)
    unknown_words: list = field(default_factory=list)
    answered: bool = False  # its outcome was the answer to a request asked again
    result: Result | None = None
    error: RequestError | None = None
    cancel_asked: threading.Event = field(default_factory=threading.Event)

    def as_dict(self, position: int) -> dict:
        """The JSON answer while the job is pending: its state, ``position`` in the queue (0: running)."""
        image, query = self.request.image, self.request.query
        if self.state == "queued":
            message = f"queued for {image}: position {position} (waiting for the encoder)"
        else:
            message = f"encoding {image}: {self.done}/{self.total} tiles"
        return {"status": self.state, "job": self.id, "image": image, "query": query, "position": position,
                "done": self.done, "total": self.total, "message": message,
                **({"detail": str(self.error)} if self.error else {})}


class FairQueue:
    """Jobs waiting for the encoder: first in, first out per client, the clients served in turn.

    >>> q = FairQueue(); _ = [q.put(job, client) for job, client in [("a1", "a"), ("a2", "a"), ("b1", "b")]]
    >>> q.order(), q.take(), q.order()
    (['a1', 'b1', 'a2'], 'a1', ['b1', 'a2'])
    """

    def __init__(self):
        self._waiting: OrderedDict[str, deque] = OrderedDict()  # client -> its jobs, clients in serving order
        self._ready = threading.Condition()

    def put(self, job, client: str) -> None:
        with self._ready:
            self._waiting.setdefault(client, deque()).append(job)
            self._ready.notify()

    def remove(self, job) -> bool:
        """Take ``job`` out of the queue; False when it was not waiting."""
        with self._ready:
            for client, jobs in list(self._waiting.items()):
                if job in jobs:
                    jobs.remove(job)
                    if not jobs:
                        del self._waiting[client]
                    return True
        return False

    def take(self):
        """The next job (blocks while none waits); its client goes to the back of the turn."""
        with self._ready:
            while not self._waiting:
                self._ready.wait()
            client, jobs = next(iter(self._waiting.items()))
            job = jobs.popleft()
            del self._waiting[client]
            if jobs:
                self._waiting[client] = jobs
            return job

    def order(self) -> list:
        """Every waiting job in the order it will run."""
        with self._ready:
            queues = [list(jobs) for jobs in self._waiting.values()]
        depth = max(map(len, queues), default=0)
        return [jobs[turn] for turn in range(depth) for jobs in queues if turn < len(jobs)]


class SharedStore:
    """One image's :class:`TileVectorStore` used by several threads: cached vectors are read at once; encoding
    (which changes the store and writes its file) runs one thread at a time. The store stays on its image:
    its ``use_image`` is only ever called with that image's key."""

    def __init__(self, store: TileVectorStore):
        self.store = store
        self.encoding = threading.Lock()

    def missing(self, tiles: Sequence) -> list:
        """The tiles of ``tiles`` without a vector yet, each once, in order."""
        return [t for t in dict.fromkeys(tiles) if t not in self.store.vectors_by_tile]

    def __getattr__(self, name):  # the rest of the store's interface (checks that only read it)
        return getattr(self.store, name)

    def vectors(self, pixels: np.ndarray, tiles: Sequence, timer: StageTimer, progress=None) -> np.ndarray:
        """As :meth:`TileVectorStore.vectors`."""
        if not self.missing(tiles):
            return np.stack([self.store.vectors_by_tile[t] for t in tiles])
        with self.encoding:
            return self.store.vectors(pixels, tiles, timer, progress)


class Explorer:
    """The images of ``config.images_dir`` localised with ``encoder``; see the module's docstring."""

    def __init__(self, encoder: EncoderSpecModel, config: ExplorerConfig, keep_rasters: int = 2,
                 keep_results: int = 64):
        self.encoder = encoder
        self.config = config
        os.makedirs(config.outputs_dir, exist_ok=True)
        # what every result id depends on besides the request: the encoder's vectors and the code of the maps
        self._result_basis = (vectors_key(encoder), code_digest(__name__), config.seed, config.preview_side)
        self._lock = threading.Lock()  # guards the dictionaries below
        self._states: dict[str, ImageState] = {}  # name -> the image as last read
        self._rasters: OrderedDict[str, RasterImage] = OrderedDict()  # content key -> decoded image, LRU
        self._stores: dict[str, SharedStore] = {}  # content key -> its vectors
        self._results: OrderedDict[str, Result] = OrderedDict()  # the latest results, in memory
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # job id -> job, pending and recently finished
        self._keep_rasters, self._keep_results = keep_rasters, keep_results
        self._queue = FairQueue()
        self._queries = ThreadPoolExecutor(config.query_workers, thread_name_prefix="selo-query")
        self._worker = threading.Thread(target=self._serve_jobs, daemon=True, name="selo-encoder")
        self._worker.start()
        load_kernel()  # the map's median kernel now, not in the first user's query (a second or more)

    # ---- what may be asked -------------------------------------------------------------------------------

    def image_names(self) -> list[str]:
        """File names of the images directly in the folder (no links, no hidden files), sorted."""
        with os.scandir(self.config.images_dir) as entries:
            return sorted(e.name for e in entries if e.is_file(follow_symlinks=False) and not e.name.startswith(".")
                          and e.name.lower().endswith(IMAGE_EXTENSIONS))

    def image_path(self, name) -> str:
        """The path of a listed image; :class:`RequestError` 400 for anything else (a path, a name not listed;
        ``..`` inside a name such as ``site..v2.jpg`` is fine)."""
        if not isinstance(name, str) or not name:
            raise RequestError(400, "image: expected a file name as /api/images lists it")
        if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            raise RequestError(400, f"image {name!r}: a bare file name is expected (no path)")
        if name not in self.image_names():
            raise RequestError(400, f"image {name!r}: not an image of the served folder")
        return os.path.join(self.config.images_dir, name)

    def check_query(self, query) -> tuple[str, list[str]]:
        """The query stripped and its words unknown to the encoder; :class:`RequestError` when it is not a
        non-empty text of at most ``max_query`` characters or when no word of it is known (422)."""
        if not isinstance(query, str) or not query.strip():
            raise RequestError(422, "query: expected a non-empty text")
        if len(query) > self.config.max_query:
            raise RequestError(422, f"query: {len(query)} characters, at most {self.config.max_query}")
        query = query.strip()
        try:
            return query, self.encoder.unknown_words(query)
        except ValueError as error:  # not one word known: the map would mean nothing
            raise RequestError(422, str(error)) from None

    @staticmethod
    def pipeline(name, steps=None) -> PipelineSpec:
        """The pipeline ``name`` with ``steps``; :class:`RequestError` when unknown or out of range."""
        if not isinstance(name, str) or name not in PIPELINES:
            raise RequestError(422, f"pipeline {name!r}: use one of {', '.join(PIPELINES)}")
        steps = parse_steps(steps)
        if steps is None:
            return PIPELINES[name]
        low, high = STEP_RANGE
        if len(steps) > MAX_STEPS or not all(low <= s <= high for s in steps):
            raise RequestError(422, f"steps {steps!r}: at most {MAX_STEPS} steps of {low} to {high} pixels")
        return get_pipeline(name, steps)

    # ---- images ------------------------------------------------------------------------------------------

    def image_state(self, name: str) -> ImageState:
        """Image ``name`` as its content is now: read again whenever its bytes or its sidecars' changed (by
        digest, whatever their sizes and times say: a new world file or mask is a new image)."""
        path = self.image_path(name)
        digest = dataset_digest(path, dataset_files(path))
        with self._lock:
            state = self._states.get(name)
        if state is None or state.digest != digest:
            _, state = self._decode(name, path, digest)
        return state

    def _decode(self, name: str, path: str, digest: str) -> tuple[RasterImage, ImageState]:
        """Read image ``name``; remember its state and keep the pixels among the last few decoded."""
        try:
            raster = read_raster(path)
        except (OSError, ValueError) as error:
            raise RequestError(422, str(error)) from None
        height, width = raster.pixels.shape[:2]
        state = ImageState(digest, raster.key, height, width, lonlat_affine(raster, height, width),
                           raster.valid is not None)
        with self._lock:
            self._states[name] = state
            self._rasters[raster.key] = raster
            self._rasters.move_to_end(raster.key)
            while len(self._rasters) > self._keep_rasters:
                self._rasters.popitem(last=False)
        return raster, state

    def raster(self, name: str, state: ImageState) -> RasterImage:
        """The decoded pixels of image ``name`` as ``state`` describes it; :class:`RequestError` 409 when the
        file has changed meanwhile."""
        with self._lock:
            raster = self._rasters.get(state.key)
            if raster is not None:
                self._rasters.move_to_end(state.key)
                return raster
        path = self.image_path(name)
        raster, _ = self._decode(name, path, dataset_digest(path, dataset_files(path)))
        if raster.key != state.key:
            raise RequestError(409, f"image {name!r} changed while it was being read; ask again")
        return raster

    def store(self, key: str) -> SharedStore:
        """The tile-vector store of the image with content key ``key`` (loaded from disk once)."""
        with self._lock:
            if key not in self._stores:
                store = TileVectorStore(self.encoder, self.config.cache_dir)
                store.use_image(key)
                self._stores[key] = SharedStore(store)
            return self._stores[key]

    def images(self) -> list[dict]:
        """Each image's ``name``, ``height`` and ``width`` (pixels), file size ``bytes`` and whether tile
        vectors of it are ``cached``; an image that cannot be read has an ``error`` instead. An image is
        decoded once per content to know its key."""
        listing = []
        for name in self.image_names():
            size = os.stat(os.path.join(self.config.images_dir, name)).st_size
            try:
                state = self.image_state(name)
            except RequestError as error:
                listing.append({"name": name, "height": None, "width": None, "bytes": size, "cached": False,
                                "error": str(error)})
                continue
            listing.append({"name": name, "height": state.height, "width": state.width, "bytes": size,
                            "cached": bool(self.store(state.key).store.vectors_by_tile), "geo": state.geo})
        return listing

    def image_jpeg(self, name: str, side: int) -> str:
        """Path of a JPEG of image ``name`` with its longer side at most ``side`` pixels, verified: made once
        per content and side, in the outputs folder, named by the image's content key and stored as made by
        that key and side (made again when it fails)."""
        if type(side) is not int or not 16 <= side <= 4096:
            raise RequestError(400, f"side {side!r}: expected 16 to 4096 pixels")
        state = self.image_state(name)
        path, key = os.path.join(self.config.outputs_dir, f"{state.key[:32]}_{side}.jpg"), digest_of(state.key, side)
        if not kept(path, key):
            pixels = self.raster(name, state).pixels
            scale = preview_scale(state.height, state.width, side)
            size = (max(1, round(state.width * scale)), max(1, round(state.height * scale)))
            small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
            write_stored(path, encode_jpeg(small, path).tobytes(), key)
        return path

    def output_path(self, filename) -> str:
        """The path of a result's map ``<id>.png`` (what ``map_url`` names), verified: whole and made by that
        result. :class:`RequestError` 400 for a path or a hidden name (a record ``.<name>.selo``), 404 for
        any other file, a map never made or one changed since (logged; asking the query again remakes it)."""
        if not isinstance(filename, str) or "/" in filename or "\\" in filename or filename.startswith(".") \
                or "\x00" in filename:
            raise RequestError(400, f"{filename!r}: a bare file name of the explorer's outputs is expected")
        result_id, extension = os.path.splitext(filename)
        path = os.path.join(self.config.outputs_dir, filename)
        if extension != ".png" or not RESULT_ID.fullmatch(result_id) or not kept(path, result_id):
            raise RequestError(404, f"{filename}: no such output (or changed since it was made: ask the query again)")
        return path

    # ---- requests ----------------------------------------------------------------------------------------

    def encode(self, name, pipeline="v1", steps=None, client: str = "local") -> Result | Job:
        """Encode the first-stage tiles of image ``name`` (what picking an image on the page does)."""
        self.image_path(name)
        return self._ask(Request(name, None, self.pipeline(pipeline, steps)), [], client)

    def localise(self, name, query, pipeline="v1", steps=None, client: str = "local") -> Result | Job:
        """The preview map and peaks of ``query`` on image ``name`` (:class:`Result`), or the :class:`Job`
        that encodes the tiles it needs first."""
        self.image_path(name)
        query, unknown = self.check_query(query)
        return self._ask(Request(name, query, self.pipeline(pipeline, steps)), unknown, client)

    def result_id(self, image_key: str, query: str | None, spec: PipelineSpec) -> str:
        """The id of the result of ``query`` with ``spec`` computed from the image content ``image_key``, with
        this encoder and code (not the image's name: a copy of an image shares its results)."""
        return digest_of(image_key, *self._result_basis, query, spec.as_dict())[:32]

    def _ask(self, request: Request, unknown: list[str], client: str) -> Result | Job:
        state = self.image_state(request.image)
        self._first_stage(request, state)
        result_id = self.result_id(state.key, request.query, request.spec)  # of the image as it is now
        with self._lock:
            job = next((j for j in self._jobs.values()
                        if j.result_id == result_id and j.state != "cancelled" and not j.answered), None)
            if job is not None and job.state in ("queued", "encoding"):
                if client not in job.clients:
                    job.clients.append(client)
                return job
            if job is not None:  # finished: its answer once to a request asked again (GET /api/jobs/<id> as long
                job.answered = True  # as it is kept), then the request is asked afresh
        if job is not None:
            if job.error:
                raise job.error
            if job.result.id == result_id:  # not a map of the pixels that replaced the image while it waited
                return self._as_asked(job.result, request)
        if request.query is not None:
            known = self._kept_result(result_id)
            if known is not None and kept(os.path.join(self.config.outputs_dir, f"{result_id}.png"), result_id):
                known = self._as_asked(known, request)
                return dataclasses.replace(known, tiles_encoded=0, seconds=0.0)  # nothing done now
        missing = self.store(state.key).missing(self._needed(request, state))
        if not missing:
            if request.query is None:
                return self._tiles_ready(request, state, 0, time.perf_counter())
            return self._queries.submit(self._answer, request, state, unknown, 0, time.perf_counter()).result()
        job = Job(secrets.token_hex(8), request, result_id, [client], total=len(missing), unknown_words=unknown)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > 256 and next(iter(self._jobs.values())).state not in ("queued", "encoding"):
                self._jobs.popitem(last=False)
        self._queue.put(job, client)
        return job

    def _as_asked(self, result: Result, request: Request) -> Result:
        """``result`` (of the same content, maybe made for a copy of the image under another name) named by the
        image asked for, and remembered so: its answer and downloads carry that name, and a download checks
        that image."""
        if result.image == request.image:
            return result
        return self._remember(dataclasses.replace(result, image=request.image))

    def _first_stage(self, request: Request, state: ImageState) -> list:
        """The first-stage tiles of the request; :class:`RequestError` 422 above ``max_tiles``."""
        stage1 = request.spec.first_stage_tiles(state.height, state.width, request.image)
        if len(stage1) > self.config.max_tiles:
            raise RequestError(422, f"steps {'_'.join(map(str, request.spec.steps))} on {request.image} "
                                    f"({state.width} x {state.height}): {len(stage1)} tiles, more than the "
                                    f"{self.config.max_tiles} one request may ask for; use larger steps")
        return stage1

    def _needed(self, request: Request, state: ImageState) -> list:
        """The first-stage tiles the request needs encoded: those at least half valid (as ``score_tiles``)."""
        stage1 = self._first_stage(request, state)
        if state.has_nodata:
            stage1 = mostly_valid(stage1, self.raster(request.image, state).valid)
        return stage1

    def job(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise RequestError(404, f"job {job_id!r}: unknown (finished long ago, or never asked)")
            return self._jobs[job_id]

    def position(self, job: Job) -> int:
        """0 while ``job`` runs, else its place in the queue (1: next); -1 once finished."""
        if job.state == "encoding":
            return 0
        order = self._queue.order()
        return order.index(job) + 1 if job in order else -1

    def cancel(self, job_id: str, client: str = "local") -> Job:
        """Withdraw ``client`` from a job; the job stops (queued: at once; encoding: within one batch of
        tiles, the tiles encoded so far kept) when no other client waits for it."""
        job = self.job(job_id)
        with self._lock:
            if client in job.clients:
                job.clients.remove(client)
            if job.clients or job.state not in ("queued", "encoding"):
                return job
            job.cancel_asked.set()
        if self._queue.remove(job):
            with self._lock:
                job.state = "cancelled"
        return job

    def result(self, result_id) -> Result:
        """A result made earlier (in memory, or its record on disk); :class:`RequestError` 404 when unknown."""
        if not isinstance(result_id, str) or not RESULT_ID.fullmatch(result_id):
            raise RequestError(404, f"result {result_id!r}: unknown (ask /api/localise again)")
        known = self._kept_result(result_id)
        if known is None:
            raise RequestError(404, f"result {result_id}: unknown (ask /api/localise again)")
        return known

    def _kept_result(self, result_id: str) -> Result | None:
        """The result filed under ``result_id``: in memory, or its record on disk verified (both files whole
        and made by this id, and this id the one of the image content, request and code the record names);
        None when there is none, or when the record fails (logged in one line: the result is computed again)."""
        with self._lock:
            known = self._results.get(result_id)
        path = os.path.join(self.config.outputs_dir, result_id + ".json")
        if known is not None or not made(path):
            return known
        try:
            known = Result.load(self.config.outputs_dir, result_id)
            if self.result_id(known.image_key, known.query, known.spec) != result_id:
                raise StoredFileError(path, f"its image content ({known.image_key[:16]}...), query or code is not "
                                            "what its id names")
        except StoredFileError as error:
            logger.warning("%s; computed again", error)
            return None
        return self._remember(known)

    def download(self, result_id, kind) -> tuple[str, str]:
        """``(path, name to save it under)`` of the exact full-resolution probability map
        (``kind="probmap"``, GeoTIFF) or its peaks (``"peaks"``, GeoJSON) of a result, written on first
        request. :class:`RequestError` 409 when the image is no longer the one the result was made of."""
        if kind not in DOWNLOADS:
            raise RequestError(400, f"kind {kind!r}: use one of {', '.join(DOWNLOADS)}")
        result = self.result(result_id)
        try:
            state = self.image_state(result.image)
        except RequestError:
            state = None
        if state is None or state.key != result.image_key:  # the name now means other pixels, or none
            raise RequestError(409, f"image {result.image!r} has changed or gone since result {result.id} was "
                                    "made; run the query again for a map of the image as it is now")
        path = os.path.join(self.config.outputs_dir, result.id + DOWNLOADS[kind])
        if not kept(path, result.id):
            raster = self.raster(result.image, state)
            probmap = raster_probmap(raster, result.tiles, result.scores, result.spec, result.image)  # as selo-localise
            if kind == "probmap":
                write_probmap_tif(path, probmap, raster)
                seal_file(path, result.id)
            else:
                write_stored(path, json.dumps(peaks_feature_collection(probmap, raster)).encode(), result.id)
        return path, result.download_name(kind)

    def regions(self, result_id, threshold: float) -> list[list[list[int]]]:
        """The outlines where a result's page map is at or above ``threshold`` (0-1), full-resolution pixels."""
        result = self.result(result_id)
        return region_outlines(result.preview, threshold, result.preview.shape[1] / result.width)

    def _remember(self, result: Result) -> Result:
        with self._lock:
            self._results[result.id] = result
            self._results.move_to_end(result.id)
            while len(self._results) > self._keep_results:
                self._results.popitem(last=False)
        return result

    # ---- work --------------------------------------------------------------------------------------------

    def _serve_jobs(self) -> None:
        """The encoder's thread: the queue's jobs one after the other."""
        while True:
            job = self._queue.take()
            with self._lock:
                if job.cancel_asked.is_set():
                    job.state = "cancelled"
                    continue
                job.state = "encoding"
            try:
                job.result = self._run(job)
                state = "done"
            except Cancelled:
                state = "cancelled"
            except RequestError as error:
                job.error, state = error, "failed"
            except ValueError as error:  # bad input, e.g. an image that is all nodata: the message names it
                job.error, state = RequestError(422, str(error)), "failed"
            except Exception as error:  # noqa: BLE001 - reported to the client, the server goes on
                job.error, state = RequestError(500, f"{job.request.image}: {type(error).__name__}: {error}"), "failed"
            with self._lock:
                job.state = state

    def _run(self, job: Job) -> Result:
        """Encode the job's missing first-stage tiles in chunks (cancel checked between and within them),
        then answer its query."""
        request = job.request
        state = self.image_state(request.image)  # as it is now: maybe not the image the job was asked for
        raster = self.raster(request.image, state)
        shared = self.store(state.key)
        missing = shared.missing(self._needed(request, state))
        job.total = len(missing)

        def progress(done: int, _total: int, before: int = 0) -> None:
            if job.cancel_asked.is_set():
                raise Cancelled
            job.done = before + done

        timer = StageTimer()
        for start in range(0, len(missing), ENCODE_CHUNK):
            if job.cancel_asked.is_set():
                raise Cancelled
            chunk = missing[start:start + ENCODE_CHUNK]
            shared.vectors(raster.pixels, chunk, timer, lambda done, total, s=start: progress(done, total, s))
        if request.query is None:
            return self._tiles_ready(request, state, len(missing), job.started)
        return self._answer(request, state, job.unknown_words, len(missing), job.started)

    def _tiles_ready(self, request: Request, state: ImageState, encoded: int, started: float) -> Result:
        """The answer to an encode request whose tiles are all encoded."""
        return Result(self.result_id(state.key, None, request.spec), request.image, None, request.spec, state.height,
                      state.width, state.key, encoded, time.perf_counter() - started, state.geo)

    def _answer(self, request: Request, state: ImageState, unknown: list[str], encoded: int, started: float) -> Result:
        """Score the request's tiles (encoded already, but for v2's refinement boxes), make its page map and
        peaks, and keep the result on disk under the id of the decoded pixels it was computed from."""
        name, spec = request.image, request.spec
        raster = self.raster(name, state)
        result_id = self.result_id(raster.key, request.query, spec)
        image = LoadedImage(raster.path, raster.key, raster.pixels)
        shared = self.store(raster.key)
        before = shared.store.tiles_encoded
        tiles, scores = score_tiles(image, request.query, self.encoder, spec, shared, self.config.seed, None, name,
                                    valid=raster.valid)
        height, width = state.height, state.width
        scale = preview_scale(height, width, self.config.preview_side)
        cells = tile_cells(tiles, scores, height, width, fill_uncovered=raster.valid is not None)
        preview = preview_map(cells, spec.map_filter, scale, name)
        if raster.valid is None:
            png = map_png(preview)
        else:  # nodata: 0 (no peak there) and transparent
            valid = cv2.resize(raster.valid.view(np.uint8), preview.shape[::-1], interpolation=cv2.INTER_NEAREST)
            preview[valid == 0] = 0
            ok, png = cv2.imencode(".png", np.dstack([colour_heatmap(preview), 255 * valid]), PNG_FAST)
            if not ok:
                raise OSError(f"{name}: PNG encoding of the map failed")
        peaks = preview_peaks(preview, scale)
        lonlat = (pixel_coordinates(raster, [x for x, _, _ in peaks], [y for _, y, _ in peaks])
                  if raster.crs is not None else None)
        score = scene_score(cells)
        result = Result(result_id, name, request.query, spec, height, width, raster.key,
                        encoded + shared.store.tiles_encoded - before, time.perf_counter() - started, state.geo,
                        tiles, scores, preview, peaks, lonlat, score if math.isfinite(score) else None, unknown)
        write_stored(os.path.join(self.config.outputs_dir, f"{result_id}.png"), bytes(png), result_id)
        result.save(self.config.outputs_dir)  # the record last: a result on disk has its map
        return self._remember(result)

