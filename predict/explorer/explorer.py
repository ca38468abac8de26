"""The explorer's state behind ``selo-serve`` (:mod:`predict.cli.serve`): the images of one folder, their tile
vectors (encoded once, kept on disk), one job queue for the encoder, and SeLo maps of typed queries at screen
resolution. :class:`Explorer` ties the private modules together: ``requests`` (what may be asked),
``images`` (the folder's images, decoded, their vectors and thumbnails), ``jobs`` (the encoder's queue),
``results`` (results kept by content), ``maps`` (the page's map and the downloads), ``outputs`` (files
kept only verified) and ``errors`` (what is refused, without HTTP).

    >>> from predict import load_encoder
    >>> encoder = load_encoder("demo", device="cpu")  # the demo preset  # doctest: +SKIP
    >>> explorer = Explorer(encoder, ExplorerConfig(images_dir="scenes"))  # doctest: +SKIP
    >>> explorer.localise("scene.jpg", "a red track around a green football field")  # doctest: +SKIP

A request whose first-stage tiles are all encoded is answered at once (:class:`Result`): it runs on one of
``query_workers`` threads beside any encoding, so a cached query never waits behind an encode. A request
that needs tiles encoded becomes a :class:`Job` in one queue for the encoder (:mod:`predict.explorer.jobs`).

Results are keyed by content (:mod:`predict.explorer.results`). The content key is that of the pixels the
map was computed from, taken when they were decoded: a job whose image was replaced while it waited files
its map under the new content's id, never under the id it was asked with. A download whose image has
changed since is refused (:class:`ImageChanged`), never computed on the new file under the old id.
"""
from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from predict.core.cell_median import load_kernel
from predict.encoders.base import EncoderSpecModel
from predict.errors import ArgumentError
from predict.errors import BadRequest, ExplorerError, ImageChanged
from predict.explorer.images import ImageFolder, ImageState
from predict.explorer.jobs import Job, Jobs, encode_tiles
from predict.explorer.maps import page_map, region_outlines, write_download
from predict.explorer.outputs import kept
from predict.explorer.requests import Request, check_query, first_stage, pipeline_spec
from predict.explorer.results import DOWNLOADS, Result, Results
from predict.localisation import mostly_valid, score_tiles
from predict.provenance import code_digest, vectors_key

PREVIEW_SIDE_RANGE = (64, 8192)  # pixels


