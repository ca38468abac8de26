"""``selo-search``: "where is X?" answered across an archive (see :mod:`predict.archive.store`), on Ray.

Each query's text vector once; every scene file checked, then scored in parallel Ray tasks
(:func:`score_scenes`), the scenes ranked by their scene score (:func:`rank_scenes`); the full maps of the
top scenes made by ``selo-localise``'s own code in Ray tasks, one per scene (:func:`scene_maps`), and
written with ``hits_q<k>.geojson`` and ``summary.json`` into the output folder, which then holds exactly
what its summary lists.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import ray

from predict.archive.store import ArchiveSettings, load_scene, open_archive, read_trusted_json, scene_error
from predict.core.heatmap import scene_score
from predict.core.pipelines import PipelineSpec
from predict.core.tiling import Tile
from predict.encoders.base import EncoderSpecModel, similarities
from predict.encoders.registry import load_encoder
from predict.errors import first_line
from predict.io.logs import notes_logged
from predict.io.progress import progress
from predict.io.scene_blocks import open_scene
from predict.localisation import TileVectorStore, query_rng, query_vector, tile_cells
from predict.provenance import StoredFileError, remove_stored, seal_file, vectors_key, write_stored_json
from predict.scenes import SceneConfig, SceneRun, first_stage

SUMMARY_NAME = "summary.json"


# ---- scoring and ranking -------------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def cached_encoder(settings: ArchiveSettings) -> EncoderSpecModel:
    """The archive's encoder on the CPU, run as it was indexed (its runtime choice), loaded once per worker
    process (Ray reuses its workers)."""
    return load_encoder(settings.yaml_path, device="cpu", runtime_choice=json.loads(settings.runtime_choice))


def scorer(settings: ArchiveSettings, own_similarity: bool) -> EncoderSpecModel:
    """What scores vectors against a text vector: the base class's similarity needs no model; an encoder
    with its own ``cosine_sim`` is loaded."""
    return cached_encoder(settings) if own_similarity else EncoderSpecModel()


def score_scenes(batch: dict, text_vectors: list[np.ndarray | None], settings: ArchiveSettings,
                 own_similarity: bool) -> dict:
    """Ray Data ``map_batches`` (a CPU task over a few scene files): each scene file checked first
    (:func:`~predict.archive.store.load_scene`: whole, of this archive's encoder and settings, its image
    unchanged), then its scene score for every query that has a text vector (``text_vectors[k]`` None: not
    answered), from its stored vectors (rows ``file``, ``image``, ``k``, ``scene_score``, ``error``: a file
    left out has NaN scores and the line saying why)."""
    rows: dict[str, list] = {"file": [], "image": [], "k": [], "scene_score": [], "error": []}
    similarity = scorer(settings, own_similarity)
    asked = [k for k, text in enumerate(text_vectors) if text is not None]
    for path in batch["file"]:
        try:
            header, tiles, vectors = load_scene(path, settings)
            fill = header["nodata"]["masked_pixels"] > 0
            scores = [scene_score(tile_cells(tiles, similarities(similarity, vectors, text_vectors[k]),
                                             header["height"], header["width"], fill)) for k in asked]
            image, error = header["image"], ""
        except StoredFileError as exc:  # a fresh index of the images there now would not hold it as it is
            scores, image, error = [math.nan] * len(asked), "", f"{exc}; left out, run selo-index again"
        except Exception as exc:
            scores, image, error = [math.nan] * len(asked), "", f"{path}: {first_line(exc)}"
        for k, score in zip(asked, scores):
            for name, value in zip(rows, (path, image, k, score, error)):
                rows[name].append(value)
    return {name: np.array(values) for name, values in rows.items()}


def score_archive(files: list[str], text_vectors: list[np.ndarray | None], settings: ArchiveSettings,
                  own_similarity: bool) -> list[dict]:
    """Every scene's score for every answered query, in parallel Ray tasks of a few scene files each."""
    if all(text is None for text in text_vectors):
        return []
    chunks = max(1, min(len(files), 4 * int(ray.cluster_resources().get("CPU", 1))))
    scored = ray.data.from_items([{"file": f} for f in files], override_num_blocks=chunks) \
        .map_batches(score_scenes, batch_size=None, batch_format="numpy", num_cpus=1,
                     fn_kwargs={"text_vectors": text_vectors, "settings": settings, "own_similarity": own_similarity})
    rows, seen = [], set()
    with progress("scored", len(files), "scene", desc="scored") as advance:
        for row in scored.iter_rows():  # a scene's rows (one per query) come together, with its block
            rows.append(row)
            if row["file"] not in seen:
                seen.add(row["file"])
                advance(1)
    return rows


