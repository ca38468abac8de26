"""SeLo on a user's own scenes: any number of images x any number of queries, no annotation file.

Each image is read and its first-stage tiles encoded once, however many queries it gets (the tile
vectors are kept on disk, so a later run encodes none either; v2's refinement boxes depend on the query
and are counted apart). For every image x query the outputs are written atomically into the output
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
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from tqdm import tqdm

from predict.core.heatmap import colour_heatmap, overlay, scene_score
from predict.core.notes import warn
from predict.core.pipelines import PIPELINES, PipelineSpec
from predict.core.stretch import Stretch
from predict.encoders.base import EncoderSpecModel
from predict.io.atomic import WriteError, write_atomically
from predict.io.checks import first_line
from predict.io.lock import folder_lock
from predict.io.logs import notes_logged
from predict.io.maps import write_jpeg
from predict.io.raster import (DEFAULT_STRETCH, RasterImage, feature_collection, georeference_sidecars,
                               peaks_feature_collection, read_raster, regions_feature_collection, write_mask_tif,
                               write_probmap_tif)
from predict.provenance import (StoredFileError, digest_of, encoder_identity, read_stored, remove_stored, seal_file,
                                short, verify_stored, write_stored)
from predict.run.localise import mostly_valid, probability_map_of, score_tiles, tile_cells
from predict.run.vectors import TileVectorStore

SUMMARY_NAME = "summary.json"
ALL_PEAKS_NAME = "all_peaks.geojson"
SUMMARY_VERSION = 3  # 2: no records of the outputs; 1: the results of the last run only, numbered by its query list
SUMMARY_KEY = "selo-localise folder summary"  # the producer named in the summary's own record


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
    """

    out_dir: str
    pipeline: PipelineSpec = field(default_factory=lambda: PIPELINES["v1"])
    bands: tuple[int, ...] | None = None
    stretch: Stretch | None = DEFAULT_STRETCH
    regions: float | None = None
    mask: float | None = None
    vector_cache: str | None = None
    seed: int = 0


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


def first_stage(raster: RasterImage, spec: PipelineSpec, name: str, notes: list[str] | None = None) -> list:
    """The first-stage tiles ``score_tiles`` will score on ``raster``; a one-line ValueError for an image
    that gives nothing to compare: smaller than the smallest tile, or a single tile without refinement.
    Warnings (scales skipped) to ``notes`` when given: ``score_tiles`` gives them again."""
    height, width = raster.pixels.shape[:2]
    smallest = min(spec.steps)
    if min(height, width) < smallest:
        raise ValueError(f"{name}: {width} x {height} pixels is smaller than the smallest tile ({smallest} px); "
                         f"the {spec.name} pipeline needs at least {smallest} px on each side")
    tiles = spec.first_stage_tiles(height, width, name, notes)
    if raster.valid is not None:
        tiles = mostly_valid(tiles, raster.valid)
    if len(tiles) == 1 and spec.refinement is None:
        raise ValueError(f"{name}: {width} x {height} pixels hold a single {smallest} px tile: nothing to compare "
                         f"(the map would be flat); the image must be larger than {smallest} px in one direction")
    return tiles


