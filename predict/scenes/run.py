"""SeLo on a user's own scenes: any number of images x any number of queries, no annotation file.

Each image is opened once and its first-stage tiles encoded once, however many queries it gets (the tile
vectors are kept on disk, so a later run encodes none either; v2's refinement boxes depend on the query
and are counted apart). A scene of any size is read in row stripes and its maps written stripe by stripe
within ``memory_mb`` (:mod:`predict.io.scene_blocks`, :mod:`predict.io.scene_maps`): the same bytes as one
block, at the memory of a few stripes. For every image x query the outputs are written atomically into the output
folder, ``<k>`` being the query's number in this folder (the same query keeps its number across runs):

- ``<stem>_q<k>_probmap.tif``: the uint8 probability map as a Cloud Optimized GeoTIFF with the input's
  georeferencing, a colour table, masked where the input is nodata;
- ``<stem>_q<k>_overlay.jpg``: the JET colour map over the image (the benchmark's addmap), with a world
  file and ``.aux.xml`` that georeference it;
- ``<stem>_q<k>_peaks.geojson``: the attention centres as points;
- ``<stem>_q<k>_regions.geojson`` (with ``regions``): polygons above a quantile of the map;
- ``<stem>_q<k>_mask.tif`` (with ``mask``): the binary mask of the map above a quantile;

every one of them naming the query, image, encoder, pipeline and scene score in its metadata or
properties. ``summary.json`` describes every output in the folder, across runs, with the record of each
file (:mod:`predict.provenance`'s store: the sha256 of its bytes, the key of what made it), and
``all_peaks.geojson`` holds the peaks of all of them as one layer. One folder, one truth: the folder holds
exactly what its summary lists; an output changed since it was written is dropped with its set, with one
line; two images of one file stem get distinct names (the second's stem takes a digest of its path); an
image or query that fails loses its earlier outputs too (they no longer describe the image as it is). A
bad image or query costs one log line; the others go on. One run at a time writes a folder.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from predict.core.blocks import plan_stripes
from predict.core.heatmap import normalise_to_uint8, probability_rows, scene_score
from predict.core.memory import default_memory_limit, resident_bytes
from predict.core.pipelines import PIPELINES, PipelineSpec
from predict.core.stretch import Stretch
from predict.core.tiling import tiles_in_rows
from predict.encoders.base import EncoderSpecModel
from predict.errors import WriteError, first_line
from predict.io.lock import folder_lock
from predict.io.logs import notes_logged
from predict.io.progress import progress
from predict.io.raster import DEFAULT_STRETCH, RasterImage, georeference_sidecars
from predict.io.scene_blocks import open_scene, require_unchanged
from predict.io.scene_maps import write_scene_maps
from predict.localisation import (TileVectorStore, mostly_valid, nonfinite_scores, probability_map_of, score_tiles,
                                  tile_cells)
from predict.provenance import digest_of, encoder_identity, seal_file, write_atomically
from predict.runtime import return_free_memory
from predict.scenes.summary import FolderSummary


# memory a scene's work holds beside its stripes: the map filter's compiled kernel, the encoder's activations,
# the allocator's slack (measured: 300 MB more resident after the scoring of a 10000 x 10000 scene)
SCENE_RESERVE = 300_000_000


@dataclass
class SceneConfig:
    """What a run over a user's scenes does (everything but the encoder, the images and the queries).

    Attributes:
        out_dir: output folder.
        pipeline: the :class:`~predict.core.pipelines.PipelineSpec` (steps included).
        bands: 1-based bands to read (one or three); the file's RGB, else its first three, when None.
        stretch: how data deeper than 8 bits become 8 bits (one range for all bands by default); None
            scales from the type's range.
        regions: write ``_regions.geojson`` with the polygons above this quantile (0-1) of the map; None: not.
        mask: write ``_mask.tif``, the binary mask of the map above this quantile (0-1); None: not.
        vector_cache: folder of the tile vectors; ``<out_dir>/tile_vectors`` when None.
        seed: seed of the query's word shuffles (v2).
        memory_mb: the memory (MB) a scene's reading and maps stay within, whatever its size (it is read
            and its maps written in stripes: :func:`~predict.core.blocks.plan_stripes`); by default the
            testset engine's plan (:func:`~predict.core.memory.default_memory_limit`). It never changes a
            byte of the outputs.
    """

    out_dir: str
    pipeline: PipelineSpec = field(default_factory=lambda: PIPELINES["v1"])
    bands: tuple[int, ...] | None = None
    stretch: Stretch | None = DEFAULT_STRETCH
    regions: float | None = None
    mask: float | None = None
    vector_cache: str | None = None
    seed: int = 0
    memory_mb: int | None = None


def output_names(stem: str, k: int, regions: bool, mask: bool = False) -> dict[str, str]:
    """File names of the outputs of query ``k`` on the image of file stem ``stem`` (the overlay's world
    file and ``.aux.xml`` are named by :func:`~predict.io.raster.georeference_sidecars`).

    >>> output_names("scene", 2, False)["probmap"]
    'scene_q2_probmap.tif'
    """
    names = {"probmap": f"{stem}_q{k}_probmap.tif", "overlay": f"{stem}_q{k}_overlay.jpg",
             "peaks": f"{stem}_q{k}_peaks.geojson"}
    if regions:
        names["regions"] = f"{stem}_q{k}_regions.geojson"
    if mask:
        names["mask"] = f"{stem}_q{k}_mask.tif"
    return names


def write_json(path: str, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def finite_or_none(value: float) -> float | None:
    """A float for JSON: None when not finite (JSON has no NaN)."""
    return float(value) if np.isfinite(value) else None


def raster_probmap(raster: RasterImage, tiles, scores, spec: PipelineSpec, name: str,
                   notes: list[str] | None = None) -> np.ndarray:
    """The exact full-resolution uint8 map of a raster's scored tiles: pixels no tile covers (the left-out
    nodata tiles) get the map's minimum, and nodata pixels are 0 (no attention centre, region or colour);
    warnings to ``notes`` when given (see :mod:`predict.core.notes`)."""
    height, width = raster.pixels.shape[:2]
    probmap = probability_map_of(tiles, scores, height, width, spec, name=name,
                                 fill_uncovered=raster.valid is not None, notes=notes).pixels
    if raster.valid is not None:
        probmap[~raster.valid] = 0
    return probmap


def valid_of(raster: RasterImage):
    """What :func:`~predict.localisation.mostly_valid` takes for ``raster``: its valid mask (read whole), its
    pixels when read by stripes and they may hold nodata, None when every pixel is valid."""
    if isinstance(raster.pixels, np.ndarray):
        return raster.valid
    return raster.pixels if raster.pixels.masked else None


def first_stage(raster: RasterImage, spec: PipelineSpec, name: str, notes: list[str] | None = None,
                rows: tuple[int, int] | None = None) -> list:
    """The first-stage tiles ``score_tiles`` will score on ``raster``; a one-line ValueError for an image
    that gives nothing to compare: smaller than the smallest tile, or a single tile without refinement.
    With ``rows`` ``(row0, row1)``: those whose first row lies there, a part of the scene (which may hold a
    single tile). Warnings (scales skipped) to ``notes`` when given: ``score_tiles`` gives them again."""
    height, width = raster.pixels.shape[:2]
    smallest = min(spec.steps)
    if min(height, width) < smallest:
        raise ValueError(f"{name}: {width} x {height} pixels is smaller than the smallest tile ({smallest} px); "
                         f"the {spec.name} pipeline needs at least {smallest} px on each side")
    tiles = spec.first_stage_tiles(height, width, name, notes)
    if rows is not None:
        tiles = tiles_in_rows(tiles, rows, height, width)
    if (valid := valid_of(raster)) is not None:
        tiles = mostly_valid(tiles, valid)
    if len(tiles) == 1 and spec.refinement is None and rows is None:
        raise ValueError(f"{name}: {width} x {height} pixels hold a single {smallest} px tile: nothing to compare "
                         f"(the map would be flat); the image must be larger than {smallest} px in one direction")
    return tiles


class SceneRun:
    """One run: the encoder, the tile-vector store, the folder's summary, this run's results and errors.

    Another application makes its maps with this code through two keywords: ``vectors``, a tile-vector
    store of its own (the archive's vectors of a scene, already computed) in place of the one in
    ``vector_cache``; ``queries``, the numbering of its queries (an output's ``<k>``) in place of the
    folder's own.
    """

    def __init__(self, config: SceneConfig, encoder: EncoderSpecModel, logger: logging.Logger, *,
                 vectors: TileVectorStore | None = None, queries: list[str] | None = None):
        self.config = config
        self.encoder = encoder
        self.logger = logger
        cache_dir = config.vector_cache or os.path.join(config.out_dir, "tile_vectors")
        self.vectors = TileVectorStore(encoder, cache_dir) if vectors is None else vectors
        with notes_logged(logger) as notes:  # outputs changed since they were written: dropped, one line each
            self.summary = FolderSummary(config.out_dir, notes)
        if queries is not None:
            self.summary.queries = list(queries)
        self.encoder_record = {"name": getattr(encoder, "name", type(encoder).__name__),
                               "identity": digest_of(encoder_identity(encoder)),
                               "runtime": getattr(encoder, "runtime", "torch"),
                               "precision": getattr(encoder, "precision", None)}
        self.memory = (config.memory_mb * 10**6) if config.memory_mb else default_memory_limit()
        self.map_rows = None  # rows of a map stripe, planned per scene
        self.started = now()
        self.results: list[dict] = []
        self.errors: list[str] = []

    def fail(self, message: str) -> None:
        self.errors.append(message)
        self.logger.error("%s", message)

    def identity(self, raster: RasterImage, image: str, query: str, score: float) -> dict:
        """What made an output, as every output file carries it (TIFF metadata, GeoJSON properties)."""
        spec = self.config.pipeline
        return {"query": query, "image": os.path.basename(image), "image_digest": raster.digest,
                "encoder": self.encoder_record["name"], "encoder_identity": self.encoder_record["identity"],
                "runtime": self.encoder_record["runtime"], "precision": self.encoder_record["precision"],
                "pipeline": spec.name, "steps": list(spec.steps), "seed": self.config.seed if spec.shuffled_copies else None,
                "pipeline_digest": digest_of(spec.as_dict()), "scene_score": finite_or_none(score)}

    def localise(self, raster: RasterImage, stage1: list, image: str, query: str, started: float,
                 notes: list[str] | None = None) -> dict:
        """Localise ``query`` in ``raster`` (opened by :func:`~predict.io.scene_blocks.open_scene`, whose
        first-stage tiles are ``stage1``), write its outputs stripe by stripe, return its summary entry;
        ``seconds`` counts from ``started``; warnings to ``notes`` when given."""
        config, spec = self.config, self.config.pipeline
        height, width = raster.pixels.shape[:2]
        valid = valid_of(raster)
        self.vectors.use_image(raster.key, notes)  # its vectors on disk loaded: the first-stage tiles new to it are counted
        new_first_stage = len({t for t in stage1 if t not in self.vectors.vectors_by_tile})
        encoded_before = self.vectors.tiles_encoded
        tiles, scores = score_tiles(raster.loaded(), query, self.encoder, spec, self.vectors, config.seed,
                                    name=image, valid=valid, notes=notes)
        encoded = self.vectors.tiles_encoded - encoded_before
        return_free_memory()  # what the stripes and the encoder freed, before the maps' stripes
        scores = np.asarray(scores, dtype=np.float64)
        nonfinite_scores(scores, image, notes)
        # pixels no tile covers (the left-out nodata tiles) get the map's minimum; nodata pixels are 0
        cells = tile_cells(tiles, scores, height, width, fill_uncovered=valid is not None)
        gray = normalise_to_uint8(cells.values, image, notes)  # the whole map's normalisation, on its cells
        score = scene_score(cells)
        identity = self.identity(raster, image, query, score)
        k = self.summary.number(query)
        names = output_names(self.summary.stem(image), k, config.regions is not None, config.mask is not None)
        out = {kind: os.path.join(config.out_dir, name) for kind, name in names.items()}
        peaks, regions = write_scene_maps(raster, lambda first, stop: probability_rows(cells, gray, spec.map_filter,
                                                                                       (first, stop)),
                                          out, identity, self.map_rows, config.regions, config.mask)
        sidecars = georeference_sidecars(out["overlay"], raster, identity)
        names |= {f"overlay_{kind}": os.path.basename(path) for kind, path in sidecars.items()}
        write_json(out["peaks"], peaks)
        if regions is not None:
            write_json(out["regions"], regions)
        require_unchanged(image, raster.digest)  # read by stripes, pass after pass: it must not have changed
        key = digest_of(identity)  # what made every file of the set: the record's producer
        records = {name: seal_file(os.path.join(config.out_dir, name), key, beside=False) for name in names.values()}
        return {**identity, "image": os.path.abspath(image), "k": k,
                "bands": None if config.bands is None else list(config.bands),
                "stretch": None if config.stretch is None else vars(config.stretch),
                "coordinate_system": raster.coordinate_system, "image_key": raster.key, "files": names,
                "records": records,
                "tiles_encoded": new_first_stage, "boxes_encoded": encoded - new_first_stage,
                "seconds": round(time.perf_counter() - started, 3), "time": now()}

    def write_summary(self) -> None:
        self.summary.write({"started": self.started, "finished": now(), "results": len(self.results),
                            "errors": self.errors})

    def open_planned(self, stack: ExitStack, image: str) -> RasterImage:
        """The scene at ``image`` opened (:func:`~predict.io.scene_blocks.open_scene`) until ``stack`` closes,
        its stripes planned (:meth:`plan`)."""
        with notes_logged(self.logger) as notes:
            raster = open_scene(image, stack, self.config.bands, self.config.stretch, notes)
        self.plan(raster, image)
        return raster

    def plan(self, raster: RasterImage, image: str) -> None:
        """Plan the stripes of the opened scene ``raster`` within the memory budget beside what the process
        holds now (:func:`~predict.core.blocks.plan_stripes`), and log the plan."""
        spec = self.config.pipeline
        margin = max(max(spec.steps), 2 * max(spec.refinement.box_half_sizes) if spec.refinement else 0)
        height, width = raster.pixels.shape[:2]
        room = max(0, self.memory - resident_bytes() - SCENE_RESERVE)
        plan = plan_stripes(height, width, room, margin, raster.pixels.block_rows)
        raster.pixels.plan(plan.rows, plan.margin)
        self.map_rows = plan.map_rows
        self.logger.info("%s: %s, maps in stripes of %d rows (memory budget %d MB, %d MB free for the scene)",
                         image, raster.pixels.describe(), plan.map_rows, self.memory // 10**6, room // 10**6)

    def localise_image(self, stack: ExitStack, image: str, todo: list[str], advance: Callable[[int], None]) -> None:
        """Every query of ``todo`` on ``image``: its file opened and its first-stage tiles found once."""
        started = time.perf_counter()
        try:
            raster = self.open_planned(stack, image)
            stage1 = first_stage(raster, self.config.pipeline, image, notes=[])  # score_tiles warns again
        except Exception as exc:
            self.fail(first_line(exc))
            self.summary.forget(image)
            advance(len(todo))
            return
        for query in self.summary.forget_other_content(image, raster.key, raster.digest):
            if query not in todo:  # those asked now are made again below
                self.logger.warning("%s: changed since its outputs for %r were made; they are removed "
                                    "(ask that query again to make them)", image, query)
        for query in todo:
            try:
                with notes_logged(self.logger) as notes:
                    result = self.localise(raster, stage1, image, query, started, notes)
            except WriteError:
                raise  # disk full or read-only: no later output could be written either
            except Exception as exc:
                self.fail(f"{image}, query {query!r}: {first_line(exc)}")
                self.summary.forget(image, query)
            else:
                self.results.append(result)
                self.summary.record(result)
                self.logger.info("%s q%d %r: %d tiles and %d boxes encoded, scene score %s, %.1fs", image,
                                 result["k"], query, result["tiles_encoded"], result["boxes_encoded"],
                                 result["scene_score"], result["seconds"])
                self.write_summary()
            started = time.perf_counter()
            advance(1)

    def run(self, images: list[str], queries: list[str]) -> None:
        """Every image x every non-empty query; the image is read once, before its first query."""
        for k, query in enumerate(queries):
            if not query.strip():
                self.fail(f"query {k}: empty query (skipped)")
        todo = [q for q in dict.fromkeys(queries) if q.strip()]
        with progress("queries", len(images) * len(todo), "query", desc=f"SeLo {self.config.pipeline.name}") as advance:
            for image in images if todo else []:  # no image is read for nothing
                with ExitStack() as scene:  # the file stays open while its queries are answered
                    self.localise_image(scene, image, todo, advance)
        with notes_logged(self.logger) as notes:
            self.summary.write_all_peaks(notes)
        self.write_summary()


def localise_scenes(images: list[str], queries: list[str], encoder: EncoderSpecModel, config: SceneConfig,
                    logger: logging.Logger | None = None) -> SceneRun:
    """Localise every query in every image (see the module's description), the output folder locked
    (:func:`~predict.io.lock.folder_lock`: a second run into it raises ``FolderBusyError``); the returned
    run's ``results`` are this run's summary entries, its ``errors`` the one-line failures (also logged)."""
    with folder_lock(config.out_dir, option="--out"):
        run = SceneRun(config, encoder, logger or logging.getLogger("selo"))
        run.run(list(images), list(queries))
    return run