def rank_scenes(scores: list[dict], top: int) -> dict[int, list[dict]]:
    """``{k: the top scene rows of query k, best first}``: by scene score, highest first (NaN never ranks).

    >>> rows = [{"k": 0, "image": "a", "scene_score": 0.1}, {"k": 0, "image": "b", "scene_score": 0.3},
    ...         {"k": 0, "image": "c", "scene_score": float("nan")}]
    >>> [r["image"] for r in rank_scenes(rows, 5)[0]]
    ['b', 'a']
    """
    ranked: dict[int, list[dict]] = {}
    for row in sorted((r for r in scores if math.isfinite(r["scene_score"])), key=lambda r: -r["scene_score"]):
        chosen = ranked.setdefault(int(row["k"]), [])
        if len(chosen) < top:
            chosen.append(row)
    return ranked


# ---- the maps of the top scenes ------------------------------------------------------------------------------

def archive_store(encoder: EncoderSpecModel, raster_key: str, tiles: list[Tile],
                  vectors: np.ndarray) -> TileVectorStore:
    """An in-memory tile-vector store of one scene holding its archived vectors (v2's refinement boxes,
    which depend on the query, are encoded when asked)."""
    store = TileVectorStore(encoder)
    store.use_image(raster_key)
    store.vectors_by_tile.update(zip(tiles, vectors))
    return store


def scene_maps(path: str, jobs: list[tuple[int, str]], queries: list[str], out_dir: str,
               settings: ArchiveSettings) -> list[dict]:
    """The full SeLo maps of one archived scene for the queries ``jobs`` (``(k, query)``, ``k``
    its number in ``queries``), made and written by ``selo-localise``'s own code
    (:class:`~predict.scenes.SceneRun`) with the tiles' vectors taken from the archive, then moved into
    ``out_dir``. Returns per job ``{"k", "files", "peak"}`` (the output names and the rank-1 peak feature)
    or ``{"k", "error"}``."""
    image = path  # named by its image once its file is read
    ignored: list[str] = []  # the scene's warnings were reported when it was indexed
    answers = []
    with ExitStack() as scene:
        try:
            header, tiles, vectors = load_scene(path, settings)  # checked again: it may have changed since the scoring
            image = header["image"]
            raster = open_scene(image, scene, settings.bands, settings.stretch, ignored)  # read by stripes
        except Exception as exc:
            return [{"k": k, "error": scene_error(image, exc)} for k, _ in jobs]
        encoder = cached_encoder(settings)
        with tempfile.TemporaryDirectory(prefix=".maps-", dir=out_dir) as scratch:  # beside: moved by a rename
            config = SceneConfig(out_dir=scratch, pipeline=settings.spec(), bands=settings.bands,
                                 stretch=settings.stretch)
            run = SceneRun(config, encoder, logging.getLogger("selo.search"),  # files named by the search's numbers
                           vectors=archive_store(encoder, raster.key, tiles, vectors), queries=queries)
            run.plan(raster, image)
            for k, query in jobs:
                try:
                    stage1 = first_stage(raster, settings.spec(), image, ignored)
                    files = run.localise(raster, stage1, image, query, time.perf_counter(), ignored)["files"]
                    with open(os.path.join(scratch, files["peaks"]), encoding="utf-8") as f:
                        peaks = json.load(f)["features"]
                    for name in files.values():
                        os.replace(os.path.join(scratch, name), os.path.join(out_dir, name))
                    answers.append({"k": k, "files": files, "peak": peaks[0] if peaks else None})
                except Exception as exc:
                    answers.append({"k": k, "error": f"{image}, query {k}: {first_line(exc)}"})
    return answers


