"""The explorer's state behind ``predict/serve.py``: the images of one folder, their tile vectors (encoded
once, kept on disk), and SeLo maps of typed queries at screen resolution in well under a second.

    >>> from predict import load_encoder
    >>> encoder = load_encoder("predict/options/demo/demo_encoder.yaml", device="cpu")  # doctest: +SKIP
    >>> explorer = Explorer(encoder, ExplorerConfig(images_dir="scenes"))  # doctest: +SKIP
    >>> explorer.localise("scene.jpg", "a red track around a green football field")  # doctest: +SKIP

A request either answers at once (:class:`Result`) or, when tiles must be encoded first, starts that work in
a background thread and answers its :class:`Progress`; asking again gives the progress until the result is
ready. One piece of work runs at a time: any other request meanwhile gets the running one's progress and
is told to wait. Names of images are the file names as :meth:`Explorer.images` lists them; anything else
(``..``, a path, a name not listed) is a :class:`RequestError`.

The page shows :func:`~predict.core.preview.preview_map` (the cell map on a grid scaled to the screen, the
filter scaled with it) and its peaks scaled back to full-resolution pixels: an approximation. The downloads
are exact: :func:`~predict.run.localise.probability_map_of` at full resolution, as ``localise()`` gives it.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from predict.core.heatmap import colour_heatmap
from predict.core.pipelines import PIPELINES, PipelineSpec, get_pipeline
from predict.core.preview import preview_map, preview_peaks, preview_scale
from predict.encoders.base import EncoderSpecModel
from predict.io.atomic import write_atomically
from predict.io.jpeg import encode_jpeg
from predict.io.raster import (RasterImage, peaks_feature_collection, pixel_coordinates, read_raster,
                               write_probmap_tif)
from predict.run.localise import mostly_valid, score_tiles, tile_cells
from predict.run.scenes import raster_probmap
from predict.run.timing import StageTimer
from predict.run.vectors import TileVectorStore

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
STEP_RANGE = (64, 4096)  # pixels: smaller steps would ask the encoder for tens of thousands of tiles
MAX_STEPS = 6
DOWNLOADS = {"probmap": "_probmap.tif", "peaks": "_peaks.geojson"}


class RequestError(ValueError):
    """A request the explorer refuses: HTTP ``status`` and one line naming the parameter and the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class ExplorerConfig:
    """What the explorer serves and where it keeps its state.

    Attributes:
        images_dir: the folder whose images (directly in it) are served.
        cache_dir: tile vectors (``.npz``, shared format with ``generate_selo.py``); default
            ``<images_dir>/.selo/tile_vectors``.
        outputs_dir: preview maps, thumbnails and downloads; default ``<images_dir>/.selo/outputs``.
        preview_side: longer side of the page's map, pixels.
        seed: seed of v2's word shuffles.
        max_query: longest query accepted, characters.
    """

    images_dir: str
    cache_dir: str | None = None
    outputs_dir: str | None = None
    preview_side: int = 1024
    seed: int = 0
    max_query: int = 300

    def __post_init__(self):
        self.images_dir = os.path.abspath(self.images_dir)
        self.cache_dir = os.path.abspath(self.cache_dir or os.path.join(self.images_dir, ".selo", "tile_vectors"))
        self.outputs_dir = os.path.abspath(self.outputs_dir or os.path.join(self.images_dir, ".selo", "outputs"))


@dataclass
class Progress:
    """Work in progress: ``done`` of ``total`` tiles of ``image`` encoded (``query`` None: encoding only)."""

    image: str
    query: str | None
    done: int = 0
    total: int = 0

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def as_dict(self, asked: tuple) -> dict:
        """The JSON answer to a request for ``asked`` = ``(image, query)``: its own progress, or busy."""
        mine = asked == (self.image, self.query)
        message = (f"encoding {self.image}: {self.done}/{self.total} tiles" if mine else
                   f"busy with {self.image} ({self.done}/{self.total} tiles): one encode at a time, retry later")
        return {"status": "encoding" if mine else "busy", "image": self.image, "done": self.done,
                "total": self.total, "message": message}


