"""``selo-index``: the Ray Data pipeline that indexes scenes into an archive (see :mod:`predict.archive.store`
for what it writes).

One pipeline: which scenes need indexing (:func:`plan_scene`, in Ray tasks), decoding and tile cutting
(:func:`cut_scene`, CPU tasks spread over the nodes, each reading its scene by row stripes within a memory
budget, as ``selo-localise`` does: :mod:`predict.io.scene_blocks`), encoding in a pool of actors
(:class:`TileEncoder`, one per GPU when the cluster has GPUs), and the driver writing each scene the moment
its last tile vector arrives (:class:`SceneAssembler`).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import ray

from predict.archive.store import (ArchiveSettings, check_archive_settings, load_scene, remove_gone_scenes,
                                   remove_partial_writes, scene_error, scene_image_key, scene_path, write_catalogue,
                                   write_index, write_scene, write_settings)
from predict.core.blocks import plan_stripes
from predict.core.memory import MEMORY_PER_CORE, resident_bytes
from predict.core.tiling import Tile
from predict.encoders.base import check_image_vectors
from predict.encoders.registry import load_encoder
from predict.io.annotations import SampleError
from predict.io.images import IMAGE_EXTENSIONS
from predict.io.lock import folder_lock
from predict.io.progress import progress
from predict.io.raster import RasterImage
from predict.io.scene_blocks import open_scene
from predict.provenance import StoredFileError, file_digest, remove_stored
from predict.scenes import first_stage

TILES_PER_BATCH = 256  # tiles per block cut: a 10000 px scene is about 17 blocks, never one huge one
PLAN_BLOCKS = 256  # at most this many tasks check which scenes are already indexed


def spread() -> dict:
    """Ray remote arguments of tasks spread over the nodes."""
    return {"scheduling_strategy": "SPREAD"}


def encoder_actors() -> dict:
    """How the encoder actors are placed: one per GPU with ``num_gpus=1`` when the cluster has GPUs,
    else CPU actors, one per two CPUs (the other CPU decodes and cuts)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"num_gpus": 1, "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=gpus)}
    cpus = int(resources.get("CPU", 1))
    return {"num_cpus": 1, "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // 2))}


def expand_images(paths: list[str]) -> tuple[list[str], list[str]]:
    """Absolute image paths of ``paths`` (files, folders: the images directly in them, or globs), each
    once, in the order given; and one error line per path that names no image."""
    images, errors = [], []
    for path in paths:
        if glob.has_magic(path):
            found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name)))
        else:
            found = [path]
        if not found:
            errors.append(f"{path}: no image found there")
        images += [os.path.abspath(p) for p in found]
    return list(dict.fromkeys(images)), errors


# ---- the stages of the pipeline ------------------------------------------------------------------------------

def plan_scene(row: dict, archive: str, settings: ArchiveSettings) -> dict:
    """Ray Data ``map``: the ``status`` of the scene ``row["image"]``: ``"kept"`` when its file in the archive
    is whole and current (:func:`~predict.archive.store.load_scene`; ``tiles``: its tile count), ``"index"``
    when it must be indexed (``reason``: why its file is not kept, "" when it has none), else the error line."""
    image = row["image"]
    started = time.perf_counter()
    path = scene_path(archive, image)
    plan = {"image": image, "status": "index", "reason": "", "tiles": 0}
    try:
        if not os.path.exists(image):
            return {**plan, "status": f"{image}: image not found", "seconds": 0.0}
        if os.path.isfile(path):
            plan.update(status="kept", tiles=int(load_scene(path, settings)[0]["tiles"]))
    except StoredFileError as error:
        plan["reason"] = str(error)
    except Exception as exc:
        return {**plan, "status": scene_error(image, exc), "seconds": 0.0}
    return {**plan, "seconds": time.perf_counter() - started}


def scene_header(raster: RasterImage, settings: ArchiveSettings, key: str, tiles: int, left_out: int, masked: int,
                 notes: list[str]) -> dict:
    """What the archive records of a scene beside its vectors (JSON-ready); ``masked``: its nodata pixels."""
    height, width = raster.pixels.shape[:2]
    return {"image": raster.path, "height": height, "width": width,
            "crs": raster.crs.to_wkt() if raster.crs is not None else None,
            "transform": list(raster.transform)[:6],
            "nodata": {"masked_pixels": masked, "tiles_left_out": left_out,
                       "rule": "tiles less than half valid are neither encoded nor scored"},
            **{name: settings.as_json()[name] for name in ("bands", "stretch", "pipeline", "steps")},
            "image_key": key, "vectors_key": settings.vectors_key, "tiles": tiles,
            "warnings": notes}