scene_maps_task = ray.remote(num_cpus=1)(scene_maps)  # a task per scene: its maps, one after the other


def same_names(ranked: dict[int, list[dict]]) -> dict[str, str]:
    """``{file: error line}`` of the ranked scenes whose file name (stem) an earlier one has: their outputs
    would overwrite each other's.

    >>> rows = [{"file": "a1", "image": "/x/a.tif"}, {"file": "a2", "image": "/y/a.png"}]
    >>> same_names({0: rows})
    {'a2': '/y/a.png: same file name as /x/a.tif; its outputs would overwrite those'}
    """
    errors, stems = {}, {}
    for path, row in {row["file"]: row for rows in ranked.values() for row in rows}.items():
        stem = os.path.splitext(os.path.basename(row["image"]))[0]
        if stem in stems:
            errors[path] = f"{row['image']}: same file name as {stems[stem]}; its outputs would overwrite those"
        stems.setdefault(stem, row["image"])
    return errors


def draw_maps(ranked: dict[int, list[dict]], queries: list[str], out_dir: str,
              settings: ArchiveSettings) -> dict[tuple[str, int], dict]:
    """The maps of the ranked scenes, one Ray task per scene (all its queries): ``{(file, k): answer}``
    (see :func:`scene_maps`). Two scenes of one file name would write the same outputs: the second is an
    error, as in ``selo-localise``."""
    jobs: dict[str, list[tuple[int, str]]] = {}
    for k, rows in ranked.items():
        for row in rows:
            jobs.setdefault(row["file"], []).append((k, queries[k]))
    answers = {}
    for path, message in same_names(ranked).items():
        answers.update({(path, k): {"k": k, "error": message} for k, _ in jobs.pop(path)})
    refs = {path: scene_maps_task.remote(path, scene_jobs, queries, out_dir, settings)
            for path, scene_jobs in jobs.items()}
    with progress("maps", len(refs), "scene", desc="maps") as advance:
        for path, ref in refs.items():
            try:
                answers.update({(path, answer["k"]): answer for answer in ray.get(ref)})
            except ray.exceptions.RayError as exc:
                answers.update({(path, k): {"k": k, "error": f"{path}: {first_line(exc)}"} for k, _ in jobs[path]})
            advance(1)
    return answers


def hit_feature(row: dict, rank: int, peak: dict | None) -> dict:
    """A top scene as a GeoJSON Point at its rank-1 peak (no geometry when its map has no peak)."""
    properties = {"scene": row["image"], "rank": rank, "scene_score": row["scene_score"]}
    if peak is None:
        return {"type": "Feature", "geometry": None,
                "properties": {**properties, "score": None, "col": None, "row": None}}
    return {"type": "Feature", "geometry": peak["geometry"],
            "properties": {**properties, **{name: peak["properties"][name] for name in ("score", "col", "row")}}}


# ---- the search and its output folder ------------------------------------------------------------------------

@dataclass
class SearchRun:
    """What a ``selo-search`` run did: ``results`` and ``errors``, its ``seconds`` (``scoring``: text vectors
    and every scene's score; ``maps``: the top scenes' maps) and ``files``: the record of every output it
    wrote (``summary.json``, written through the store: the folder holds exactly what it lists)."""

    out_dir: str
    results: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)

    def fail(self, message: str, logger: logging.Logger) -> None:
        self.errors.append(message)
        logger.error("%s", message)

    def write(self, key: str) -> None:
        write_stored_json(os.path.join(self.out_dir, SUMMARY_NAME),
                          {"results": self.results, "errors": self.errors, "seconds": self.seconds,
                           "files": self.files}, key)