@dataclass
class Result:
    """A finished request: the map of ``query`` on ``image`` (or, with ``query`` None, its tiles encoded)."""

    id: str
    image: str
    query: str | None
    spec: PipelineSpec
    height: int
    width: int
    tiles_encoded: int
    seconds: float
    tiles: list = field(default_factory=list)
    scores: np.ndarray | None = None
    peaks: list = field(default_factory=list)  # (x, y, gray) in full-resolution pixels, best first
    peaks_lonlat: list | None = None  # [lon, lat] of each peak when the image is georeferenced

    def top_score(self) -> float | None:
        """The best finite tile score (None when no score is finite)."""
        finite = self.scores[np.isfinite(self.scores)]
        return float(finite.max()) if finite.size else None

    def as_dict(self) -> dict:
        answer = {"image": self.image, "height": self.height, "width": self.width, "pipeline": self.spec.name,
                  "steps": list(self.spec.steps), "tiles_encoded": self.tiles_encoded,
                  "seconds": round(self.seconds, 4)}
        if self.query is None:
            return answer
        return {**answer, "query": self.query, "result": self.id, "map_url": f"/outputs/{self.id}.png",
                "top_score": self.top_score(),
                "peaks": [{"rank": i + 1, "x": x, "y": y, "probability": round(gray / 255, 4),
                           **({"lon": self.peaks_lonlat[i][0], "lat": self.peaks_lonlat[i][1]}
                              if self.peaks_lonlat else {})}
                          for i, (x, y, gray) in enumerate(self.peaks)],
                "downloads": {kind: f"/api/download?result={self.id}&kind={kind}" for kind in DOWNLOADS}}


@dataclass
class _Job:
    request: tuple  # (image, query, spec)
    progress: Progress
    answerable: threading.Event = field(default_factory=threading.Event)  # finished, or encoding started
    finished: bool = False
    result: Result | None = None
    error: RequestError | None = None