def error_rows(image: str, message: str, tile_size: int) -> dict:
    """The one row that carries a scene's failure through the pipeline (``tiles_in_scene`` 0)."""
    return {"scene": np.array([image]), "header": np.array([json.dumps({"error": message})]),
            "tiles_in_scene": np.zeros(1, np.int64), "tile": np.full((1, 4), -1, np.int64),
            "pixels": np.zeros((1, tile_size, tile_size, 3), np.uint8), "started": np.array([time.time()])}


def open_striped(image: str, stack: ExitStack, settings: ArchiveSettings, memory_mb: int | None,
                 notes: list[str]) -> RasterImage:
    """The scene at ``image`` opened by stripes (:func:`~predict.io.scene_blocks.open_scene`, as ``selo-localise``
    reads it) until ``stack`` closes, its stripes planned so that the task stays within ``memory_mb`` (by
    default :data:`~predict.core.memory.MEMORY_PER_CORE`: a cutting task holds one CPU) beside what the
    process holds and the block of tiles being cut. The plan changes the memory, never a tile."""
    raster = open_scene(image, stack, settings.bands, settings.stretch, notes)
    height, width = raster.pixels.shape[:2]
    budget = memory_mb * 10**6 if memory_mb else MEMORY_PER_CORE
    room = max(0, budget - resident_bytes() - 2 * TILES_PER_BATCH * settings.tile_size ** 2 * 3)
    plan = plan_stripes(height, width, room, max(settings.steps), raster.pixels.block_rows)
    raster.pixels.plan(plan.rows, plan.margin)
    return raster


def scene_rows(image: str, settings: ArchiveSettings, memory_mb: int | None, stack: ExitStack):
    """The rows :func:`cut_scene` yields for one scene: its tiles cut stripe by stripe, in blocks; one
    error row when it cannot be read (also after some blocks: the driver then drops the scene whole)."""
    tile_size, spec = settings.tile_size, settings.spec()
    started = time.time()
    notes: list[str] = []  # for the driver's log
    try:
        raster = open_striped(image, stack, settings, memory_mb, notes)
        key = scene_image_key(image, settings)
        tiles = spec.first_stage_tiles(*raster.pixels.shape[:2], image, notes)
        kept = first_stage(raster, spec, image, notes=[])  # the tiles selo-localise scores (half valid)
        if not kept:
            raise ValueError("no tile is at least half valid pixels (the image is mostly nodata)")
        header = json.dumps(scene_header(raster, settings, key, len(kept), len(tiles) - len(kept),
                                         raster.pixels.nodata_pixels(), notes))
        ordered = raster.pixels.encoding_order(kept)  # the order a sweep of stripes cuts them in
        blocks = raster.pixels.tile_batches(ordered, tile_size, TILES_PER_BATCH)
        for start, pixels in zip(range(0, len(ordered), TILES_PER_BATCH), blocks):
            chunk = ordered[start:start + TILES_PER_BATCH]
            yield {"scene": np.array([image] * len(chunk)), "header": np.array([header] * len(chunk)),
                   "tiles_in_scene": np.full(len(chunk), len(kept), np.int64), "tile": np.array(chunk, np.int64),
                   "pixels": pixels, "started": np.full(len(chunk), started)}
        if file_digest(image) != raster.digest:  # read pass after pass: its tiles must be of one content
            raise SampleError(f"{image}: the file changed while it was read; read it again once it is complete")
    except Exception as exc:
        yield error_rows(image, scene_error(image, exc), tile_size)


def cut_scene(batch: dict, settings: ArchiveSettings, memory_mb: int | None = None):
    """Ray Data ``map_batches`` (one scene per batch, a CPU task): read the scene by stripes as ``selo-localise``
    does (within ``memory_mb``: :func:`open_striped`), cut its first-stage tiles (those at least half valid)
    to the encoder's tile size, and yield them in blocks of :data:`TILES_PER_BATCH` rows: ``scene``,
    ``header`` (JSON), ``tiles_in_scene``, ``tile`` ``(4,)``, ``pixels`` uint8 RGB ``(S, S, 3)``, ``started``
    (epoch seconds). A scene that cannot be read or has no valid tile yields an error row (one line naming
    the file, and the window for a block that fails to decode)."""
    for image in batch["image"]:
        with ExitStack() as stack:  # the file stays open while its tiles are cut
            yield from scene_rows(image, settings, memory_mb, stack)


