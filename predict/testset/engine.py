"""A SeLo run over a testset: every sample's map, files, indicators and log lines, resumable.

The CLIs build a :class:`RunConfig` from argv; :func:`run_testset` does the rest.

A sample goes through three stages: :meth:`SeloRun.decode` (read its image, once for consecutive samples on
it), :meth:`SeloRun.score` (tiles, encoder, scores: in the calling thread) and :meth:`SeloRun.finish`
(probability map, filter, JPEG maps, indicators, report drawing); :meth:`SeloRun.commit` then logs it and
stores its record, in sample order. With ``workers > 1`` the stages overlap on threads: the next image
decodes while the encoder runs, and ``workers`` threads finish the samples already scored (OpenCV and
numpy release the GIL); with 1 the same code runs inline (:mod:`predict.testset.executors`). Each stage computes
what it computes serially, so maps, metrics and log.txt are those of ``workers=1`` bit for bit (times
aside). A sample carries its log lines and warnings to its commit as data (:class:`SampleLog`).

Memory: the large arrays in flight (decoded images, samples being finished) are admitted by a
:class:`~predict.testset.memory.ByteSemaphore` in sample order, within what ``memory_limit`` leaves beside the
process and the encoder's batch; the batch is lowered, with a log line, where even the largest sample alone
would not fit (:meth:`SeloRun.plan_memory`).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from tqdm import tqdm

from evaluations.metrics import PEAK_SEARCH_BYTES_PER_PIXEL, SeloScore, check_polygons
from evaluations.utils import log_metric_block
from predict.core.pipelines import PIPELINES, PipelineSpec
from predict.core.stripes import usable_cores
from predict.core.tiling import Tile
from predict.encoders.base import EncoderSpecModel
from predict.errors import first_line
from predict.io.annotations import Sample, SampleError, load_annotations
from predict.io.images import IMAGE_BYTES_PER_PIXEL, decoding_bytes, image_size
from predict.io.lock import folder_lock
from predict.io.maps import MAP_KINDS, MAPS_BYTES_PER_PIXEL, map_name, map_path, write_maps
from predict.io.report import draw_sample, shrink_factor, write_report
from predict.io.results import STAGES, MetricsStore
from predict.localisation import LoadedImage, StageTimer, TileVectorStore, load_image, probability_map_of, score_tiles
from predict.provenance import (NOT_COMPUTED, SettingsMismatchError, check_run_settings, code_version, digest_of,
                                image_key, log_mean_coverage, map_digests, reuse_problem, run_settings,
                                sample_identity, short)
from predict.errors import WriteError
from predict.runtime import return_free_memory
from predict.testset.evaluate import EVALUATION_CODE, evaluate_written_map
from predict.testset.executors import OrderedCommits, completed, run_executors
from predict.testset.memory import ByteSemaphore, Ticket, default_memory_limit, fitting_batch, resident_bytes

__all__ = ["RunConfig", "SeloRun", "SettingsMismatchError", "run_testset"]  # the error: for the CLIs to catch

# threads of a finish's colour-map stripes (the pool's other finishes use the other cores): with at most
# STRIPE_THREADS + 1 stripes in flight, the colour maps stay within the evaluation's bytes on any machine
# A result is keyed by the code that ran: this module, which runs the computation, and every project module it
# imports, transitively (provenance reads them), not a list of the modules believed to matter.
MAP_CODE = (__name__,)  # the testset run: scores, maps, filters, JPEGs and their evaluation
STRIPE_THREADS = 4


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


def finishing_bytes(pixels: int, keep_map: bool) -> int:
    """The arrays of finishing a sample of ``pixels``: writing its maps, then evaluating the map, decoded
    from its JPEG and kept through the peak search (``keep_map``) or decoded again after it."""
    return int(pixels * (MAPS_BYTES_PER_PIXEL + PEAK_SEARCH_BYTES_PER_PIXEL + keep_map))


@dataclass
class ImageRun:
    """Consecutive samples to compute on one image: its path, how many, its pixels (0 for a missing file,
    None where its header cannot tell)."""

    path: str
    users: int
    pixels: int | None

    def decoding_bytes(self, limit: int) -> int:
        """What decoding it holds at its peak (an image of unknown size: the whole budget, so it runs alone)."""
        return limit if self.pixels is None else decoding_bytes(self.path, self.pixels)

    def largest_sample(self) -> int:
        """Bytes of one of its samples alone: decoding, or the image and a finish beside it."""
        pixels = self.pixels or 0
        return max(decoding_bytes(self.path, pixels),
                   pixels * IMAGE_BYTES_PER_PIXEL + finishing_bytes(pixels, keep_map=False))


def image_runs(samples: list[Sample], folder: str) -> deque[ImageRun]:
    """The :class:`ImageRun` of ``samples`` in order (sizes from the files' headers)."""
    runs: deque[ImageRun] = deque()
    for sample in samples:
        path = os.path.join(folder, sample.jpg_name)
        if runs and runs[-1].path == path:
            runs[-1].users += 1
            continue
        try:
            height, width = image_size(path)
            pixels = height * width
        except Exception:  # decoding reports why the file is bad
            pixels = None if os.path.isfile(path) else 0
        runs.append(ImageRun(path, 1, pixels))
    return runs


class DecodedImage:
    """A decoded image (or why it could not be) shared by the consecutive samples on it; its bytes go back
    to the budget when the last of them is done with it."""

    def __init__(self, path: str, users: int, budget: ByteSemaphore):
        self.path, self.users, self.budget = path, users, budget
        self.loaded: LoadedImage | None = None
        self.error: Exception | None = None
        self.nbytes = 0
        self.seconds = 0.0  # decoding time, counted in the first sample's ``cut``
        self.notes: list[str] = []  # decoding's warnings, logged with the first sample
        self._lock = threading.Lock()

    def done_with(self) -> None:
        """One of its samples no longer needs it."""
        with self._lock:
            self.users -= 1
            last = self.users == 0
        if last:
            self.loaded = None
            self.budget.release(self.nbytes)


class SampleLog:
    """A sample's log lines and warnings (:mod:`predict.core.notes`), kept as data for its commit.

    The lines are held while an earlier sample is not committed, then written as they come
    (:meth:`go_live`): log.txt has the serial run's order, and a researcher tailing it sees each sample
    start. The warnings are written by its commit, after its metric block (or before its error line), where
    the serial run logged them.
    """

    def __init__(self):
        self.lines: list[tuple[int, str, tuple]] = []
        self.notes: list[str] = []
        self.following: SampleLog | None = None  # the next sample's, live once this one is committed
        self._logger: logging.Logger | None = None
        self._lock = threading.Lock()

    def info(self, message: str, *args) -> None:
        self._add(logging.INFO, message, args)

    def warning(self, message: str, *args) -> None:
        self._add(logging.WARNING, message, args)

    def _add(self, level: int, message: str, args: tuple) -> None:
        with self._lock:
            if self._logger is None:
                self.lines.append((level, message, args))
            else:
                self._logger.log(level, message, *args)

    def go_live(self, logger: logging.Logger) -> None:
        """Write the lines held so far to ``logger``, and the later ones as they come."""
        with self._lock:
            for level, message, args in self.lines:
                logger.log(level, message, *args)
            self.lines.clear()
            self._logger = logger


def sample_logs(count: int) -> list[SampleLog]:
    """``count`` logs, each followed by the next."""
    logs = [SampleLog() for _ in range(count)]
    for log, following in zip(logs, logs[1:]):
        log.following = following
    return logs


def evaluation_name(sample: Sample) -> str:
    """How the indicators' errors name a sample's map: ``"<image> (sample <idx>)"``."""
    return f"{sample.jpg_name} (sample {sample.idx})"


@dataclass
class Scored:
    """What :meth:`SeloRun.score` hands to :meth:`SeloRun.finish`."""

    image: DecodedImage
    image_key: str  # the image's content digest
    size: tuple[int, int]  # its height and width
    tiles: list[Tile]
    scores: np.ndarray
    timer: StageTimer
    keep_map: bool = True  # keep the decoded map through its evaluation (1 byte per pixel more)
    nonfinite: int = 0  # tile scores left out of the map (set by :meth:`SeloRun.finish_sample`)
    degenerate: bool = False  # the map localises nothing (idem)


@dataclass
class SampleOutcome:
    """A sample's result for :meth:`SeloRun.commit`: its score, or the error that failed it, or neither
    (its recorded result stands)."""

    sample: Sample
    log: SampleLog
    score: SeloScore | None = None
    scored: Scored | None = None
    error: Exception | None = None


class SeloRun:
    """One run over a testset: holds the encoder, the tile-vector store, the results store and the budget."""

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
        self.code = {"maps": code_version(*MAP_CODE), "evaluation": code_version(*EVALUATION_CODE)}
        self.budget = ByteSemaphore(config.memory_limit)  # the process's share set by plan_memory
        self.encoding_bytes = 0  # the encoder's working memory where it asks for it per sample (idem)
        self.drawn: set[int] = set()  # samples whose report drawing was written while finishing them

    def run(self, samples: list[Sample]) -> int:
        """Compute every sample not already complete; return the number of failed samples."""
        logs = sample_logs(len(samples))
        done = [self.reusable(sample, len(samples), log) for sample, log in zip(samples, logs)]
        runs = image_runs([sample for sample, skip in zip(samples, done) if not skip], self.config.src_data_path)
        batch_size = self.encoder.batch_size  # lowered for this run only, if at all (plan_memory)
        bar = tqdm(total=len(samples), desc=f"SeLo {self.config.pipeline.name}", unit="sample", dynamic_ncols=True)
        with run_executors(self.workers) as executors:
            commits = OrderedCommits(executors.commit, partial(self.commit, bar=bar))
            if logs:
                logs[0].go_live(self.logger)
            decoding: deque[Future] = deque()  # the images asked for, in order
            decode_next = partial(self.decode_next, runs, decoding, executors.decode)
            image = None
            try:
                self.plan_memory(runs)
                for sample, log, skip in zip(samples, logs, done):
                    if skip:
                        commits.add(completed(SampleOutcome(sample, log)))
                        continue
                    first = image is None or image.path != os.path.join(self.config.src_data_path, sample.jpg_name)
                    if first:
                        if not decoding:
                            decode_next()
                        current, image = runs.popleft(), decoding.popleft().result()
                        left = current.users
                        if runs and self.fits_beside(current, runs[0]):
                            decode_next()  # during this image's encoding
                    left -= 1
                    commits.add(self.score_then_finish(sample, log, image, first, len(samples), executors.finish))
                    if not left and not decoding and runs:
                        decode_next()  # after every finish of this image asked for its memory
                return commits.wait()
            finally:
                self.budget.close()  # nothing waits for memory once the run is over (or interrupted)
                self.encoder.batch_size = batch_size
                bar.close()

    def plan_memory(self, runs: deque[ImageRun]) -> None:
        """The budget for arrays in flight: ``memory_limit`` less the process now and the encoder's working
        memory at its batch, kept for the encoder through the run where the largest sample still fits
        beside it (the encoder never waits for memory). Otherwise the encoder asks for it beside each
        sample's image while it is scored, waiting its turn, and its batch is halved (for this run, with a
        log line) until that fits beside the largest image."""
        if self.config.pipeline.map_filter.median is not None:  # the median's compiled code, counted too
            from predict.core.cell_median import load_kernel
            load_kernel()
        limit, process = self.config.memory_limit, resident_bytes()
        largest = max((run.pixels or 0 for run in runs), default=0) * IMAGE_BYTES_PER_PIXEL
        working = getattr(self.encoder, "working_bytes", lambda batch: None)  # a duck-typed plug-in may lack it
        batch = fitting_batch(self.encoder.batch_size, working, limit - process - largest)
        if batch < self.encoder.batch_size:
            self.logger.info("Encoder batch lowered from %d to %d: at %d its working memory (%d MB), the process "
                             "(%d MB) and the largest image (%d MB) exceed the memory limit (%d MB)",
                             self.encoder.batch_size, batch, self.encoder.batch_size,
                             working(self.encoder.batch_size) // 10**6, process // 10**6, largest // 10**6,
                             limit // 10**6)
            self.encoder.batch_size = batch
        encoding = working(batch) or 0
        if limit - process - encoding >= max((run.largest_sample() for run in runs), default=0):
            limit -= encoding
        else:
            self.encoding_bytes = encoding
        self.budget.limit = max(1, limit - process)

    def fits_beside(self, current: ImageRun, following: ImageRun) -> bool:
        """Whether ``following`` may decode while ``current``'s samples are encoded: beside the current
        image and the larger of its finishes and the encoder's batch. Otherwise it is asked for after them, as strict order needs:
        a request granted before a finish it waits for would wait for itself."""
        pixels = current.pixels or 0
        largest = max(finishing_bytes(pixels, self.keeps_map(pixels)), self.encoding_bytes)
        return (pixels * IMAGE_BYTES_PER_PIXEL + following.decoding_bytes(self.budget.limit) + largest
                <= self.budget.limit)

    def keeps_map(self, pixels: int) -> bool:
        """Whether a sample's decoded map is kept through its evaluation: where that fits beside its image."""
        return pixels * IMAGE_BYTES_PER_PIXEL + finishing_bytes(pixels, keep_map=True) <= self.budget.limit

    def decode_next(self, runs: deque[ImageRun], decoding: deque[Future], executor) -> None:
        """Ask for the next image of ``runs``: its memory now (its place in the order), decoding on ``executor``."""
        run = runs[len(decoding)]
        ticket = self.budget.request(run.decoding_bytes(self.budget.limit))
        decoding.append(executor.submit(self.decode, run.path, run.users, ticket))

    def decode(self, path: str, users: int, ticket: Ticket) -> DecodedImage:
        """Read and decode ``path`` for its ``users`` consecutive samples, once ``ticket`` is granted."""
        self.budget.wait(ticket)
        image = DecodedImage(path, users, self.budget)
        timer = StageTimer()
        try:
            with timer.stage("cut"):
                image.loaded = load_image(path, image.notes)
            image.nbytes = image.loaded.pixels.nbytes
        except Exception as exc:  # reported by each of its samples, in order
            image.error = exc
        finally:  # the decoder's buffers are gone; the image stays
            self.budget.release(ticket.nbytes - image.nbytes)
        image.seconds = timer.seconds["cut"]
        return image

    def score_then_finish(self, sample: Sample, log: SampleLog, image: DecodedImage, first: bool, total: int,
                          executor) -> Future:
        """Score ``sample`` here, then finish it on ``executor`` once the budget grants its memory; the
        future of its :class:`SampleOutcome`."""
        if first:
            log.notes.extend(image.notes)
        try:
            with self.budget.holding(self.encoding_bytes, beside=image.nbytes):
                scored = self.score(sample, total, image, first, log)
        except Exception as exc:
            image.done_with()
            return completed(SampleOutcome(sample, log, error=exc))
        pixels = scored.size[0] * scored.size[1]
        scored.keep_map = self.keeps_map(pixels)
        ticket = self.budget.request(finishing_bytes(pixels, scored.keep_map), beside=image.nbytes)
        return executor.submit(self.finish, sample, scored, log, ticket)

    def score(self, sample: Sample, total: int, image: DecodedImage, first: bool, log: SampleLog) -> Scored:
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
                                    timer, sample.jpg_name, notes=log.notes)
        log.info("Calculate similarities in %.4fs", timer.seconds["cut"] + timer.seconds["sim"])
        return Scored(image, image.loaded.key, (height, width), tiles, scores, timer)

    def finish(self, sample: Sample, scored: Scored, log: SampleLog, ticket: Ticket) -> SampleOutcome:
        """:meth:`finish_sample` once ``ticket`` is granted; the sample's outcome. A write error is raised:
        nothing later could be saved either."""
        try:
            self.budget.wait(ticket)
            try:
                return SampleOutcome(sample, log, self.finish_sample(sample, scored, log), scored)
            except WriteError:
                raise
            except Exception as exc:  # one bad sample never loses the others; the message names the problem
                return SampleOutcome(sample, log, error=exc)
        finally:
            scored.image.done_with()
            return_free_memory()  # before the next finish's full-size buffers
            if ticket.granted:
                self.budget.release(ticket.nbytes)

    def finish_sample(self, sample: Sample, scored: Scored, log: SampleLog) -> SeloScore:
        """The probability map, its three JPEGs, the indicators and the report drawing of a scored sample."""
        config, timer, pixels = self.config, scored.timer, scored.image.loaded.pixels
        height, width = pixels.shape[:2]
        name = sample.jpg_name
        probmap, scored.nonfinite, scored.degenerate = probability_map_of(scored.tiles, scored.scores, height, width,
                                                                          config.pipeline, timer, name, notes=log.notes)
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

    def commit(self, outcome: SampleOutcome, bar: tqdm) -> bool:
        """Log a sample and store its record (or its error), in sample order; True when it failed."""
        sample, log = outcome.sample, outcome.log
        log.go_live(self.logger)
        if outcome.error is not None:
            self.log_notes(log)
            message = first_line(outcome.error)
            self.store.record_error(sample.idx, sample.jpg_name, sample.caption, message,
                                    identity=self.store.current_identity(sample.idx))
            self.logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, message)
        else:
            if outcome.score is not None:
                self.record(sample, outcome.score, outcome.scored)
            self.log_notes(log)
        if log.following is not None:
            log.following.go_live(self.logger)
        bar.set_postfix_str(sample.jpg_name)
        bar.update()
        return outcome.error is not None

    def record(self, sample: Sample, score: SeloScore, scored: Scored) -> None:
        """Store a finished sample's record, bound to its identity and map files, and log its metric block."""
        seconds = {stage: scored.timer.seconds[stage] for stage in (*STAGES, "eval")}
        self.store.set_current_image(sample.idx, scored.image_key)
        record = self.store.record(sample.idx, sample.jpg_name, sample.caption, score, n_tiles=len(scored.tiles),
                                   nonfinite_tiles=scored.nonfinite, degenerate=scored.degenerate, seconds=seconds,
                                   identity=sample_identity(self.settings_digest, sample.caption, sample.polygons,
                                                            scored.image_key, **self.code),
                                   size=list(scored.size), maps=map_digests(self.map_paths(sample.idx)))
        log_metric_block(self.logger, record, map_path(self.config.cache_path, "probmap", sample.idx))

    def log_notes(self, log: SampleLog) -> None:
        for message in log.notes:
            self.logger.warning("%s", message)

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
            except (OSError, SampleError):  # gone, or no regular file: the sample's run says which
                image = None
            self.store.set_current_image(sample.idx, image)
            problem = reuse_problem(record, sample_identity(self.settings_digest, sample.caption, sample.polygons, image,
                                                            **self.code), self.map_paths(sample.idx))
        if problem is None:
            self.store.rename(sample.idx, sample.jpg_name)
            log.info("Skipping %d/%d: %s (already complete)", sample.idx, total, sample.jpg_name)
        elif problem != NOT_COMPUTED:
            log.info("Recomputing %d/%d: %s (%s)", sample.idx, total, sample.jpg_name, problem)
        return problem is None

    def log_summary(self) -> None:
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
            check_run_settings(config.cache_path, run.store.settings, run.settings)
        run.store.set_settings(run.settings_digest, run.settings)
        run.store.set_current(samples, config.src_anno_path)
        failures = run.run(samples)
        run.log_summary()
        if config.report:
            write_report(config.cache_path, config.src_anno_path, drawn=run.drawn)
    return run, failures

