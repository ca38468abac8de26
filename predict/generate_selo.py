"""Generate SeLo maps for every sample of an SLM-style testset and evaluate them (Rsu, Ras, Rda, Rmi).

    python predict/generate_selo.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml --cache_path cache/X

v1 (default): tiles of every step at two grid offsets, per-pixel mean of the tile scores, median 251.
v2 (``--pipeline v2``): 512 tiles, the best 15 % refined by boxes around 9 points each, a query averaged
with 4 word-shuffled copies, Gaussian 255.
Results are written per sample as they are produced (maps, log.txt, metrics.json/csv), report.html at
the end; a rerun skips the samples already complete unless ``--overwrite``. Exit code 1 when any sample
failed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as `python predict/generate_selo.py` from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluations.metrics import evaluate_gray  # noqa: E402
from evaluations.results import MetricsStore  # noqa: E402
from evaluations.utils import log_metric_block  # noqa: E402
from predict import tiling  # noqa: E402
from predict.dataset import Sample, load_annotations, read_image  # noqa: E402
from predict.encoding import StageTimer, TileVectorCache, file_digest, query_vector  # noqa: E402
from predict.heatmap import mean_tile_scores, probability_map  # noqa: E402
from predict.model_encoder import REPO_ROOT, EncoderSpecModel, load_encoder  # noqa: E402
from predict.outputs import maps_exist, save_maps, setup_logger  # noqa: E402
from predict.report import write_report  # noqa: E402

STAGES = ("cut", "sim", "gnt", "flt")


@dataclass
class LoadedImage:
    path: str
    key: str  # content digest
    pixels: np.ndarray  # uint8 BGR


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml_path", default=str(REPO_ROOT / "predict/options/RSITMD/RSITMD_AMFMN.yaml"),
                        help="encoder yaml (model.name picks the encoder)")
    parser.add_argument("--cache_path", default=str(REPO_ROOT / "cache/RSITMD_AMFMN"),
                        help="output folder: maps, log.txt, metrics.json/csv")
    parser.add_argument("--src_data_path", default=str(REPO_ROOT / "test_data/imgs"), help="folder of the images")
    parser.add_argument("--src_anno_path", default=str(REPO_ROOT / "test_data/annotations/anno.json"),
                        help="annotation file in the SLM schema")
    parser.add_argument("--step", default="256_512_768", help="v1 tile steps joined by '_'")
    parser.add_argument("--pipeline", choices=("v1", "v2"), default="v1")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (CUDA when available by default)")
    parser.add_argument("--batch_size", type=int, default=None, help="tiles per encoder call (yaml's by default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of v2's word shuffling")
    parser.add_argument("--overwrite", action="store_true", help="recompute samples that are already complete")
    parser.add_argument("--no_report", action="store_true", help="do not write <cache_path>/report.html")
    parser.add_argument("--no_vector_cache", action="store_true",
                        help="do not keep tile vectors on disk under <cache_path>/tile_vectors")
    return parser.parse_args(argv)


def scored_tiles_v1(image: LoadedImage, text: str, encoder: EncoderSpecModel, vectors: TileVectorCache,
                    steps: list[int], timer: StageTimer, name: str) -> tuple[list, np.ndarray]:
    """All v1 tiles of the usable steps and their scores against the query."""
    height, width = image.pixels.shape[:2]
    with timer.stage("cut"):
        tiles = tiling.v1_tiles(height, width, tiling.usable_steps(height, width, steps, name))
    tile_vectors = vectors.vectors(image.pixels, tiles, timer)
    with timer.stage("sim"):
        scores = encoder.cosine_sim(tile_vectors, query_vector(encoder, text))
    return tiles, np.asarray(scores, dtype=np.float64)


def scored_tiles_v2(image: LoadedImage, text: str, encoder: EncoderSpecModel, vectors: TileVectorCache,
                    rng: np.random.Generator, timer: StageTimer, name: str) -> tuple[list, np.ndarray]:
    """The kept 512 tiles and the boxes around them, with their scores against the shuffled-average query."""
    height, width = image.pixels.shape[:2]
    if min(height, width) < tiling.V2_STAGE1_STEP:
        warnings.warn(f"{name}: image {height}x{width} is smaller than the v2 tile {tiling.V2_STAGE1_STEP}; "
                      "stretching strips as the original did", stacklevel=2)
    with timer.stage("cut"):
        stage1 = tiling.v2_stage1_tiles(height, width)
    stage1_vectors = vectors.vectors(image.pixels, stage1, timer)
    with timer.stage("sim"):
        query = query_vector(encoder, text, rng)
        stage1_scores = np.asarray(encoder.cosine_sim(stage1_vectors, query), dtype=np.float64)
        order = np.argsort(-stage1_scores, kind="stable")[:tiling.v2_keep_count(len(stage1))]
    kept = [stage1[i] for i in order]
    with timer.stage("cut"):
        boxes = list(dict.fromkeys(b for tile in kept for b in tiling.v2_boxes(tile, height, width)))
    box_vectors = vectors.vectors(image.pixels, boxes, timer)
    with timer.stage("sim"):
        box_scores = np.asarray(encoder.cosine_sim(box_vectors, query), dtype=np.float64)
    return kept + boxes, np.concatenate([stage1_scores[order], box_scores])


class SeloRun:
    """One run over a testset: holds the encoder, the tile-vector cache and the results store."""

    def __init__(self, args: argparse.Namespace, encoder: EncoderSpecModel, logger: logging.Logger):
        self.args = args
        self.encoder = encoder
        self.logger = logger
        self.steps = tiling.parse_steps(args.step)
        cache_dir = None if args.no_vector_cache else os.path.join(args.cache_path, "tile_vectors")
        self.vectors = TileVectorCache(encoder, cache_dir)
        self.store = MetricsStore(args.cache_path)
        self.image: LoadedImage | None = None

    def load_image(self, path: str, timer: StageTimer) -> LoadedImage:
        """Decode the image once for all consecutive samples on it (timed as ``cut``)."""
        with timer.stage("cut"):
            if self.image is None or self.image.path != path:
                self.image = None  # free the previous image before decoding the next one
                pixels = read_image(path)
                self.image = LoadedImage(path, file_digest(path), pixels)
            self.vectors.use_image(self.image.key)
        return self.image

    def process(self, sample: Sample, total: int) -> None:
        args, log = self.args, self.logger
        name = sample.jpg_name
        log.info("Processing %d/%d: %s", sample.idx, total, name)
        log.info("Corresponding text: %s", sample.caption)
        timer = StageTimer()
        image = self.load_image(os.path.join(args.src_data_path, name), timer)
        height, width = image.pixels.shape[:2]
        log.info("img size:%dx%d", height, width)
        if args.pipeline == "v1":
            log.info("Start split images with step %s", args.step)
            tiles, scores = scored_tiles_v1(image, sample.caption, self.encoder, self.vectors, self.steps, timer, name)
        else:
            log.info("Start split images with step %d", tiling.V2_STAGE1_STEP)
            rng = np.random.default_rng([args.seed, sample.idx])
            tiles, scores = scored_tiles_v2(image, sample.caption, self.encoder, self.vectors, rng, timer, name)
        log.info("Calculate similarities in %.4fs", timer.seconds["cut"] + timer.seconds["sim"])
        with timer.stage("gnt"):
            boxes = [tiling.effective_box(t, height, width) for t in tiles]
            cells = mean_tile_scores(boxes, scores, height, width)
        log.info("Generate heatmap in %.4fs", timer.seconds["gnt"])
        with timer.stage("flt"):
            probmap = probability_map(cells, args.pipeline, name)
            log.info("Saving heatmap in %s ...", os.path.join(args.cache_path, f"heatmap_{sample.idx}.jpg"))
            decoded = save_maps(args.cache_path, sample.idx, image.pixels, probmap)
        with timer.stage("eval"):
            score = evaluate_gray(decoded, sample.polygons, name=f"{name} (sample {sample.idx})")
        seconds = {stage: timer.seconds[stage] for stage in (*STAGES, "eval")}
        record = self.store.record(sample.idx, name, sample.caption, score, n_tiles=len(tiles), seconds=seconds)
        log_metric_block(log, record, os.path.join(args.cache_path, f"probmap_{sample.idx}.jpg"))

    def run(self, samples: list[Sample]) -> int:
        """Process every sample not already complete; return the number of failed samples."""
        failures = 0
        bar = tqdm(samples, desc=f"SeLo {self.args.pipeline}", unit="sample", dynamic_ncols=True)
        for sample in bar:
            bar.set_postfix_str(sample.jpg_name)
            if not self.args.overwrite and self.store.is_done(sample.idx) and maps_exist(self.args.cache_path, sample.idx):
                self.logger.info("Skipping %d/%d: %s (already complete)", sample.idx, len(samples), sample.jpg_name)
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        self.process(sample, len(samples))
                    finally:
                        for warning in caught:
                            self.logger.warning("%s", warning.message)
            except Exception as exc:  # one bad sample never loses the others; the message names the problem
                failures += 1
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.store.record_error(sample.idx, sample.jpg_name, sample.caption, message)
                self.logger.error("Sample %d (%s) failed: %s", sample.idx, sample.jpg_name, message)
        bar.close()
        return failures

    def finish(self) -> None:
        """The mean block and the Time-Cut/Sim/Gnt/Flt/Total lines, as the original ends its log."""
        log_metric_block(self.logger, self.store.mean(), None)
        # summed over the per-sample records, so a resumed run still reports the whole testset
        timings = {stage: sum(r.get("seconds", {}).get(stage, 0.0) for r in self.store.samples)
                   for stage in (*STAGES, "eval")}
        timings["total"] = sum(timings[stage] for stage in STAGES)  # generation only, as the original's Total
        self.store.set_timings(timings)
        for stage in STAGES:
            self.logger.info("Time-%s: %.4fs", stage.capitalize(), timings[stage])
        self.logger.info("Time-Total: %.4fs", timings["total"])
        self.logger.info("Time-Eval: %.4fs", timings["eval"])


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.cache_path, exist_ok=True)
    logger = setup_logger(args.cache_path)
    started = time.perf_counter()
    try:
        samples = load_annotations(args.src_anno_path)
        encoder = load_encoder(args.yaml_path, device=args.device, batch_size=args.batch_size)
    except Exception as exc:
        logger.error("%s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return 2
    run = SeloRun(args, encoder, logger)
    if dropped := run.store.keep_only(samples):
        logger.warning("%s: dropped %d result(s) of samples not in %s", run.store.json_path, dropped,
                       args.src_anno_path)
    failures = run.run(samples)
    run.finish()
    if not args.no_report:
        write_report(args.cache_path, args.src_anno_path)
    mean = run.store.mean()
    print("Mean over %d samples: " % len(run.store.samples)
          + "  ".join(f"{k} {mean[k]:.4f}" for k in ("Rsu", "Ras", "Rda", "Rmi"))
          + f"  ({time.perf_counter() - started:.1f}s; tiles encoded {run.vectors.tiles_encoded}"
          + f" of {run.vectors.tiles_requested} requested)")
    if failures:
        print(f"{failures} sample(s) failed; see {os.path.join(args.cache_path, 'log.txt')}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
