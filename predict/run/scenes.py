"""SeLo on a user's own scenes: any number of images x any number of queries, no annotation file.

Each image is read and its tiles encoded once, however many queries it gets (the tile vectors are kept
on disk, so a later run encodes none either). For every image x query the outputs are written
atomically into the output folder:

- ``<stem>_q<k>_probmap.tif``: the uint8 probability map with the input's CRS and transform, masked where
  the input is nodata;
- ``<stem>_q<k>_overlay.jpg``: the JET colour map over the image (the benchmark's addmap);
- ``<stem>_q<k>_peaks.geojson``: the attention centres as points;
- ``<stem>_q<k>_regions.geojson`` (with ``regions``): polygons above a quantile of the map;

and ``summary.json`` lists the results of the run. A bad image or query costs one log line; the others
go on.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from predict.core.heatmap import colour_heatmap, overlay
from predict.core.pipelines import PIPELINES, PipelineSpec
from predict.encoders.base import EncoderSpecModel
from predict.io.atomic import WriteError, write_atomically
from predict.io.checks import first_line
from predict.io.logs import warnings_logged
from predict.io.maps import write_jpeg
from predict.io.raster import (DEFAULT_STRETCH, RasterImage, peaks_feature_collection, read_raster,
                               regions_feature_collection, write_probmap_tif)
from predict.run.localise import probability_map_of, score_tiles
from predict.run.vectors import TileVectorStore

SUMMARY_NAME = "summary.json"


@dataclass
class SceneConfig:
    """What a run over a user's scenes does (everything but the encoder, the images and the queries).

    Attributes:
        out_dir: output folder.
        pipeline: the :class:`~predict.core.pipelines.PipelineSpec` (steps included).
        bands: 1-based bands to read (one or three); the file's RGB, else its first three, when None.
        stretch: percentiles of the stretch of data deeper than 8 bits; None scales from the type's range.
        regions: write ``_regions.geojson`` with the polygons above this quantile (0-1) of the map; None: not.
        vector_cache: folder of the tile vectors; ``<out_dir>/tile_vectors`` when None.
        seed: seed of the query's word shuffles (v2).
    """

    out_dir: str
    pipeline: PipelineSpec = field(default_factory=lambda: PIPELINES["v1"])
    bands: tuple[int, ...] | None = None
    stretch: tuple[float, float] | None = DEFAULT_STRETCH
    regions: float | None = None
    vector_cache: str | None = None
    seed: int = 0


def output_names(stem: str, k: int, regions: bool) -> dict[str, str]:
    """File names of the outputs of query ``k`` on the image of file stem ``stem``.

    >>> output_names("scene", 2, False)["probmap"]
    'scene_q2_probmap.tif'
    """
    names = {"probmap": f"{stem}_q{k}_probmap.tif", "overlay": f"{stem}_q{k}_overlay.jpg",
             "peaks": f"{stem}_q{k}_peaks.geojson"}
    if regions:
        names["regions"] = f"{stem}_q{k}_regions.geojson"
    return names


def write_json(path: str, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1) + "\n")


def raster_probmap(raster: RasterImage, tiles, scores, spec: PipelineSpec, name: str) -> np.ndarray:
    """The exact full-resolution uint8 map of a raster's scored tiles: pixels no tile covers (the left-out
    nodata tiles) get the map's minimum, and nodata pixels are 0 (no attention centre, region or colour)."""
    height, width = raster.pixels.shape[:2]
    probmap = probability_map_of(tiles, scores, height, width, spec, name=name,
                                 fill_uncovered=raster.valid is not None).pixels
    if raster.valid is not None:
        probmap[~raster.valid] = 0
    return probmap