class TileEncoder:
    """Ray Data actor: the encoder, loaded once per actor (on its GPU when Ray gave it one), turning the
    ``pixels`` of tile rows into ``vector`` rows (float32 ``(D,)``). Error rows get a NaN vector; an encoder
    failing on a batch turns its rows into error rows naming the scene."""

    def __init__(self, settings: ArchiveSettings, batch_size: int | None):
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.encoder = load_encoder(settings.yaml_path, device=device, batch_size=batch_size,
                                    runtime_choice=json.loads(settings.runtime_choice))
        self.name = getattr(self.encoder, "name", type(self.encoder).__name__)
        probe = np.zeros((1, self.encoder.tile_size, self.encoder.tile_size, 3), np.uint8)
        self.dim = check_image_vectors(self.encoder.image_encoder(probe), 1, self.name).shape[1]

    def __call__(self, batch: dict) -> dict:
        tiles = batch["tiles_in_scene"] > 0
        vectors = np.full((len(tiles), self.dim), np.nan, np.float32)
        out = {name: batch[name] for name in ("scene", "header", "tiles_in_scene", "tile", "started")}
        if tiles.any():
            try:
                vectors[tiles] = check_image_vectors(self.encoder.image_encoder(batch["pixels"][tiles]),
                                                     int(tiles.sum()), self.name, self.dim)
            except Exception as exc:
                out["header"] = np.array([json.dumps({"error": scene_error(scene, exc)}) for scene in batch["scene"]])
                out["tiles_in_scene"] = np.zeros(len(tiles), np.int64)
        return {**out, "vector": vectors}


# ---- the driver's side ---------------------------------------------------------------------------------------

@dataclass
class IndexRun:
    """What a ``selo-index`` run did: ``scenes`` (index.json's entries) and ``errors`` (one line each)."""

    archive: str
    key: str  # the archive's vectors key: what produced its files
    scenes: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def write(self) -> None:
        write_index(self.archive, self.scenes, self.errors, self.key)


class SceneAssembler:
    """The driver's side of the pipeline: gathers each scene's vectors as they arrive (in any order, each
    tile once however often a retried task delivers it) and writes the scene's file the moment it is
    complete."""

    def __init__(self, run: IndexRun, logger: logging.Logger):
        self.run = run
        self.logger = logger
        self.pending: dict[str, dict[Tile, np.ndarray]] = {}
        self.failed: set[str] = set()

    def fail(self, image: str, message: str) -> None:
        self.failed.add(image)
        self.pending.pop(image, None)
        self.run.errors.append(message)
        self.logger.error("%s", message)
        stale = scene_path(self.run.archive, image)
        if os.path.isfile(stale):  # the archive holds a scene only as its file reads now
            remove_stored(stale)
            self.logger.error("%s: its earlier entry %s was removed", image, os.path.basename(stale))

    def finished(self) -> int:
        """How many scenes are done: written, kept or failed."""
        return len(self.run.scenes) + len(self.failed)

    def add(self, batch: dict) -> None:
        for i, image in enumerate(batch["scene"]):
            if image in self.failed:
                continue
            header = json.loads(batch["header"][i])
            if "error" in header:
                self.fail(image, header["error"])
                continue
            vectors = self.pending.setdefault(image, {})
            vectors[tuple(int(v) for v in batch["tile"][i])] = batch["vector"][i]
            if len(vectors) == header["tiles"]:
                self.complete(image, header, float(batch["started"][i]))

    def complete(self, image: str, header: dict, started: float) -> None:
        vectors = self.pending.pop(image)
        tiles = sorted(vectors)
        for note in header.pop("warnings"):
            self.logger.warning("%s", note)
        write_scene(scene_path(self.run.archive, image), header, np.array(tiles, np.int64),
                    np.stack([vectors[t] for t in tiles]))
        entry = {"image": image, "tiles": len(tiles), "tiles_encoded": len(tiles),
                 "seconds": round(time.time() - started, 3)}
        self.run.scenes.append(entry)
        self.logger.info("%s: %d tiles encoded, %.1fs", image, len(tiles), entry["seconds"])