class FolderSummary:
    """``summary.json`` of an output folder: the query numbers, the stem of each image's outputs and one
    entry per output set on disk, across runs, with the record of each of its files. A rerun of an image x
    query replaces its entry, and its files that the new entry does not list (``_regions`` of an earlier
    run with ``--regions``...) are removed, so no file on disk is left that the summary does not describe.

    The summary is a stored file (:func:`~predict.provenance.write_stored`): one edited by hand, or of
    another program, stops the run with one line. An entry whose file changed since it was written (edited,
    truncated, replaced) is dropped with its files, with a warning to ``notes`` naming the file. A summary
    of an earlier version is adopted, its files taken as they are.
    """

    def __init__(self, out_dir: str, notes: list[str] | None = None):
        self.path = os.path.join(out_dir, SUMMARY_NAME)
        self.out_dir = out_dir
        self.queries: list[str] = []
        self.results: list[dict] = []
        self.runs: list[dict] = []
        self.stems: dict[str, str] = {}  # absolute image path -> the stem of its output names
        self.all_peaks: dict | None = None  # the record of all_peaks.geojson as last written
        if os.path.isfile(self.path):
            self._load()
            self._drop_changed(notes)

    def _load(self) -> None:
        try:
            try:
                data = json.loads(read_stored(self.path, SUMMARY_KEY))
            except StoredFileError as error:
                data = self._earlier_version(error)
            if data.get("version") == SUMMARY_VERSION:
                self.queries, self.results, self.runs = list(data["queries"]), list(data["results"]), list(data["runs"])
                self.stems = dict(data["stems"])
            elif data.get("version") == 2:
                self._adopt(data["results"], data["queries"])
            else:
                self._adopt_version_1(data["results"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.path}: not a summary selo-localise can continue ({first_line(exc)}); "
                             "move it away or use another --out") from None

    def _earlier_version(self, error: StoredFileError) -> dict:
        """A summary without a record: one of an earlier version (adopted), else ``error``."""
        with open(self.path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("version", 1) == SUMMARY_VERSION:
            raise ValueError(error.reason)
        return data

    def _adopt(self, results: list[dict], queries: list[str]) -> None:
        """An earlier version's entries, each with the records of its files as they are now."""
        self.queries = list(queries)
        for entry in results:
            image = os.path.abspath(entry["image"])
            self.stems.setdefault(image, entry["files"]["probmap"].rsplit("_q", 1)[0])
            key = digest_of(entry)
            records = {name: seal_file(os.path.join(self.out_dir, name), key, beside=False)
                       for name in entry["files"].values() if os.path.isfile(os.path.join(self.out_dir, name))}
            self.results.append({**entry, "image": image, "records": records})

    def _adopt_version_1(self, results: list[dict]) -> None:
        """The entries of the first version's summary (one run's, numbered by its query list)."""
        queries, entries = [], []
        for entry in results:
            k = int(re.fullmatch(r".*_q(\d+)_probmap\.tif", entry["probmap"]).group(1))
            queries += [""] * (k + 1 - len(queries))
            queries[k] = entry["query"]
            files = {kind: entry[kind] for kind in ("probmap", "overlay", "peaks", "regions") if kind in entry}
            entries.append({"image": entry["image"], "query": entry["query"], "k": k, "files": files})
        self._adopt(entries, queries)

    def _drop_changed(self, notes: list[str] | None) -> None:
        """Drop the entries one of whose files is not the one written (changed, missing), with their files."""
        for entry in list(self.results):
            for name in entry["files"].values():
                try:
                    verify_stored(os.path.join(self.out_dir, name), None, entry["records"].get(name))
                except (StoredFileError, AttributeError, TypeError) as error:
                    reason = error.reason if isinstance(error, StoredFileError) else "no record of it"
                    warn(f"{os.path.join(self.out_dir, name)}: {reason}; the outputs of {entry['image']} x "
                         f"{entry['query']!r} are removed (run it again to make them)", notes)
                    self._remove(entry)
                    break

    def _remove(self, entry: dict, keep: set[str] = frozenset()) -> None:
        """Remove ``entry`` and its files but ``keep``."""
        for name in set(entry["files"].values()) - keep:
            if os.path.basename(name) == name:  # a hand-edited summary never makes this remove a file elsewhere
                remove_stored(os.path.join(self.out_dir, name))
        self.results.remove(entry)

    def number(self, query: str) -> int:
        """The folder's number of ``query`` (a new one for a query never asked here)."""
        if query not in self.queries:
            self.queries.append(query)
        return self.queries.index(query)

    def stem(self, image: str) -> str:
        """The stem of the output names of ``image`` in this folder: its file's stem, unless another image
        of the folder has it; then the stem and a digest of its absolute path, so that outputs of different
        images never share a name, in one run or across runs.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     summary = FolderSummary(folder)
        ...     summary.stem("/a/scene.png"), summary.stem("/a/scene.tif")[:6], summary.stem("/a/scene.png")
        ('scene', 'scene-', 'scene')
        """
        path = os.path.abspath(image)
        if path not in self.stems:
            stem = os.path.splitext(os.path.basename(path))[0]
            self.stems[path] = f"{stem}-{short(digest_of(path))[:8]}" if stem in self.stems.values() else stem
        return self.stems[path]

    def record(self, entry: dict) -> None:
        """Add ``entry``, replacing the one of the same outputs and removing its files the new one lacks."""
        probmap = entry["files"]["probmap"]
        for old in [e for e in self.results if e["files"]["probmap"] == probmap]:
            self._remove(old, keep=set(entry["files"].values()))
        self.results.append(entry)

    def forget(self, image: str, query: str | None = None) -> None:
        """Remove the outputs of ``image`` (x ``query``, else every query): they no longer describe it."""
        path = os.path.abspath(image)
        for entry in [e for e in self.results if e["image"] == path and query in (None, e["query"])]:
            self._remove(entry)

    def write(self, run: dict) -> None:
        """Write the summary, ``run`` (this run's times and errors) after the earlier runs."""
        data = {"version": SUMMARY_VERSION, "queries": self.queries, "stems": self.stems, "results": self.results,
                "all_peaks": ALL_PEAKS_NAME, "all_peaks_record": self.all_peaks, "errors": run["errors"],
                "runs": self.runs + [run]}
        write_stored(self.path, json.dumps(data, indent=1, allow_nan=False) + "\n", SUMMARY_KEY)

    def write_all_peaks(self, notes: list[str] | None = None) -> None:
        """``all_peaks.geojson``: the peaks of every entry, one layer, each peaks file read verified; one that
        fails is left out, with a warning (to ``notes`` when given)."""
        features = []
        for entry in self.results:
            name = entry["files"]["peaks"]
            try:
                features += json.loads(read_stored(os.path.join(self.out_dir, name), None, entry["records"][name]))["features"]
            except (StoredFileError, ValueError, KeyError) as exc:
                warn(f"{name}: left out of {ALL_PEAKS_NAME} ({first_line(exc)})", notes)
        self.all_peaks = write_stored(os.path.join(self.out_dir, ALL_PEAKS_NAME),
                                      json.dumps(feature_collection(features), indent=1, allow_nan=False) + "\n",
                                      digest_of([entry["records"][entry["files"]["peaks"]] for entry in self.results]),
                                      beside=False)


class SceneRun:
    """One run: the encoder, the tile-vector store, the folder's summary, this run's results and errors."""

    def __init__(self, config: SceneConfig, encoder: EncoderSpecModel, logger: logging.Logger):
        self.config = config
        self.encoder = encoder
        self.logger = logger
        cache_dir = config.vector_cache or os.path.join(config.out_dir, "tile_vectors")
        self.vectors = TileVectorStore(encoder, cache_dir)
        with notes_logged(logger) as notes:  # outputs changed since they were written: dropped, one line each
            self.summary = FolderSummary(config.out_dir, notes)
        self.encoder_record = {"name": getattr(encoder, "name", type(encoder).__name__),
                               "identity": digest_of(encoder_identity(encoder))}
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
                "pipeline": spec.name, "steps": list(spec.steps), "seed": self.config.seed if spec.shuffled_copies else None,
                "pipeline_digest": digest_of(spec.as_dict()), "scene_score": finite_or_none(score)}

    def localise(self, raster: RasterImage, stage1: list, image: str, query: str, started: float,
                 notes: list[str] | None = None) -> dict:
        """Localise ``query`` in ``raster`` (whose first-stage tiles are ``stage1``), write its outputs,
        return its summary entry; ``seconds`` counts from ``started``; warnings to ``notes`` when given."""
        config, spec = self.config, self.config.pipeline
        height, width = raster.pixels.shape[:2]
        self.vectors.use_image(raster.key, notes)  # its vectors on disk loaded: the first-stage tiles new to it are counted
        new_first_stage = len({t for t in stage1 if t not in self.vectors.vectors_by_tile})
        encoded_before = self.vectors.tiles_encoded
        tiles, scores = score_tiles(raster.loaded(), query, self.encoder, spec, self.vectors, config.seed,
                                    name=image, valid=raster.valid, notes=notes)
        encoded = self.vectors.tiles_encoded - encoded_before
        probmap = raster_probmap(raster, tiles, scores, spec, image, notes)
        score = scene_score(tile_cells(tiles, scores, height, width, fill_uncovered=raster.valid is not None))
        identity = self.identity(raster, image, query, score)
        k = self.summary.number(query)
        names = output_names(self.summary.stem(image), k, config.regions is not None, config.mask is not None)
        out = {kind: os.path.join(config.out_dir, name) for kind, name in names.items()}
        write_probmap_tif(out["probmap"], probmap, raster, tags=identity)
        overlaid = overlay(raster.pixels, colour_heatmap(probmap))
        if raster.valid is not None:
            overlaid[~raster.valid] = 0  # nodata stays black, as in the image
        write_jpeg(out["overlay"], overlaid)
        sidecars = georeference_sidecars(out["overlay"], raster, identity)
        names |= {f"overlay_{kind}": os.path.basename(path) for kind, path in sidecars.items()}
        write_json(out["peaks"], peaks_feature_collection(probmap, raster, identity))
        if config.regions is not None:
            write_json(out["regions"], regions_feature_collection(probmap, raster, config.regions, identity))
        if config.mask is not None:
            write_mask_tif(out["mask"], probmap, raster, config.mask, tags=identity)
        key = digest_of(identity)  # what made every file of the set: the record's producer
        records = {name: seal_file(os.path.join(config.out_dir, name), key, beside=False) for name in names.values()}
        return {**identity, "image": os.path.abspath(image), "k": k,
                "bands": None if config.bands is None else list(config.bands),
                "stretch": None if config.stretch is None else vars(config.stretch),
                "coordinate_system": raster.coordinate_system, "files": names, "records": records,
                "tiles_encoded": new_first_stage, "boxes_encoded": encoded - new_first_stage,
                "seconds": round(time.perf_counter() - started, 3), "time": now()}

    def write_summary(self) -> None:
        self.summary.write({"started": self.started, "finished": now(), "results": len(self.results),
                            "errors": self.errors})

    def run(self, images: list[str], queries: list[str]) -> None:
        """Every image x every non-empty query; the image is read once, before its first query."""
        for k, query in enumerate(queries):
            if not query.strip():
                self.fail(f"query {k}: empty query (skipped)")
        todo = [q for q in dict.fromkeys(queries) if q.strip()]
        with tqdm(total=len(images) * len(todo), desc=f"SeLo {self.config.pipeline.name}", unit="query",
                  dynamic_ncols=True) as bar:
            for image in images if todo else []:  # no image is read for nothing
                started = time.perf_counter()
                try:
                    with notes_logged(self.logger) as notes:
                        raster = read_raster(image, self.config.bands, self.config.stretch, notes)
                    stage1 = first_stage(raster, self.config.pipeline, image, notes=[])  # score_tiles warns again
                except Exception as exc:
                    self.fail(first_line(exc))
                    self.summary.forget(image)
                    bar.update(len(todo))
                    continue
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
                    bar.update(1)
                del raster, stage1
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
