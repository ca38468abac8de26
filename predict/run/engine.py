"""A SeLo run over a testset: every sample's map, files, indicators and log lines, resumable.

The CLIs build a :class:`RunConfig` from argv; :func:`run_testset` does the rest.

A sample goes through three named steps: :meth:`SeloRun.prepare_image` (read and decode its image, once
for consecutive samples on it), :meth:`SeloRun.score_sample` (tiles, encoder, scores) and
:meth:`SeloRun.finish_sample` (probability map, filter, the JPEG maps, indicators, report drawing); then
:meth:`SeloRun.commit_sample` logs it and stores its record. With ``workers > 1`` they overlap: a thread
decodes the next image while the main thread runs the encoder on the current one and a pool of
``workers`` threads finishes the samples already scored (OpenCV and numpy release the GIL). Samples are
committed in sample order and every step computes what it computes serially, so maps, metrics and
log.txt are those of ``workers=1`` bit for bit (the log's times aside). The large arrays in flight (decoded
images, maps being finished) are bounded by a byte budget so the run stays near ``memory_limit``.
"""
from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

from evaluations.metrics import SeloScore, check_polygons
from evaluations.utils import log_metric_block
from predict.core.pipelines import PIPELINES, PipelineSpec
from predict.core.stripes import usable_cores
from predict.core.tiling import Tile
from predict.encoders.base import EncoderSpecModel
from predict.io.annotations import Sample, SampleError, load_annotations
from predict.io.atomic import WriteError
from predict.io.checks import first_line
from predict.io.lock import folder_lock
from predict.io.maps import MAP_KINDS, map_name, map_path, write_maps
from predict.io.report import draw_sample, shrink_factor, write_report
from predict.io.results import STAGES, MetricsStore
from predict.provenance import (NOT_COMPUTED, SettingsMismatchError, check_settings, digest_of, evaluation_version,
                                image_key, log_mean_coverage, map_digests, maps_version, reuse_problem, run_settings,
                                sample_identity, short)
from predict.run.evaluate import evaluate_written_map
from predict.run.localise import LoadedImage, load_image, probability_map_of, score_tiles
from predict.run.timing import StageTimer
from predict.run.vectors import TileVectorStore
from predict.runtime import return_free_memory

__all__ = ["RunConfig", "SeloRun", "SettingsMismatchError", "run_testset"]  # the error: for the CLIs to catch

MEMORY_PER_CORE = 700_000_000  # bytes of resident memory a run aims at per usable core (default)
DECODE_BYTES_PER_PIXEL = 6  # decoding an image: the decoder's buffer and the BGR array (measured)
IMAGE_BYTES_PER_PIXEL = 3  # a decoded BGR image, kept for its samples
# finishing a sample (measured with the like-SLM 10000 x 10001 image): the map, its JPEG and the colour maps'
# stripes, then the evaluation: the decoded map and the peak search's two full-size buffers (3 bytes per
# pixel), or only the two when the map is decoded again after the search (2)
FINISH_BYTES_PER_PIXEL = {True: 3.5, False: 2.5}  # by whether the decoded map is kept through its evaluation
# threads of a finish's colour-map stripes (the pool's other finishes use the other cores): with at most
# STRIPE_THREADS + 1 stripes in flight, the colour maps stay within the evaluation's bytes on any machine
STRIPE_THREADS = 4