def listed_outputs(out_dir: str) -> list[str]:
    """The outputs the summary of a search into ``out_dir`` lists ([] when it has none), names in the
    folder only (an edited summary never names a file elsewhere). A summary that cannot be trusted is a
    one-line :class:`~predict.provenance.StoredFileError`: what the folder holds would be unknown."""
    path = os.path.join(out_dir, SUMMARY_NAME)
    if not os.path.isfile(path):
        return []
    return read_trusted_json(path, lambda data: [str(name) for name in data["files"] if os.path.basename(name) == name],
                             "not what it should hold",
                             "not a summary selo-search wrote; move it away or use another --out")


def remove_listed_outputs(out_dir: str) -> None:
    """One folder, one truth: a search removes the outputs the previous summary lists, then the summary,
    before it writes its own (the user's other files stay; a crash in between leaves a summary naming
    files already gone, which the next search removes without error)."""
    for name in listed_outputs(out_dir):
        try:
            os.unlink(os.path.join(out_dir, name))
        except FileNotFoundError:
            pass
    remove_stored(os.path.join(out_dir, SUMMARY_NAME))


def numbered_queries(queries: list[str], run: SearchRun, logger: logging.Logger) -> list[str]:
    """The queries as ``selo-localise`` numbers them in a new folder (``k``: the position among the distinct
    non-empty ones); an empty query is one error line.

    >>> numbered_queries(["a", " ", "b", "a"], SearchRun("out"), logging.getLogger("doctest"))
    ['a', 'b']
    """
    for i, query in enumerate(queries):
        if not query.strip():
            run.fail(f"query {i}: empty query (skipped)", logger)
    return list(dict.fromkeys(q for q in queries if q.strip()))


def query_vectors(encoder: EncoderSpecModel, queries: list[str], spec: PipelineSpec, run: SearchRun,
                  logger: logging.Logger) -> list[np.ndarray | None]:
    """The text vector of each query; None for a query the encoder cannot read (no word it knows): one
    error line for it, the other queries answered."""
    vectors = []
    with notes_logged(logger) as notes:  # e.g. words the encoder does not know
        for k, query in enumerate(queries):
            try:
                vectors.append(query_vector(encoder, query, spec.shuffled_copies, query_rng(0, query), notes))
            except ValueError as exc:
                run.fail(f"q{k}: {first_line(exc)}; not answered", logger)
                vectors.append(None)
    return vectors


@dataclass(frozen=True)
class ArchiveSearch:
    """An archive opened for a search (:func:`open_search`), checked before Ray starts: its ``settings``
    (``yaml_path``: the encoder's yaml the search loads), its scene ``files``, the ``encoder`` and the
    output folder ``out_dir``."""

    archive: str
    out_dir: str
    settings: ArchiveSettings
    files: list[str]
    encoder: EncoderSpecModel