def plan_scenes(images: list[str], archive: str, settings: ArchiveSettings, assembler: SceneAssembler,
                logger: logging.Logger) -> list[str]:
    """The images to index, in the order given; the scenes kept go into the run's entries at once (checked in
    parallel Ray tasks, see :func:`plan_scene`), those that cannot be read into its errors."""
    if not images:
        return []
    todo = []
    blocks = min(len(images), PLAN_BLOCKS)
    plans = ray.data.from_items([{"image": image} for image in images], override_num_blocks=blocks) \
        .map(plan_scene, fn_kwargs={"archive": archive, "settings": settings}).take_all()
    for plan in sorted(plans, key=lambda p: images.index(p["image"])):
        if plan["status"] == "index":
            todo.append(plan["image"])
            if plan["reason"]:
                logger.info("%s; indexed again", plan["reason"])
        elif plan["status"] == "kept":
            assembler.run.scenes.append({"image": plan["image"], "tiles": plan["tiles"], "tiles_encoded": 0,
                                         "seconds": round(plan["seconds"], 3)})
            logger.info("%s: already indexed with the same key, kept", plan["image"])
        else:
            assembler.fail(plan["image"], plan["status"])
    return todo


def encode_scenes(todo: list[str], settings: ArchiveSettings, batch_size: int, assembler: SceneAssembler,
                  memory_mb: int | None = None) -> None:
    """Index the scenes ``todo``: the pipeline's batches handed to ``assembler`` as they come. Decoding is
    spread over the nodes, in tasks apart from the encoder actors (a ``ray_remote_args_fn`` also keeps Ray
    Data from fusing the two stages into the actors), each within ``memory_mb`` (see :func:`open_striped`)."""
    if not todo:
        return
    pipeline = ray.data.from_items([{"image": image} for image in todo], override_num_blocks=len(todo)) \
        .map_batches(cut_scene, batch_size=1, num_cpus=1, batch_format="numpy", ray_remote_args_fn=spread,
                     fn_kwargs={"settings": settings, "memory_mb": memory_mb}) \
        .map_batches(TileEncoder, batch_size=batch_size, batch_format="numpy",
                     fn_constructor_kwargs={"settings": settings, "batch_size": batch_size},
                     **encoder_actors())
    with progress("scenes", len(todo), "scene", desc="indexed") as advance:
        for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
            finished = assembler.finished()
            assembler.add(batch)
            advance(assembler.finished() - finished)
    for image in list(assembler.pending):  # cannot happen unless tiles were lost: never a partial file
        assembler.fail(image, f"{image}: the pipeline ended with {len(assembler.pending[image])} tiles "
                              "of the scene missing; nothing written, run again")


def index_archive(paths: list[str], archive: str, settings: ArchiveSettings, batch_size: int,
                  logger: logging.Logger | None = None, memory_mb: int | None = None) -> IndexRun:
    """Index the images of ``paths`` (files, folders, globs; see :func:`expand_images`) into ``archive``
    with ``settings`` (see :mod:`predict.archive.store`);
    Ray must be initialised (as :func:`~predict.cli.ray_session.ray_session` does). Scenes already there with
    the same key are kept (``tiles_encoded`` 0), scenes whose image is gone are removed; ``batch_size`` tiles
    go through the encoder at once; a scene that fails is one error line, the others go on. A conflict with the
    archive's settings raises ``ValueError`` (one line) before any work. A scene of any size is read by
    stripes within ``memory_mb`` per cutting task (:func:`open_striped`); it is no setting of the archive:
    it never changes a tile nor a vector."""
    logger = logger or logging.getLogger("selo")
    archive = os.path.abspath(archive)
    run = IndexRun(archive, settings.vectors_key)
    with folder_lock(archive):
        check_archive_settings(archive, settings)
        write_settings(archive, settings)
        remove_partial_writes(archive)
        remove_gone_scenes(archive, settings.vectors_key, logger)
        assembler = SceneAssembler(run, logger)
        images, path_errors = expand_images(paths)
        for error in path_errors:
            run.errors.append(error)
            logger.error("%s", error)
        encode_scenes(plan_scenes(images, archive, settings, assembler, logger), settings, batch_size, assembler,
                      memory_mb)
        write_catalogue(archive, settings.vectors_key)
        run.write()
    return run