class SceneRun:
    """One run: the encoder, the tile-vector store, the results and errors so far."""

    def __init__(self, config: SceneConfig, encoder: EncoderSpecModel, logger: logging.Logger):
        self.config = config
        self.encoder = encoder
        self.logger = logger
        cache_dir = config.vector_cache or os.path.join(config.out_dir, "tile_vectors")
        self.vectors = TileVectorStore(encoder, cache_dir)
        self.results: list[dict] = []
        self.errors: list[str] = []

    def fail(self, message: str) -> None:
        self.errors.append(message)
        self.logger.error("%s", message)

    def localise(self, raster: RasterImage, image: str, k: int, query: str, started: float) -> dict:
        """Localise ``query`` (number ``k``) in ``raster``, write its outputs, return its summary entry;
        ``seconds`` counts from ``started``."""
        config = self.config
        encoded_before = self.vectors.tiles_encoded
        tiles, scores = score_tiles(raster.loaded(), query, self.encoder, config.pipeline, self.vectors,
                                    config.seed, name=image, valid=raster.valid)
        probmap = raster_probmap(raster, tiles, scores, config.pipeline, image)
        names = output_names(os.path.splitext(os.path.basename(image))[0], k, config.regions is not None)
        out = {kind: os.path.join(config.out_dir, name) for kind, name in names.items()}
        write_probmap_tif(out["probmap"], probmap, raster)
        overlaid = overlay(raster.pixels, colour_heatmap(probmap))
        if raster.valid is not None:
            overlaid[~raster.valid] = 0  # nodata stays black, as in the image
        write_jpeg(out["overlay"], overlaid)
        write_json(out["peaks"], peaks_feature_collection(probmap, raster))
        if config.regions is not None:
            write_json(out["regions"], regions_feature_collection(probmap, raster, config.regions))
        return {"image": image, "query": query, **names, "tiles_encoded": self.vectors.tiles_encoded - encoded_before,
                "seconds": round(time.perf_counter() - started, 3)}

    def write_summary(self) -> None:
        write_json(os.path.join(self.config.out_dir, SUMMARY_NAME), {"results": self.results, "errors": self.errors})

    def run(self, images: list[str], queries: list[str]) -> None:
        """Every image x every non-empty query; the image is read once, before its first query."""
        for k, query in enumerate(queries):
            if not query.strip():
                self.fail(f"query {k}: empty query (skipped)")
        todo = [(k, q) for k, q in enumerate(queries) if q.strip()]
        stems: dict[str, str] = {}
        with tqdm(total=len(images) * len(todo), desc=f"SeLo {self.config.pipeline.name}", unit="query",
                  dynamic_ncols=True) as bar:
            for image in images if todo else []:  # no image is read for nothing
                started = time.perf_counter()
                stem = os.path.splitext(os.path.basename(image))[0]
                try:
                    if stem in stems:
                        raise ValueError(f"{image}: same file name as {stems[stem]}; its outputs would overwrite those")
                    stems[stem] = image
                    with warnings_logged(self.logger):
                        raster = read_raster(image, self.config.bands, self.config.stretch)
                except Exception as exc:
                    self.fail(first_line(exc))
                    bar.update(len(todo))
                    continue
                for k, query in todo:
                    try:
                        with warnings_logged(self.logger):
                            result = self.localise(raster, image, k, query, started)
                    except WriteError:
                        raise  # disk full or read-only: no later output could be written either
                    except Exception as exc:
                        self.fail(f"{image}, query {k}: {first_line(exc)}")
                    else:
                        self.results.append(result)
                        self.logger.info("%s q%d %r: %d tiles encoded, %.1fs", image, k, query,
                                         result["tiles_encoded"], result["seconds"])
                        self.write_summary()
                    started = time.perf_counter()
                    bar.update(1)
                del raster
        self.write_summary()


def localise_scenes(images: list[str], queries: list[str], encoder: EncoderSpecModel, config: SceneConfig,
                    logger: logging.Logger | None = None) -> SceneRun:
    """Localise every query in every image (see the module's description); the returned run's ``results``
    are the summary entries, its ``errors`` the one-line failures (also logged)."""
    os.makedirs(config.out_dir, exist_ok=True)
    run = SceneRun(config, encoder, logger or logging.getLogger("selo"))
    run.run(list(images), list(queries))
    return run
