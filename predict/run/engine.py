"""A SeLo run over a testset: every sample's map, files, indicators and log lines, resumable.

The CLIs build a :class:`RunConfig` from argv; :func:`run_testset` does the rest.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from tqdm import tqdm

from evaluations.metrics import evaluate_gray
from evaluations.utils import log_metric_block
from predict.core.pipelines import PIPELINES, PipelineSpec
from predict.encoders.base import EncoderSpecModel
from predict.encoders.identity import identity_digest
from predict.io.annotations import Sample, SampleError, load_annotations
from predict.io.atomic import WriteError
from predict.io.checks import first_line
from predict.io.lock import folder_lock
from predict.io.logs import warnings_logged
from predict.io.maps import map_path, save_maps
from predict.io.report import write_report
from predict.io.results import STAGES, MetricsStore
from predict.run.localise import LoadedImage, load_image, probability_map_of, score_tiles
from predict.run.provenance import (NOT_COMPUTED, SettingsMismatchError, check_settings, image_digest,
                                    log_mean_coverage, reuse_problem, run_settings, sample_identity)
from predict.run.timing import StageTimer
from predict.run.vectors import TileVectorStore

__all__ = ["RunConfig", "SeloRun", "SettingsMismatchError", "run_testset"]  # the error: for the CLIs to catch


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
        report: write ``report.html`` at the end.
    """

    cache_path: str
    src_data_path: str
    src_anno_path: str
    pipeline: PipelineSpec = field(default_factory=lambda: PIPELINES["v1"])
    seed: int = 0
    overwrite: bool = False
    vector_cache: bool = True
    report: bool = True


class SeloRun:
    """One run over a testset: holds the encoder, the tile-vector store and the results store."""

    def __init__(self, config: RunConfig, encoder: EncoderSpecModel, logger: logging.Logger):
        self.config = config
        self.encoder = encoder
        self.logger = logger
        cache_dir = os.path.join(config.cache_path, "tile_vectors") if config.vector_cache else None
        self.vectors = TileVectorStore(encoder, cache_dir, refresh=config.overwrite)
        self.store = MetricsStore(config.cache_path)
        self.settings = run_settings(config.pipeline, config.seed, encoder)
        self.settings_digest = identity_digest(self.settings)
        self.image: LoadedImage | None = None

    def load_image(self, path: str, timer: StageTimer) -> LoadedImage:
        """Decode the image once for all consecutive samples on it (timed as ``cut``)."""
        with timer.stage("cut"):
            if self.image is None or self.image.path != path:
                self.image = None  # free the previous image before decoding the next one
                self.image = load_image(path)
        return self.image


    def reusable(self, sample: Sample, total: int) -> bool:
        """Whether ``sample``'s recorded result stands (logged as skipped); when one is recorded but cannot be
        reused, the log says why."""
        if self.config.overwrite:
            return False
        problem = self.store.unusable.get(sample.idx) or reuse_problem(
            self.store.get(sample.idx),
            sample_identity(self.settings_digest, sample, image_digest(os.path.join(self.config.src_data_path, sample.jpg_name))),
            self.config.cache_path, sample.idx)
        if problem is None:
            self.logger.info("Skipping %d/%d: %s (already complete)", sample.idx, total, sample.jpg_name)
        elif problem != NOT_COMPUTED:
            self.logger.info("Recomputing %d/%d: %s (%s)", sample.idx, total, sample.jpg_name, problem)
        return problem is None

    def process(self, sample: Sample, total: int) -> None:
        config, log, spec = self.config, self.logger, self.config.pipeline
        name = sample.jpg_name
        log.info("Processing %d/%d: %s", sample.idx, total, name)
        log.info("Corresponding text: %s", sample.caption)
        if sample.problem:
            raise SampleError(sample.problem)
        timer = StageTimer()
        image = self.load_image(os.path.join(config.src_data_path, name), timer)
        height, width = image.pixels.shape[:2]
        log.info("img size:%dx%d", height, width)
        log.info("Start split images with step %s", "_".join(map(str, spec.steps)))
        tiles, scores = score_tiles(image, sample.caption, self.encoder, spec, self.vectors, config.seed, timer, name)
        log.info("Calculate similarities in %.4fs", timer.seconds["cut"] + timer.seconds["sim"])
        probmap = probability_map_of(tiles, scores, height, width, spec, timer, name)
        log.info("Generate heatmap in %.4fs", timer.seconds["gnt"])
        if probmap.degenerate:
            log.warning("Sample %d (%s): degenerate map (its tile scores localise nothing); flagged "
                        "\"degenerate\" in metrics.json and left out of the mean", sample.idx, name)
        with timer.stage("flt"):
            log.info("Saving heatmap in %s ...", map_path(config.cache_path, "heatmap", sample.idx))
            decoded = save_maps(config.cache_path, sample.idx, image.pixels, probmap.pixels)
        with timer.stage("eval"):
            score = evaluate_gray(decoded, sample.polygons, name=f"{name} (sample {sample.idx})")
        seconds = {stage: timer.seconds[stage] for stage in (*STAGES, "eval")}
        record = self.store.record(sample.idx, name, sample.caption, score, n_tiles=len(tiles),
                                   nonfinite_tiles=probmap.nonfinite, degenerate=probmap.degenerate, seconds=seconds,
                                   identity=sample_identity(self.settings_digest, sample, image.key), size=[height, width])
        log_metric_block(log, record, map_path(config.cache_path, "probmap", sample.idx))

    def run(self, samples: list[Sample]) -> int:
        """Process every sample not already complete; return the number of failed samples."""
        failures = 0
        bar = tqdm(samples, desc=f"SeLo {self.config.pipeline.name}", unit="sample", dynamic_ncols=True)
        for sample in bar:
            bar.set_postfix_str(sample.jpg_name)
            if self.reusable(sample, len(samples)):
                continue
            try:
                with warnings_logged(self.logger):
                    self.process(sample, len(samples))
            except WriteError:
                raise  # disk full or read-only: no later sample could be saved either
            except Exception as exc:  # one bad sample never loses the others; the message names the problem
                failures += 1
                message = first_line(exc)
                self.store.record_error(sample.idx, sample.jpg_name, sample.caption, message)
                self.logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, message)
        bar.close()
        return failures

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
            write_report(config.cache_path, config.src_anno_path)
    return run, failures