class Explorer:
    """The images of ``config.images_dir`` localised with ``encoder``; see the module's docstring."""

    def __init__(self, encoder: EncoderSpecModel, config: ExplorerConfig, keep_rasters: int = 2,
                 keep_results: int = 64):
        self.encoder = encoder
        self.config = config
        os.makedirs(config.outputs_dir, exist_ok=True)
        self._lock = threading.Lock()  # guards _job, _rasters, _keys, _stores, _results
        self._job: _Job | None = None
        self._rasters: OrderedDict[str, tuple] = OrderedDict()  # name -> (file signature, RasterImage), LRU
        self._keys: dict[str, tuple] = {}  # name -> (file signature, key, height, width) of every image decoded
        self._stores: dict[str, TileVectorStore] = {}  # image key -> its store
        self._results: OrderedDict[str, Result] = OrderedDict()
        self._keep_rasters, self._keep_results = keep_rasters, keep_results

    # ---- what may be asked -------------------------------------------------------------------------------

    def image_names(self) -> list[str]:
        """File names of the images directly in the folder (no links, no hidden files), sorted."""
        with os.scandir(self.config.images_dir) as entries:
            return sorted(e.name for e in entries if e.is_file(follow_symlinks=False) and not e.name.startswith(".")
                          and e.name.lower().endswith(IMAGE_EXTENSIONS))

    def image_path(self, name) -> str:
        """The path of a listed image; :class:`RequestError` 400 for anything else."""
        if not isinstance(name, str) or not name:
            raise RequestError(400, "image: expected a file name as /api/images lists it")
        if "/" in name or "\\" in name or ".." in name or os.path.isabs(name) or "\x00" in name:
            raise RequestError(400, f"image {name!r}: a bare file name is expected (no path, no '..')")
        if name not in self.image_names():
            raise RequestError(400, f"image {name!r}: not an image of the served folder")
        return os.path.join(self.config.images_dir, name)

    def check_query(self, query) -> str:
        """The query stripped; :class:`RequestError` 400 when not a non-empty string of at most ``max_query``."""
        if not isinstance(query, str) or not query.strip():
            raise RequestError(400, "query: expected a non-empty text")
        if len(query) > self.config.max_query:
            raise RequestError(400, f"query: {len(query)} characters, at most {self.config.max_query}")
        return query.strip()

    @staticmethod
    def pipeline(name, steps: str | Sequence[int] | None = None) -> PipelineSpec:
        """The pipeline ``name`` with ``steps``; :class:`RequestError` 400 when unknown or out of range."""
        if name not in PIPELINES:
            raise RequestError(400, f"pipeline {name!r}: use one of {', '.join(PIPELINES)}")
        if steps in (None, "", []):
            return PIPELINES[name]
        try:
            spec = get_pipeline(name, steps)
        except (ValueError, TypeError) as error:
            raise RequestError(400, f"steps {steps!r}: {error}") from None
        low, high = STEP_RANGE
        if len(spec.steps) > MAX_STEPS or not all(low <= s <= high for s in spec.steps):
            raise RequestError(400, f"steps {steps!r}: at most {MAX_STEPS} steps of {low} to {high} pixels")
        return spec

    # ---- images ------------------------------------------------------------------------------------------

    def _signature(self, name: str) -> tuple:
        stat = os.stat(self.image_path(name))
        return stat.st_size, stat.st_mtime_ns

    def _decode(self, name: str, signature: tuple) -> RasterImage:
        """Read image ``name`` and remember its content key and size."""
        try:
            raster = read_raster(self.image_path(name))
        except (OSError, ValueError) as error:
            raise RequestError(422, str(error)) from None
        with self._lock:
            self._keys[name] = (signature, raster.key, *raster.pixels.shape[:2])
        return raster

    def raster(self, name: str) -> RasterImage:
        """The decoded image ``name`` (the last ``keep_rasters`` used stay in memory; reread when the file
        changes)."""
        signature = self._signature(name)
        with self._lock:
            kept = self._rasters.get(name)
            if kept and kept[0] == signature:
                self._rasters.move_to_end(name)
                return kept[1]
        raster = self._decode(name, signature)
        with self._lock:
            self._rasters[name] = (signature, raster)
            while len(self._rasters) > self._keep_rasters:
                self._rasters.popitem(last=False)
        return raster

    def store(self, key: str) -> TileVectorStore:
        """The tile-vector store of the image with content key ``key`` (loaded from disk once)."""
        with self._lock:
            if key not in self._stores:
                store = TileVectorStore(self.encoder, self.config.cache_dir)
                store.use_image(key)
                self._stores[key] = store
            return self._stores[key]

    def images(self) -> list[dict]:
        """Each image's ``name``, ``height`` and ``width`` (pixels), file size ``bytes`` and whether its tile
        vectors are ``cached`` (on disk or in memory). An image is decoded once to know its content key (not kept in memory for that); later
        calls reuse the key until the file changes."""
        listing = []
        for name in self.image_names():
            signature = self._signature(name)
            known = self._keys.get(name)
            if not known or known[0] != signature:
                try:
                    self._decode(name, signature)
                except RequestError as error:
                    listing.append({"name": name, "height": None, "width": None, "bytes": signature[0],
                                    "cached": False, "error": str(error)})
                    continue
                known = self._keys[name]
            _, key, height, width = known
            listing.append({"name": name, "height": height, "width": width, "bytes": signature[0],
                            "cached": bool(self.store(key).vectors_by_tile)})
        return listing

    def image_jpeg(self, name: str, side: int) -> str:
        """Path of a JPEG of image ``name`` with its longer side at most ``side`` pixels (made once, in the
        outputs folder, named by the image's content key)."""
        if not isinstance(side, int) or not 16 <= side <= 4096:
            raise RequestError(400, f"side {side!r}: expected 16 to 4096 pixels")
        raster = self.raster(name)
        path = os.path.join(self.config.outputs_dir, f"{raster.key}_{side}.jpg")
        if not os.path.isfile(path):
            height, width = raster.pixels.shape[:2]
            scale = preview_scale(height, width, side)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(raster.pixels, size, interpolation=cv2.INTER_AREA)
            write_atomically(path, encode_jpeg(small, path).tobytes())
        return path

    def output_path(self, filename) -> str:
        """The path of a file the explorer wrote; :class:`RequestError` 400 for a path or ``..``, 404 when
        there is no such file."""
        if not isinstance(filename, str) or "/" in filename or "\\" in filename or ".." in filename \
                or filename.startswith(".") or "\x00" in filename:
            raise RequestError(400, f"{filename!r}: a bare file name of the explorer's outputs is expected")
        path = os.path.join(self.config.outputs_dir, filename)
        if not os.path.isfile(path):
            raise RequestError(404, f"{filename}: no such output")
        return path

    # ---- requests ----------------------------------------------------------------------------------------

    def encode(self, name, pipeline="v1", steps=None) -> Result | Progress:
        """Encode the first-stage tiles of image ``name`` (what picking an image on the page does)."""
        self.image_path(name)
        return self._submit((name, None, self.pipeline(pipeline, steps)))

    def localise(self, name, query, pipeline="v1", steps=None) -> Result | Progress:
        """The preview map and peaks of ``query`` on image ``name``, or the progress of the encoding it waits
        for (or of another image's)."""
        self.image_path(name)
        return self._submit((name, self.check_query(query), self.pipeline(pipeline, steps)))

    def result(self, result_id) -> Result:
        with self._lock:
            if not isinstance(result_id, str) or result_id not in self._results:
                raise RequestError(404, f"result {result_id!r}: unknown (ask /api/localise again)")
            return self._results[result_id]

    def download(self, result_id, kind) -> str:
        """Path of the exact full-resolution probability map (``kind="probmap"``, GeoTIFF) or its peaks
        (``"peaks"``, GeoJSON) of a result, written on first request."""
        if kind not in DOWNLOADS:
            raise RequestError(400, f"kind {kind!r}: use one of {', '.join(DOWNLOADS)}")
        result = self.result(result_id)
        path = os.path.join(self.config.outputs_dir, result.id + DOWNLOADS[kind])
        if not os.path.isfile(path):
            raster = self.raster(result.image)
            probmap = raster_probmap(raster, result.tiles, result.scores, result.spec, result.image)  # as selo-localise
            if kind == "probmap":
                write_probmap_tif(path, probmap, raster)
            else:
                write_atomically(path, json.dumps(peaks_feature_collection(probmap, raster)))
        return path

    def _submit(self, request: tuple) -> Result | Progress:
        asked = request[:2]
        with self._lock:
            job = self._job
            if job is not None and not job.finished:
                return job.progress
            self._job = None
            if job is not None and job.request == request:  # the finished work this request waited for
                if job.error:
                    raise job.error
                return job.result
            job = self._job = _Job(request, Progress(*asked))
        threading.Thread(target=self._run, args=(job,), daemon=True, name="selo-explorer").start()
        job.answerable.wait()
        with self._lock:
            if not job.finished:
                return job.progress
            if self._job is job:  # (another request may have started the next job meanwhile)
                self._job = None
        if job.error:
            raise job.error
        return job.result

    def _run(self, job: _Job) -> None:
        try:
            job.result = self._work(job)
        except RequestError as error:
            job.error = error
        except ValueError as error:  # bad input, e.g. an image that is all nodata: the message names it
            job.error = RequestError(422, str(error))
        except Exception as error:  # noqa: BLE001 - reported to the client, the server goes on
            job.error = RequestError(500, f"{job.request[0]}: {type(error).__name__}: {error}")
        finally:
            with self._lock:
                job.finished = True
            job.answerable.set()

    def _work(self, job: _Job) -> Result:
        name, query, spec = job.request
        start = time.perf_counter()
        raster = self.raster(name)
        store = self.store(raster.key)
        encoded_before = store.tiles_encoded
        height, width = raster.pixels.shape[:2]
        timer = StageTimer()
        stage1 = spec.first_stage_tiles(height, width, name)
        if raster.valid is not None:
            stage1 = mostly_valid(stage1, raster.valid)  # as score_tiles: nodata tiles are never encoded
        missing = [t for t in dict.fromkeys(stage1) if t not in store.vectors_by_tile]
        if missing:
            job.progress.total = len(missing)
            job.answerable.set()  # the request answers with the progress from here on
            store.vectors(raster.pixels, missing, timer, progress=job.progress.update)
        result_id = hashlib.sha1(json.dumps([raster.key, self.encoder.cache_key(), query, spec.as_dict(),
                                             self.config.seed, self.config.preview_side]).encode()).hexdigest()[:20]
        if query is None:
            return Result(result_id, name, None, spec, height, width, store.tiles_encoded - encoded_before,
                          time.perf_counter() - start)
        tiles, scores = score_tiles(raster.loaded(), query, self.encoder, spec, store, self.config.seed, timer, name,
                                    valid=raster.valid)
        scale = preview_scale(height, width, self.config.preview_side)
        cells = tile_cells(tiles, scores, height, width, fill_uncovered=raster.valid is not None)
        preview = preview_map(cells, spec.map_filter, scale, name)
        colour = colour_heatmap(preview)
        if raster.valid is not None:  # nodata: 0 (no peak there) and transparent
            valid = cv2.resize(raster.valid.view(np.uint8), preview.shape[::-1], interpolation=cv2.INTER_NEAREST)
            preview[valid == 0] = 0
            colour = np.dstack([colour, 255 * valid])
        ok, png = cv2.imencode(".png", colour)
        if not ok:
            raise OSError(f"{name}: PNG encoding of the map failed")
        write_atomically(os.path.join(self.config.outputs_dir, f"{result_id}.png"), png.tobytes())
        peaks = preview_peaks(preview, scale)
        lonlat = (pixel_coordinates(raster, [x for x, _, _ in peaks], [y for _, y, _ in peaks])
                  if raster.crs is not None else None)
        result = Result(result_id, name, query, spec, height, width, store.tiles_encoded - encoded_before,
                        time.perf_counter() - start, tiles, scores, peaks, lonlat)
        with self._lock:
            self._results[result_id] = result
            self._results.move_to_end(result_id)
            while len(self._results) > self._keep_results:
                self._results.popitem(last=False)
        return result