def available_bytes() -> int | None:
    """MemAvailable of ``/proc/meminfo`` (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def default_memory_limit() -> int:
    """``MEMORY_PER_CORE`` per usable core (1.4 GB on 2 cores), at most half the memory available now."""
    limit = MEMORY_PER_CORE * usable_cores()
    available = available_bytes()
    return min(limit, available // 2) if available else limit


@dataclass
class RunConfig:
    """What a run over a testset does (everything but the encoder).

    Attributes:
        cache_path: output folder (maps, log.txt, metrics.json/csv, report.html, tile_vectors/).
        src_data_path: folder of the images.
        src_anno_path: annotation file in the SLM schema.
        pipeline: the :class:`~predict.core.pipelines.PipelineSpec` (steps included).
        seed: seed of the query's word shuffles (v2).
        overwrite: recompute samples that are already complete, and their tile vectors; replaces the
            folder's recorded run settings.
        vector_cache: keep tile vectors on disk under ``<cache_path>/tile_vectors``.
        report: write ``report.html`` at the end (each sample drawn as it is finished).
        workers: threads finishing samples while the encoder runs; 1 runs every step in turn in the
            calling thread; 0 picks :func:`default_workers`.
        memory_limit: bytes of resident memory the run aims to stay under: decoding ahead and finishing
            samples in parallel wait while the budget it leaves is used (a sample larger than the budget runs
            alone).
    """

    cache_path: str
    src_data_path: str
    src_anno_path: str
    pipeline: PipelineSpec = field(default_factory=lambda: PIPELINES["v1"])
    seed: int = 0
    overwrite: bool = False
    vector_cache: bool = True
    report: bool = True
    workers: int = 0
    memory_limit: int = field(default_factory=default_memory_limit)

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError(f"workers: {self.workers} is negative (0 picks the default, 1 runs serially)")
        if self.memory_limit <= 0:
            raise ValueError(f"memory_limit: {self.memory_limit} bytes is not positive")


def default_workers() -> int:
    """Threads finishing samples by default: the usable cores (the memory budget bounds them further)."""
    return usable_cores()


def resident_bytes(peak: bool = False) -> int:
    """This process's resident memory now (``/proc/self/statm``), or its peak so far (``ru_maxrss``)."""
    if not peak:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def image_pixels(path: str) -> int:
    """Pixels of the image at ``path``, from its header; 0 when PIL cannot tell (decoding reports why a
    file is bad; PIL also refuses sizes over twice its ``MAX_IMAGE_PIXELS``)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:
        return 0
    return width * height


class ByteBudget:
    """Bytes of the large arrays in flight (decoded images, samples being finished), kept within ``limit``.

    Finishes are queued in sample order (:meth:`queue`) and started by the budget when they are admitted.
    The first one waiting (the head) is admitted when it fits, or when no other finish is in flight (one
    larger than the whole budget runs alone). A later finish, and decoding the next image
    (:meth:`acquire_image`), may go ahead of it while they fit and leave it its room: the images, the
    finishes admitted ahead, the request and the largest finish queued before it (for a decode: the
    largest queued, or ``reserved`` for the current image's finishes still to come) fit the limit; the
    finishes admitted in order are left out, as they end before the head needs their room. So the encoder
    and smaller samples use the cores while a large image's samples finish one by one, and never delay them.
    """

    def __init__(self, limit: int = 0):
        self.limit = limit
        self.reserved = 0
        self.used = {"image": 0, "finish": 0}
        self.ahead = 0  # bytes of the finishes admitted ahead of an earlier one (part of used["finish"])
        self.queued: list[tuple[int, Callable[[bool], None]]] = []  # waiting finishes: bytes, start
        self._changed = threading.Condition()

    def _total(self) -> int:
        return self.used["image"] + self.used["finish"]

    def _leaves_room(self, nbytes: int, before: int) -> bool:
        """Whether ``nbytes`` fits now, and beside the images, the finishes ahead and ``before``."""
        return (self._total() + nbytes <= self.limit
                and self.used["image"] + self.ahead + nbytes + before <= self.limit)

    def acquire_image(self, nbytes: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._leaves_room(nbytes, max(self.reserved, *self._queued_bytes(), 0))
                                   or not self._total())
            self.used["image"] += nbytes

    def _queued_bytes(self) -> list[int]:
        return [nbytes for nbytes, _ in self.queued]

    def queue(self, nbytes: int, start: Callable[[bool], None]) -> None:
        """A finish of ``nbytes``, the next in sample order: ``start(ahead)`` is called once it is admitted
        (from whichever thread frees the room), with whether it went ahead of an earlier finish."""
        with self._changed:
            self.queued.append((nbytes, start))
        self._admit()

    def _admit(self) -> None:
        with self._changed:
            admitted, waiting, largest_before = [], [], 0
            for nbytes, start in self.queued:
                if not waiting:  # every earlier finish is admitted: this is the head
                    fits = self._total() + nbytes <= self.limit or not self.used["finish"]
                    ahead = False
                else:
                    fits, ahead = self._leaves_room(nbytes, largest_before), True
                if fits:
                    self.used["finish"] += nbytes
                    self.ahead += nbytes if ahead else 0
                    admitted.append((start, ahead))
                else:
                    waiting.append((nbytes, start))
                    largest_before = max(largest_before, nbytes)
            self.queued = waiting
            if admitted:
                self._changed.notify_all()
        for start, ahead in admitted:  # outside the lock: starting may submit work or release bytes
            start(ahead)

    def release(self, kind: str, nbytes: int, ahead: bool = False) -> None:
        with self._changed:
            self.used[kind] -= nbytes
            self.ahead -= nbytes if ahead else 0
            self._changed.notify_all()
        self._admit()

    def set(self, limit: int | None = None, reserved: int | None = None) -> None:
        with self._changed:
            self.limit = self.limit if limit is None else limit
            self.reserved = self.reserved if reserved is None else reserved
            self._changed.notify_all()
        self._admit()


class PreparedImage:
    """A decoded image (or why it could not be) shared by the consecutive samples on it; its bytes are
    handed back to the budget when the last of them is finished."""

    def __init__(self, path: str, users: int, budget: ByteBudget, nbytes: int):
        self.path, self.users, self.budget, self.nbytes = path, users, budget, nbytes
        self.loaded: LoadedImage | None = None
        self.error: Exception | None = None
        self.seconds = 0.0  # decoding time, counted in the first sample's ``cut``
        self._lock = threading.Lock()

    def done_with(self) -> None:
        """One of its samples no longer needs it."""
        with self._lock:
            self.users -= 1
            last = self.users == 0
        if last:
            self.loaded = None
            self.budget.release("image", self.nbytes)


class SampleLog:
    """A sample's log lines: held while an earlier sample is not committed yet, then written as they come
    (:meth:`go_live`), so log.txt has the serial run's order. Warnings raised while the sample is worked on
    (in whichever thread) come after its lines, as the serial run logged them."""

    def __init__(self):
        self.records: list[tuple[int, str, tuple]] = []
        self.warnings: list[str] = []
        self._logger: logging.Logger | None = None
        self._lock = threading.Lock()

    def info(self, message: str, *args) -> None:
        self._add(logging.INFO, message, args)

    def warning(self, message: str, *args) -> None:
        self._add(logging.WARNING, message, args)

    def _add(self, level: int, message: str, args: tuple) -> None:
        with self._lock:
            if self._logger is None:
                self.records.append((level, message, args))
            else:
                self._logger.log(level, message, *args)

    def go_live(self, logger: logging.Logger) -> None:
        """Write the lines held so far to ``logger``, and the later ones as they come."""
        with self._lock:
            for level, message, args in self.records:
                logger.log(level, message, *args)
            self.records.clear()
            self._logger = logger


_current = threading.local()  # the SampleLog of the sample the thread works on


@contextmanager
def collecting_warnings(log: SampleLog):
    """Within this block, warnings raised by the calling thread go to ``log`` (see :meth:`SeloRun.run`)."""
    previous, _current.log = getattr(_current, "log", None), log
    try:
        yield
    finally:
        _current.log = previous


def evaluation_name(sample: Sample) -> str:
    """How the indicators' errors name a sample's map: ``"<image> (sample <idx>)"``."""
    return f"{sample.jpg_name} (sample {sample.idx})"


def _completed(function, *args) -> Future:
    """``function(*args)`` run now, as a completed future (the serial run's executor)."""
    future = Future()
    try:
        future.set_result(function(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


@dataclass
class Scored:
    """What :meth:`SeloRun.score_sample` hands to :meth:`SeloRun.finish_sample`."""

    image: PreparedImage
    image_key: str  # the image's content digest
    size: tuple[int, int]  # its height and width
    tiles: list[Tile]
    scores: np.ndarray
    timer: StageTimer
    keep_map: bool = True  # keep the decoded map through its evaluation (1 byte per pixel more)
    nonfinite: int = 0  # tile scores left out of the map (set by :meth:`SeloRun.finish_sample`)
    degenerate: bool = False  # the map localises nothing (idem)


class SeloRun:
    """One run over a testset: holds the encoder, the tile-vector store and the results store."""

    def __init__(self, config: RunConfig, encoder: EncoderSpecModel, logger: logging.Logger):
        self.config = config
        self.encoder = encoder
        self.logger = logger
        cache_dir = os.path.join(config.cache_path, "tile_vectors") if config.vector_cache else None
        self.workers = config.workers or default_workers()
        self.vectors = TileVectorStore(encoder, cache_dir, refresh=config.overwrite, cut_ahead=self.workers > 1)
        self.store = MetricsStore(config.cache_path)
        self.settings = run_settings(config.pipeline, config.seed, encoder)
        self.settings_digest = short(digest_of(self.settings))
        # the code versions in every sample's identity, taken before the run: the first commit would otherwise
        # read the map code's sources while the encoder runs ahead
        maps_version(), evaluation_version()
        self.budget = ByteBudget()
        self.drawn: set[int] = set()  # samples whose report drawing was written while finishing them

    def prepare_image(self, path: str, users: int) -> PreparedImage:
        """Read and decode ``path`` for its ``users`` consecutive samples, within the memory budget."""
        # an image of unknown size is decoded with nothing else in flight
        decoding = image_pixels(path) * DECODE_BYTES_PER_PIXEL or max(self.budget.limit, 1)
        self.budget.acquire_image(decoding)
        prepared = PreparedImage(path, users, self.budget, 0)
        timer = StageTimer()
        try:
            with timer.stage("cut"):
                prepared.loaded = load_image(path)
            prepared.nbytes = prepared.loaded.pixels.nbytes
        except Exception as exc:  # reported by each of its samples, in order
            prepared.error = exc
        finally:  # the decoder's buffers are gone; the image stays
            self.budget.release("image", decoding - prepared.nbytes)
        prepared.seconds = timer.seconds["cut"]
        return prepared

    def score_sample(self, sample: Sample, total: int, image: PreparedImage, first: bool, log: SampleLog) -> Scored:
        """The sample's tiles and their scores (the encoder, in the calling thread)."""
        spec = self.config.pipeline
        log.info("Processing %d/%d: %s", sample.idx, total, sample.jpg_name)
        log.info("Corresponding text: %s", sample.caption)
        if sample.problem:
            raise SampleError(sample.problem)
        timer = StageTimer()
        if first:
            timer.seconds["cut"] += image.seconds
        if image.error is not None:
            raise image.error
        height, width = image.loaded.pixels.shape[:2]
        log.info("img size:%dx%d", height, width)
        # polygons the indicators cannot use fail the sample before the encoder's work and any map file
        check_polygons(sample.polygons, (height, width), evaluation_name(sample))
        log.info("Start split images with step %s", "_".join(map(str, spec.steps)))
        tiles, scores = score_tiles(image.loaded, sample.caption, self.encoder, spec, self.vectors, self.config.seed,
                                    timer, sample.jpg_name)
        log.info("Calculate similarities in %.4fs", timer.seconds["cut"] + timer.seconds["sim"])
        return Scored(image, image.loaded.key, (height, width), tiles, scores, timer)

    def finish_sample(self, sample: Sample, scored: Scored, log: SampleLog) -> SeloScore:
        """The probability map, its three JPEGs, the indicators and the report drawing of a scored sample."""
        config, timer, pixels = self.config, scored.timer, scored.image.loaded.pixels
        height, width = pixels.shape[:2]
        name = sample.jpg_name
        probmap, scored.nonfinite, scored.degenerate = probability_map_of(scored.tiles, scored.scores, height, width,
                                                                          config.pipeline, timer, name)
        log.info("Generate heatmap in %.4fs", timer.seconds["gnt"])
        if scored.degenerate:
            log.warning("Sample %d (%s): degenerate map (its tile scores localise nothing); flagged "
                        "\"degenerate\" in metrics.json and left out of the mean", sample.idx, name)
        with timer.stage("flt"):
            log.info("Saving heatmap in %s ...", map_path(config.cache_path, "heatmap", sample.idx))
            written, background = write_maps(config.cache_path, sample.idx, pixels, probmap,
                                             workers=min(usable_cores(), STRIPE_THREADS),
                                             shrink=shrink_factor(height, width) if config.report else None)
        del probmap
        # on the map as decoded from its JPEG, as the original's evaluator read it; short of memory, decoded
        # again after the peak search rather than kept through it
        with timer.stage("eval"):
            score = evaluate_written_map(written, sample.polygons, evaluation_name(sample), scored.keep_map)
        del written
        if config.report:
            draw_sample(config.cache_path, sample.idx, background, map_name("addmap", sample.idx),
                        (height, width), sample.polygons, score.circles, score.centers)
            self.drawn.add(sample.idx)
        return score

    def commit_sample(self, sample: Sample, outcome: Future, log: SampleLog) -> bool:
        """Log the sample and store its record (or its error), in sample order; True when it failed.
        ``outcome`` gives ``(score, scored)``, or None for a sample skipped."""
        log.go_live(self.logger)
        try:
            result = outcome.result()
        except (WriteError, CancelledError):
            raise  # disk full or read-only: no later sample could be saved either; or the run was interrupted
        except Exception as exc:  # one bad sample never loses the others; the message names the problem
            for message in log.warnings:
                self.logger.warning("%s", message)
            message = first_line(exc)
            self.store.record_error(sample.idx, sample.jpg_name, sample.caption, message,
                                    identity=self.store.current_identity(sample.idx))
            self.logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, message)
            return True
        if result is not None:  # None: skipped
            score, scored = result
            seconds = {stage: scored.timer.seconds[stage] for stage in (*STAGES, "eval")}
            self.store.set_current_image(sample.idx, scored.image_key)
            record = self.store.record(sample.idx, sample.jpg_name, sample.caption, score, n_tiles=len(scored.tiles),
                                       nonfinite_tiles=scored.nonfinite, degenerate=scored.degenerate, seconds=seconds,
                                       identity=sample_identity(self.settings_digest, sample.caption, sample.polygons,
                                                                scored.image_key),
                                       size=list(scored.size), maps=map_digests(self.map_paths(sample.idx)))
            log_metric_block(self.logger, record, map_path(self.config.cache_path, "probmap", sample.idx))
        for message in log.warnings:
            self.logger.warning("%s", message)
        return False

    def map_paths(self, idx: int) -> dict[str, str]:
        """``{kind: path}`` of sample ``idx``'s three maps."""
        return {kind: map_path(self.config.cache_path, kind, idx) for kind in MAP_KINDS}

    def reusable(self, sample: Sample, total: int, log: SampleLog) -> bool:
        """Whether ``sample``'s recorded result stands (logged as skipped): its identity (settings, caption,
        polygons, image content, code) is the recorded one and its maps are the recorded files; when one is
        recorded but cannot be reused, the log says why. A sample whose image was renamed keeps its result."""
        if self.config.overwrite:
            return False
        problem = self.store.unusable.get(sample.idx)
        if problem is None:
            record = self.store.get(sample.idx)
            if record is None:  # never computed: nothing to say, and no image to hash
                return False
            try:
                image = image_key(os.path.join(self.config.src_data_path, sample.jpg_name))
            except OSError:
                image = None
            self.store.set_current_image(sample.idx, image)
            problem = reuse_problem(record, sample_identity(self.settings_digest, sample.caption, sample.polygons, image),
                                    self.map_paths(sample.idx))
        if problem is None:
            self.store.rename(sample.idx, sample.jpg_name)
            log.info("Skipping %d/%d: %s (already complete)", sample.idx, total, sample.jpg_name)
        elif problem != NOT_COMPUTED:
            log.info("Recomputing %d/%d: %s (%s)", sample.idx, total, sample.jpg_name, problem)
        return problem is None

    def _finish_and_release(self, sample: Sample, scored: Scored, log: SampleLog, nbytes: int,
                            ahead: bool) -> SeloScore:
        try:
            with collecting_warnings(log):
                return self.finish_sample(sample, scored, log)
        finally:
            scored.image.done_with()
            return_free_memory()  # before the next finish's full-size buffers
            self.budget.release("finish", nbytes, ahead)

    def run(self, samples: list[Sample]) -> int:
        """Process every sample not already complete; return the number of failed samples."""
        logs = [SampleLog() for _ in samples]  # emitted in sample order, when each sample is committed
        complete = [self.reusable(sample, len(samples), log) for sample, log in zip(samples, logs)]
        groups: list[tuple[str, int]] = []  # (image path, samples on it): consecutive samples share a decode
        for sample in (sample for sample, done in zip(samples, complete) if not done):
            path = os.path.join(self.config.src_data_path, sample.jpg_name)
            if groups and groups[-1][0] == path:
                groups[-1] = (path, groups[-1][1] + 1)
            else:
                groups.append((path, 1))
        parallel = self.workers > 1
        decoder = ThreadPoolExecutor(1, thread_name_prefix="selo-decode") if parallel else None
        finisher = ThreadPoolExecutor(self.workers, thread_name_prefix="selo-finish") if parallel else None
        prepared: deque[Future] = deque()

        def prepare_next():
            if groups:
                path, users = groups.pop(0)
                prepared.append(decoder.submit(self.prepare_image, path, users) if parallel
                                else _completed(self.prepare_image, path, users))

        # one thread commits in sample order as soon as each sample is finished, so a killed run loses only
        # the samples in flight, not those finished while the main thread is busy with the encoder
        committer = ThreadPoolExecutor(1, thread_name_prefix="selo-commit") if parallel else None
        commits: deque[Future] = deque()
        failures = 0
        bar = tqdm(total=len(samples), desc=f"SeLo {self.config.pipeline.name}", unit="sample", dynamic_ncols=True)

        stopped = threading.Event()  # a write failed: no later sample is committed, as in the serial run

        def committed(*args) -> bool:
            if stopped.is_set():
                return False
            try:
                failed = self.commit_sample(*args)
            except WriteError:
                stopped.set()
                raise
            bar.set_postfix_str(args[0].jpg_name)
            bar.update()
            return failed

        def commit(sample: Sample, outcome: Future, log: SampleLog):
            nonlocal failures
            commits.append(committer.submit(committed, sample, outcome, log) if parallel
                           else _completed(committed, sample, outcome, log))
            while commits and commits[0].done():
                failures += commits.popleft().result()  # a WriteError stops the run here

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = self._route_warning
            image = outcome = None
            try:
                for sample, done, log in zip(samples, complete, logs):
                    if done:
                        commit(sample, _completed(lambda: None), log)
                        continue
                    path = os.path.join(self.config.src_data_path, sample.jpg_name)
                    first = image is None or image.path != path
                    if first:
                        if not prepared:
                            prepare_next()
                        image = prepared.popleft().result()
                        left = image.users
                        # the next image is decoded while this one is encoded, if it fits beside its finishes
                        pixels = image.nbytes // IMAGE_BYTES_PER_PIXEL
                        self.budget.set(reserved=int(pixels * FINISH_BYTES_PER_PIXEL[False]))
                        if parallel:
                            prepare_next()
                    left -= 1
                    outcome = Future()  # (score, scored), or what went wrong
                    if parallel:  # queued now: its lines reach the log as soon as the samples before it are in
                        commit(sample, outcome, log)
                    try:
                        with collecting_warnings(log):
                            scored = self.score_sample(sample, len(samples), image, first, log)
                    except Exception as exc:
                        image.done_with()
                        outcome.set_exception(exc)
                    else:
                        self._submit_finish(sample, scored, log, finisher, outcome)
                    if not left:  # every finish of this image is asked for
                        self.budget.set(reserved=0)
                    if not parallel:
                        commit(sample, outcome, log)
                while commits:
                    failures += commits.popleft().result()
            finally:
                if outcome is not None and not outcome.done():
                    outcome.cancel()  # interrupted while scoring: its commit does not wait for it
                # nothing waits for memory once the run is over; finishes admitted now and not started are cancelled
                self.budget.set(limit=sys.maxsize, reserved=0)
                for pool in (decoder, finisher, committer):
                    if pool is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                bar.close()
        return failures

    def _submit_finish(self, sample: Sample, scored: Scored, log: SampleLog, finisher: ThreadPoolExecutor | None,
                       outcome: Future) -> None:
        """Finish ``scored`` in the pool once the budget admits its bytes (or now, without a pool), into
        ``outcome``; the decoded map is kept through its evaluation where that fits too."""
        self._learn_baseline()
        pixels = scored.image.loaded.pixels.shape[0] * scored.image.loaded.pixels.shape[1]
        scored.keep_map = pixels * (IMAGE_BYTES_PER_PIXEL + FINISH_BYTES_PER_PIXEL[True]) <= self.budget.limit
        nbytes = int(pixels * FINISH_BYTES_PER_PIXEL[scored.keep_map])

        def resolve(finished: Future) -> None:
            if finished.cancelled():  # the run was interrupted
                outcome.cancel()
                return
            with suppress(InvalidStateError):  # an interrupt cancelled the outcome meanwhile: nothing to hand over
                if finished.exception() is not None:
                    outcome.set_exception(finished.exception())
                else:
                    outcome.set_result((finished.result(), scored))

        if finisher is None:
            resolve(_completed(self._finish_and_release, sample, scored, log, 0, False))
            return

        def start(ahead: bool) -> None:
            try:
                finished = finisher.submit(self._finish_and_release, sample, scored, log, nbytes, ahead)
            except RuntimeError:  # the pool is shut down: the run was interrupted
                outcome.cancel()
                return
            finished.add_done_callback(resolve)

        self.budget.queue(nbytes, start)

    def _learn_baseline(self) -> None:
        """Once, after the first sample is scored (the encoder at its peak): the budget for arrays in
        flight is ``memory_limit`` less what the process uses besides them."""
        if self.budget.limit == 0:
            if self.config.pipeline.map_filter.median is not None:  # the median's compiled code, counted too
                from predict.core.cell_median import load_kernel
                load_kernel()
            baseline = resident_bytes(peak=True) - self.budget.used["image"]
            self.budget.set(limit=max(1, self.config.memory_limit - baseline))

    def _route_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, Image.DecompressionBombWarning):
            return  # :func:`image_pixels` reads only the header of a large image: nothing to warn about
        log = getattr(_current, "log", None)
        if log is not None:
            log.warnings.append(str(message))
        else:
            self.logger.warning("%s", message)

    def finish(self) -> None:
        """The mean block and the Time-Cut/Sim/Gnt/Flt/Total lines, as the original ends its log."""
        log_metric_block(self.logger, self.store.mean(), None)
        log_mean_coverage(self.logger, self.store, self.config.src_anno_path)
        # summed over the per-sample records, so a resumed run still reports the whole testset
        counted = [self.store.get(idx) for idx in self.store.mean_over]
        timings = {stage: sum(r.get("seconds", {}).get(stage, 0.0) for r in counted)
                   for stage in (*STAGES, "eval")}
        timings["total"] = sum(timings[stage] for stage in STAGES)  # generation only, as the original's Total
        self.store.set_timings(timings)
        for stage in STAGES:
            self.logger.info("Time-%s: %.4fs", stage.capitalize(), timings[stage])
        self.logger.info("Time-Total: %.4fs", timings["total"])
        self.logger.info("Time-Eval: %.4fs", timings["eval"])


def run_testset(config: RunConfig, encoder: EncoderSpecModel, logger: logging.Logger,
                samples: list[Sample] | None = None) -> tuple[SeloRun, int]:
    """Run every sample of ``config.src_anno_path`` (or ``samples``, read from it already); return the run
    and its failure count.

    Raises:
        FolderBusyError: another live run writes ``config.cache_path``.
        SettingsMismatchError: the folder holds results of other run settings (and not ``config.overwrite``).
    """
    if samples is None:
        samples = load_annotations(config.src_anno_path)
    with folder_lock(config.cache_path):  # one writer per folder (raises FolderBusyError)
        run = SeloRun(config, encoder, logger)
        if not config.overwrite:  # stops before any work
            check_settings(config.cache_path, run.store.settings, run.settings)
        run.store.set_settings(run.settings_digest, run.settings)
        run.store.set_current(samples, config.src_anno_path)
        failures = run.run(samples)
        run.finish()
        if config.report:
            write_report(config.cache_path, config.src_anno_path, drawn=run.drawn)
    return run, failures