@dataclass
class ExplorerConfig:
    """What the explorer serves and where it keeps its state; a bad value is an
    :class:`~predict.errors.ArgumentError` naming the attribute.

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
            raise ArgumentError("images_dir", f"{self.images_dir}: no such folder")
        low, high = PREVIEW_SIDE_RANGE
        if not low <= self.preview_side <= high:
            raise ArgumentError("preview_side", f"{self.preview_side}: expected {low} to {high} pixels")
        for argument in ("max_tiles", "query_workers"):
            if getattr(self, argument) < 1:
                raise ArgumentError(argument, f"{getattr(self, argument)}: expected at least 1")
        self.images_dir = os.path.abspath(self.images_dir)
        self.cache_dir = os.path.abspath(self.cache_dir or os.path.join(self.images_dir, ".selo", "tile_vectors"))
        self.outputs_dir = os.path.abspath(self.outputs_dir or os.path.join(self.images_dir, ".selo", "outputs"))


class Explorer:
    """The images of ``config.images_dir`` localised with ``encoder``; see the module's docstring. What it
    refuses is an :class:`~predict.errors.ExplorerError`."""

    def __init__(self, encoder: EncoderSpecModel, config: ExplorerConfig, keep_rasters: int = 2,
                 keep_results: int = 64):
        self.encoder = encoder
        self.config = config
        os.makedirs(config.outputs_dir, exist_ok=True)
        self._folder = ImageFolder(encoder, config.images_dir, config.cache_dir, config.outputs_dir, keep_rasters)
        # what every result id depends on besides the request: the encoder's vectors and the code of the maps
        basis = (vectors_key(encoder), code_digest(__name__), config.seed, config.preview_side)
        self._results = Results(config.outputs_dir, basis, keep_results)
        self._queries = ThreadPoolExecutor(config.query_workers, thread_name_prefix="selo-query")
        self._jobs = Jobs(self._run)
        load_kernel()  # the map's median kernel now, not in the first user's query (a second or more)

    pipeline = staticmethod(pipeline_spec)

    def images(self) -> list[dict]:
        """Each image's ``name``, ``height`` and ``width`` (pixels), file size ``bytes``, whether tile vectors of
        it are ``cached`` and its ``geo``; an image that cannot be read has an ``error`` instead."""
        return self._folder.listing()

    def image_jpeg(self, name: str, side: int) -> str:
        """Path of a JPEG of image ``name`` with its longer side at most ``side`` pixels (made once per content
        and side, kept verified); :class:`~predict.errors.BadRequest` for a side outside 16-4096."""
        return self._folder.thumbnail(name, side)

    def output_path(self, filename) -> str:
        """The path of a result's map ``<id>.png``, verified: whole and made by that result.
        :class:`~predict.errors.BadRequest` for a path or a hidden name,
        :class:`~predict.errors.NotFound` for any other file or a map changed since it was made."""
        return self._results.map_path(filename)

    # ---- requests ----------------------------------------------------------------------------------------

    def encode(self, name, pipeline="v1", steps=None, client: str = "local") -> Result | Job:
        """Encode the first-stage tiles of image ``name`` (what picking an image on the page does)."""
        self._folder.path(name)
        return self._ask(Request(name, None, pipeline_spec(pipeline, steps)), [], client)

    def localise(self, name, query, pipeline="v1", steps=None, client: str = "local") -> Result | Job:
        """The preview map and peaks of ``query`` on image ``name`` (:class:`Result`), or the :class:`Job`
        that encodes the tiles it needs first."""
        self._folder.path(name)
        query, unknown = check_query(query, self.encoder, self.config.max_query)
        return self._ask(Request(name, query, pipeline_spec(pipeline, steps)), unknown, client)

    def _ask(self, request: Request, unknown: list[str], client: str) -> Result | Job:
        state = self._folder.state(request.image)
        first_stage(request, state.height, state.width, self.config.max_tiles)  # refused before any work
        result_id = self._results.id_of(state.key, request.query, request.spec)  # of the image as it is now
        found = self._jobs.find(result_id, client)
        if isinstance(found, Job):
            return found
        if found is not None and found.id == result_id:  # not a map of the pixels that replaced the image meanwhile
            return self._results.named(found, request.image)
        if request.query is not None:
            known = self._results.with_map(result_id)
            if known is not None:  # nothing done now
                return dataclasses.replace(self._results.named(known, request.image), tiles_encoded=0, seconds=0.0)
        missing = self._folder.store(state.key).missing(self._needed(request, state))
        if not missing:
            if request.query is None:
                return self._answer(request, state, unknown, 0, time.perf_counter())
            return self._queries.submit(self._answer, request, state, unknown, 0, time.perf_counter()).result()
        return self._jobs.submit(request, result_id, client, len(missing), unknown)

    def _needed(self, request: Request, state: ImageState) -> list:
        """The first-stage tiles the request needs encoded: those at least half valid (as ``score_tiles``)."""
        stage1 = first_stage(request, state.height, state.width, self.config.max_tiles)
        if state.has_nodata:
            with self._folder.raster(request.image, state) as raster:
                stage1 = mostly_valid(stage1, raster.pixels)
        return stage1

    def _run(self, job: Job) -> Result:
        """A job, on the encoder's thread: encode its missing first-stage tiles, then answer its request."""
        request = job.request
        state = self._folder.state(request.image)  # as it is now: maybe not the image the job was asked for
        shared = self._folder.store(state.key)
        missing = shared.missing(self._needed(request, state))
        with self._folder.raster(request.image, state) as raster:
            encode_tiles(job, shared, raster.pixels, missing)
        return self._answer(request, state, job.unknown_words, len(missing), job.started)

    def _answer(self, request: Request, state: ImageState, unknown: list[str], encoded: int, started: float) -> Result:
        """The answer to a request whose tiles are encoded (but for v2's refinement boxes): for a query, score
        its tiles, make its page map and peaks, and keep the result on disk under the id of the decoded
        pixels it was computed from."""
        name, spec = request.image, request.spec
        if request.query is None:
            return Result(self._results.id_of(state.key, None, spec), name, None, spec, state.height, state.width,
                          state.key, encoded, time.perf_counter() - started, state.geo)
        shared = self._folder.store(state.key)
        before = shared.store.tiles_encoded
        with self._folder.raster(name, state) as raster:
            valid = raster.pixels if state.has_nodata else None  # counted stripe by stripe
            tiles, scores = score_tiles(raster.loaded(), request.query, self.encoder, spec, shared, self.config.seed,
                                        None, name, valid=valid)
            shown = page_map(raster, valid, tiles, scores, spec, self.config.preview_side, name)
        result = Result(self._results.id_of(raster.key, request.query, spec), name, request.query, spec, state.height,
                        state.width, raster.key, encoded + shared.store.tiles_encoded - before,
                        time.perf_counter() - started, state.geo, tiles, scores, shown.preview, shown.peaks,
                        shown.peaks_lonlat, shown.scene_score, unknown)
        return self._results.keep(result, shown.png)

    # ---- jobs and results ----------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        """The job ``job_id``; :class:`~predict.errors.NotFound` when unknown."""
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 while ``job`` runs, else its place in the queue (1: next); -1 once finished."""
        return self._jobs.position(job)

    def cancel(self, job_id: str, client: str = "local") -> Job:
        """Withdraw ``client`` from a job; the job stops (queued: at once; encoding: within one chunk of
        tiles, the tiles encoded so far kept) when no other client waits for it."""
        return self._jobs.cancel(job_id, client)

    def result(self, result_id) -> Result:
        """A result made earlier; :class:`~predict.errors.NotFound` when unknown."""
        return self._results.get(result_id)

    def download(self, result_id, kind) -> tuple[str, str]:
        """``(path, name to save it under)`` of the exact full-resolution probability map
        (``kind="probmap"``, GeoTIFF) or its peaks (``"peaks"``, GeoJSON) of a result, written on first
        request. :class:`ImageChanged` when the image is no longer the one the result was made of."""
        if kind not in DOWNLOADS:
            raise BadRequest(f"kind {kind!r}: use one of {', '.join(DOWNLOADS)}")
        result = self._results.get(result_id)
        try:
            state = self._folder.state(result.image)
        except ExplorerError:
            state = None
        if state is None or state.key != result.image_key:  # the name now means other pixels, or none
            raise ImageChanged(f"image {result.image!r} has changed or gone since result {result.id} was made; "
                               "run the query again for a map of the image as it is now")
        path = os.path.join(self.config.outputs_dir, result.id + DOWNLOADS[kind])
        if not kept(path, result.id):
            with self._folder.raster(result.image, state) as raster:
                write_download(path, kind, raster, raster.pixels if state.has_nodata else None, result)
        return path, result.download_name(kind)

    def regions(self, result_id, threshold: float) -> list[list[list[int]]]:
        """The outlines where a result's page map is at or above ``threshold`` (0-1), full-resolution pixels."""
        result = self._results.get(result_id)
        return region_outlines(result.preview, threshold, result.preview.shape[1] / result.width)