def open_search(archive: str, out_dir: str, yaml_path: str | None = None) -> ArchiveSearch:
    """Everything a search needs, checked before any work (and before Ray starts, in ``selo-search``): the
    archive, its encoder (the yaml it was indexed with, or ``yaml_path``: a copy of the same encoder moved
    elsewhere) with the archive's vectors key, and the output folder's summary. One-line errors: a
    :class:`~predict.provenance.StoredFileError`, ``FileNotFoundError``, ``ValueError``."""
    archive, out_dir = os.path.abspath(archive), os.path.abspath(out_dir)
    settings, files = open_archive(archive)
    yaml = os.path.abspath(yaml_path) if yaml_path else settings.yaml_path
    if not os.path.isfile(yaml):
        problem = "the encoder's yaml is gone" if yaml_path is None else "not found"
        raise FileNotFoundError(f"{yaml}: {problem} ({archive} was indexed with {settings.yaml_path}); "
                                "name where its yaml is now with --yaml_path")
    # as it is now, run as it was indexed: its key is checked
    encoder = load_encoder(yaml, device="cpu", runtime_choice=json.loads(settings.runtime_choice))
    if vectors_key(encoder) != settings.vectors_key:
        raise ValueError(f"{yaml}: not the encoder {archive} was indexed with (vectors key {vectors_key(encoder)}, "
                         f"indexed {settings.vectors_key}); name its yaml with --yaml_path, "
                         "or index into another --archive")
    listed_outputs(out_dir)  # a summary that cannot be trusted: stopped before any work
    return ArchiveSearch(archive, out_dir, replace(settings, yaml_path=yaml), files, encoder)


def search_archive(archive: str, queries: list[str], top: int, out_dir: str, logger: logging.Logger | None = None,
                   yaml_path: str | None = None) -> SearchRun:
    """Answer ``queries`` across ``archive`` (see ``selo-search`` and :func:`open_search`, whose one-line
    errors it raises); Ray must be initialised."""
    return run_search(open_search(archive, out_dir, yaml_path), queries, top, logger)


def run_search(search: ArchiveSearch, queries: list[str], top: int, logger: logging.Logger | None = None) -> SearchRun:
    """The search :func:`search_archive` describes, of an opened archive; Ray must be initialised. The
    outputs of the folder's previous search go first: the folder then holds exactly what ``summary.json``
    lists."""
    logger = logger or logging.getLogger("selo")
    settings, out_dir = search.settings, search.out_dir
    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    remove_listed_outputs(out_dir)
    run = SearchRun(out_dir)
    queries = numbered_queries(queries, run, logger)
    text_vectors = query_vectors(search.encoder, queries, settings.spec(), run, logger)
    own_similarity = type(search.encoder).cosine_sim is not EncoderSpecModel.cosine_sim
    scores = score_archive(search.files, text_vectors, settings, own_similarity)
    for error in sorted({row["error"] for row in scores if row["error"]}):
        run.fail(error, logger)
    ranked = rank_scenes([row for row in scores if not row["error"]], top)
    run.seconds["scoring"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    answers = draw_maps(ranked, queries, out_dir, settings)
    for k, query in enumerate(queries):
        if text_vectors[k] is not None:
            record_query(run, k, query, ranked.get(k, []), answers, settings.vectors_key, logger)
    run.seconds["maps"] = round(time.perf_counter() - started, 3)
    run.write(settings.vectors_key)
    return run


def record_query(run: SearchRun, k: int, query: str, ranked: list[dict], answers: dict, key: str,
                 logger: logging.Logger) -> None:
    """Query ``k``'s results and ``hits_q<k>.geojson`` from the maps drawn (``answers``, see
    :func:`draw_maps`), each output's record kept in ``run.files`` (produced by ``key``)."""
    hits = []
    for rank, row in enumerate(ranked, start=1):
        answer = answers[(row["file"], k)]
        if "error" in answer:
            run.fail(answer["error"], logger)
            continue
        files = answer["files"]
        run.files.update({name: seal_file(os.path.join(run.out_dir, name), key, beside=False)
                          for name in files.values()})
        run.results.append({"query": query, "scene": row["image"], "rank": rank,
                            "scene_score": float(row["scene_score"]), "probmap": files["probmap"],
                            "peaks": files["peaks"], "overlay": files["overlay"]})
        hits.append(hit_feature(row, rank, answer["peak"]))
        logger.info("q%d %r: #%d %s (scene score %.6g)", k, query, rank, row["image"], row["scene_score"])
    name = f"hits_q{k}.geojson"
    run.files[name] = write_stored_json(os.path.join(run.out_dir, name),
                                        {"type": "FeatureCollection", "features": hits}, key, beside=False)
