"""``selo-index``: the Ray Data pipeline that indexes scenes into an archive (see :mod:`predict.archive.store`
for what it writes).

One pipeline: which scenes need indexing (:func:`plan_scene`, in Ray tasks), decoding and tile cutting
(:func:`cut_scene`, CPU tasks spread over the nodes, each reading its scene by row stripes within a memory
budget, as ``selo-localise`` does: :mod:`predict.io.scene_blocks`; a scene of more than
:data:`PART_PIXELS` split by bands of rows across several tasks, :func:`part_rows`), encoding in a pool of
actors (:class:`TileEncoder`, one per GPU when the cluster has GPUs), and the driver writing each scene the
moment the last tile vector of its last part arrives (:class:`SceneAssembler`).
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import ray
import rasterio

from predict.archive.store import (ArchiveSettings, check_archive_settings, load_scene, remove_gone_scenes,
                                   remove_partial_writes, scene_error, scene_image_key, scene_path, write_catalogue,
                                   write_index, write_scene, write_settings)
from predict.core.blocks import ROWS_ALIGN, plan_stripes, row_stripes
from predict.core.memory import MEMORY_PER_CORE, resident_bytes
from predict.core.tiling import Tile, tiles_in_rows
from predict.encoders.base import check_image_vectors
from predict.encoders.registry import load_encoder
from predict.io.images import IMAGE_EXTENSIONS
from predict.io.lock import folder_lock
from predict.io.progress import progress
from predict.io.raster import RasterImage
from predict.io.scene_blocks import (EXACT_PERCENTILE_PIXELS, WINDOWED_DRIVERS, changed_while_read, open_scene,
                                     require_unchanged)
from predict.provenance import StoredFileError, remove_stored
from predict.runtime import GDAL_CACHE_MB
from predict.scenes import first_stage

TILES_PER_BATCH = 256  # tiles per block cut: a 10000 px scene is about 17 blocks, never one huge one
PLAN_BLOCKS = 256  # at most this many tasks check which scenes are already indexed
# a scene of more pixels is cut by several tasks, a band of rows each (a 40000 px scene: 12); up to it, one task
# counts a deep scene's stretch exactly once, as its parts would each do again
PART_PIXELS = EXACT_PERCENTILE_PIXELS
NO_VALID_TILE = "no tile is at least half valid pixels (the image is mostly nodata)"


def spread() -> dict:
    """Ray remote arguments of the cutting tasks: spread over the nodes, GDAL's block cache held to
    :data:`~predict.runtime.GDAL_CACHE_MB` as in ``selo-localise`` (by default 5 % of the node's memory: a 20000
    px scene's blocks filled 1.2 GB of a task meant to stay within 700 MB)."""
    return {"scheduling_strategy": "SPREAD", "runtime_env": {"env_vars": {"GDAL_CACHEMAX": str(GDAL_CACHE_MB)}}}


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

def plan_scene(row: dict, archive: str, settings: ArchiveSettings, part_pixels: int = PART_PIXELS) -> dict:
    """Ray Data ``map``: the ``status`` of the scene ``row["image"]``: ``"kept"`` when its file in the archive
    is whole and current (:func:`~predict.archive.store.load_scene`; ``tiles``: its tile count), ``"index"``
    when it must be indexed (``reason``: why its file is not kept, "" when it has none; ``parts``: how many
    tasks cut it, :func:`scene_parts`), else the error line."""
    image = row["image"]
    started = time.perf_counter()
    path = scene_path(archive, image)
    plan = {"image": image, "status": "index", "reason": "", "tiles": 0, "parts": 1}
    try:
        if not os.path.exists(image):
            return {**plan, "status": f"{image}: image not found", "seconds": 0.0}
        if os.path.isfile(path):
            plan.update(status="kept", tiles=int(load_scene(path, settings)[0]["tiles"]))
    except StoredFileError as error:
        plan["reason"] = str(error)
    except Exception as exc:
        return {**plan, "status": scene_error(image, exc), "seconds": 0.0}
    if plan["status"] == "index":
        plan["parts"] = scene_parts(image, part_pixels)
    return {**plan, "seconds": time.perf_counter() - started}


def scene_parts(image: str, part_pixels: int = PART_PIXELS) -> int:
    """How many tasks cut the scene at ``image``: about one per ``part_pixels`` of it, as many as
    :func:`part_rows` makes bands (its header read; 1 when it cannot be read: the cutting task says why)."""
    try:
        with rasterio.open(image) as src:
            block_rows = src.block_shapes[0][0] if src.driver in WINDOWED_DRIVERS else 1
            return len(part_rows(src.height, -(-src.height * src.width // part_pixels), block_rows))
    except Exception:
        return 1


def part_rows(height: int, parts: int, block_rows: int = 1) -> list[tuple[int, int]]:
    """``(row0, row1)`` of the bands of rows that ``parts`` tasks cut a scene of ``height`` rows in (fewer
    when the scene is short): equal bands, whole multiples of 256 rows and of the file's ``block_rows``.
    A part cuts the tiles whose first row lies in its band (each read whole, with the rows beyond it).

    >>> part_rows(40000, 12, 512)
    [(0, 3584), (3584, 7168), (7168, 10752), (10752, 14336), (14336, 17920), (17920, 21504), (21504, 25088), (25088, 28672), (28672, 32256), (32256, 35840), (35840, 39424), (39424, 40000)]
    """
    align = math.lcm(ROWS_ALIGN, max(1, block_rows))
    band = -(-height // max(1, parts))
    return row_stripes(height, -(-band // align) * align)


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


def tileless_row(image: str, header: str, tile_size: int) -> dict:
    """The one row of a part without tiles (``tiles_in_part`` 0): its ``header`` (JSON) carries the part's
    counts, or with ``"error"`` the scene's failure."""
    return {"scene": np.array([image]), "header": np.array([header]), "tiles_in_part": np.zeros(1, np.int64),
            "tile": np.full((1, 4), -1, np.int64), "pixels": np.zeros((1, tile_size, tile_size, 3), np.uint8),
            "started": np.array([time.time()])}


def error_rows(image: str, message: str, tile_size: int) -> dict:
    """The one row that carries a scene's failure through the pipeline."""
    return tileless_row(image, json.dumps({"error": message}), tile_size)


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


def scene_rows(image: str, part: int, parts: int, settings: ArchiveSettings, memory_mb: int | None,
               stack: ExitStack):
    """The rows :func:`cut_scene` yields for part ``part`` of ``parts`` of one scene (:func:`part_rows`): its
    tiles cut stripe by stripe, in blocks, each row's header saying the part and its counts (one row with
    no tile for a part that has none); one error row when it cannot be read (also after some blocks: the
    driver then drops the scene whole)."""
    tile_size, spec = settings.tile_size, settings.spec()
    started = time.time()
    notes: list[str] = []  # for the driver's log
    try:
        raster = open_striped(image, stack, settings, memory_mb, notes)
        height, width = raster.pixels.shape[:2]
        key = scene_image_key(image, settings)
        bands = part_rows(height, parts, raster.pixels.block_rows)
        if len(bands) != parts:  # planned on another content
            raise changed_while_read(image)
        rows = bands[part]
        tiles = tiles_in_rows(spec.first_stage_tiles(height, width, image, notes), rows, height, width)
        # the tiles selo-localise scores (half valid); a single tile is an error of the whole scene only
        kept = first_stage(raster, spec, image, notes=[], rows=None if parts == 1 else rows)
        header = scene_header(raster, settings, key, len(kept), len(tiles) - len(kept),
                              raster.pixels.nodata_pixels(rows), notes)
        header = json.dumps(header | {"part": part, "parts": parts})
        ordered = raster.pixels.encoding_order(kept)  # the order a sweep of stripes cuts them in
        blocks = raster.pixels.tile_batches(ordered, tile_size, TILES_PER_BATCH)
        for start, pixels in zip(range(0, len(ordered), TILES_PER_BATCH), blocks):
            chunk = ordered[start:start + TILES_PER_BATCH]
            yield {"scene": np.array([image] * len(chunk)), "header": np.array([header] * len(chunk)),
                   "tiles_in_part": np.full(len(chunk), len(kept), np.int64), "tile": np.array(chunk, np.int64),
                   "pixels": pixels, "started": np.full(len(chunk), started)}
        require_unchanged(image, raster.digest)  # read pass after pass: its tiles must be of one content
        if not kept:
            yield tileless_row(image, header, tile_size)
    except Exception as exc:
        yield error_rows(image, scene_error(image, exc), tile_size)


def cut_scene(batch: dict, settings: ArchiveSettings, memory_mb: int | None = None):
    """Ray Data ``map_batches`` (one part of a scene per batch, a CPU task): read the scene by stripes as
    ``selo-localise`` does (within ``memory_mb``: :func:`open_striped`), cut the first-stage tiles (those at
    least half valid) of the part's band of rows to the encoder's tile size, and yield them in blocks of
    :data:`TILES_PER_BATCH` rows: ``scene``, ``header`` (JSON, with ``part`` and ``parts``),
    ``tiles_in_part``, ``tile`` ``(4,)``, ``pixels`` uint8 RGB ``(S, S, 3)``, ``started`` (epoch seconds).
    A scene that cannot be read yields an error row (one line naming the file, and the window for a block
    that fails to decode)."""
    for image, part, parts in zip(batch["image"], batch["part"], batch["parts"]):
        with ExitStack() as stack:  # the file stays open while its tiles are cut
            yield from scene_rows(str(image), int(part), int(parts), settings, memory_mb, stack)


class TileEncoder:
    """Ray Data actor: the encoder, loaded once per actor (on its GPU when Ray gave it one), turning the
    ``pixels`` of tile rows into ``vector`` rows (float32 ``(D,)``). Rows without a tile get a NaN vector; an encoder
    failing on a batch turns its rows into error rows naming the scene."""

    def __init__(self, settings: ArchiveSettings, batch_size: int | None):
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.encoder = load_encoder(settings.yaml_path, device=device, batch_size=batch_size,
                                    runtime_choice=json.loads(settings.runtime_choice))
        self.name = getattr(self.encoder, "name", type(self.encoder).__name__)
        probe = np.zeros((1, self.encoder.tile_size, self.encoder.tile_size, 3), np.uint8)
        self.dim = check_image_vectors(self.encoder.image_encoder(probe), 1, self.name).shape[1]

    def __call__(self, batch: dict) -> dict:
        tiles = batch["tiles_in_part"] > 0
        vectors = np.full((len(tiles), self.dim), np.nan, np.float32)
        out = {name: batch[name] for name in ("scene", "header", "tiles_in_part", "tile", "started")}
        if tiles.any():
            try:
                vectors[tiles] = check_image_vectors(self.encoder.image_encoder(batch["pixels"][tiles]),
                                                     int(tiles.sum()), self.name, self.dim)
            except Exception as exc:
                out["header"] = np.array([json.dumps({"error": scene_error(scene, exc)}) for scene in batch["scene"]])
                out["tiles_in_part"] = np.zeros(len(tiles), np.int64)
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


@dataclass
class PendingScene:
    """A scene whose parts are arriving: each part's header (by part number) and the vectors so far."""

    parts: int
    headers: dict[int, dict] = field(default_factory=dict)
    vectors: dict[Tile, np.ndarray] = field(default_factory=dict)
    started: float = math.inf

    def complete(self) -> bool:
        return len(self.headers) == self.parts and len(self.vectors) == sum(h["tiles"] for h in self.headers.values())

    def header(self) -> dict:
        """The scene's header: its parts' headers, which agree but for their counts, with the counts summed;
        a ValueError (one line) when they disagree (the file changed between two parts' reading) or no tile
        of the scene is half valid."""
        headers = [self.headers[k] for k in range(self.parts)]
        counted = {"tiles", "nodata", "warnings", "part"}
        if any({k: v for k, v in h.items() if k not in counted} != {k: v for k, v in headers[0].items()
                                                                    if k not in counted} for h in headers):
            raise ValueError("the file changed while its parts were read; read it again once it is complete")
        header = {k: v for k, v in headers[0].items() if k not in ("part", "parts")}
        header["tiles"] = sum(h["tiles"] for h in headers)
        if not header["tiles"]:
            raise ValueError(NO_VALID_TILE)
        header["nodata"] = {**header["nodata"], **{count: sum(h["nodata"][count] for h in headers)
                                                    for count in ("masked_pixels", "tiles_left_out")}}
        header["warnings"] = list(dict.fromkeys(note for h in headers for note in h["warnings"]))
        return header


class SceneAssembler:
    """The driver's side of the pipeline: gathers each scene's vectors as they arrive (in any order, from any
    of its parts, each tile once however often a retried task delivers it) and writes the scene's file the
    moment it is complete."""

    def __init__(self, run: IndexRun, logger: logging.Logger):
        self.run = run
        self.logger = logger
        self.pending: dict[str, PendingScene] = {}
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
            scene = self.pending.setdefault(image, PendingScene(header["parts"]))
            scene.headers[header["part"]] = header
            scene.started = min(scene.started, float(batch["started"][i]))
            if batch["tiles_in_part"][i] > 0:
                scene.vectors[tuple(int(v) for v in batch["tile"][i])] = batch["vector"][i]
            if scene.complete():
                self.complete(image)

    def complete(self, image: str) -> None:
        scene = self.pending[image]
        try:
            header = scene.header()
        except ValueError as error:
            self.fail(image, scene_error(image, error))
            return
        del self.pending[image]
        tiles = sorted(scene.vectors)
        for note in header.pop("warnings"):
            self.logger.warning("%s", note)
        write_scene(scene_path(self.run.archive, image), header, np.array(tiles, np.int64),
                    np.stack([scene.vectors[t] for t in tiles]))
        entry = {"image": image, "tiles": len(tiles), "tiles_encoded": len(tiles),
                 "seconds": round(time.time() - scene.started, 3)}
        if scene.parts > 1:
            entry["parts"] = scene.parts
        self.run.scenes.append(entry)
        self.logger.info("%s: %d tiles encoded%s, %.1fs", image, len(tiles),
                         f" by {scene.parts} tasks" if scene.parts > 1 else "", entry["seconds"])


def plan_scenes(images: list[str], archive: str, settings: ArchiveSettings, assembler: SceneAssembler,
                logger: logging.Logger, part_pixels: int = PART_PIXELS) -> dict[str, int]:
    """The images to index, in the order given, with the number of parts each is cut in; the scenes kept go
    into the run's entries at once (checked in parallel Ray tasks, see :func:`plan_scene`), those that
    cannot be read into its errors."""
    if not images:
        return {}
    todo = {}
    blocks = min(len(images), PLAN_BLOCKS)
    plans = ray.data.from_items([{"image": image} for image in images], override_num_blocks=blocks) \
        .map(plan_scene, fn_kwargs={"archive": archive, "settings": settings, "part_pixels": part_pixels}) \
        .take_all()
    for plan in sorted(plans, key=lambda p: images.index(p["image"])):
        if plan["status"] == "index":
            todo[plan["image"]] = plan["parts"]
            if plan["reason"]:
                logger.info("%s; indexed again", plan["reason"])
        elif plan["status"] == "kept":
            assembler.run.scenes.append({"image": plan["image"], "tiles": plan["tiles"], "tiles_encoded": 0,
                                         "seconds": round(plan["seconds"], 3)})
            logger.info("%s: already indexed with the same key, kept", plan["image"])
        else:
            assembler.fail(plan["image"], plan["status"])
    return todo


def encode_scenes(todo: dict[str, int], settings: ArchiveSettings, batch_size: int, assembler: SceneAssembler,
                  memory_mb: int | None = None) -> None:
    """Index the scenes ``todo`` (image: its number of parts): the pipeline's batches handed to ``assembler``
    as they come. Decoding is spread over the nodes, a task per part of a scene, apart from the encoder
    actors (a ``ray_remote_args_fn`` also keeps Ray Data from fusing the two stages into the actors), each
    within ``memory_mb`` (see :func:`open_striped`)."""
    if not todo:
        return
    parts = [{"image": image, "part": part, "parts": count} for image, count in todo.items() for part in range(count)]
    pipeline = ray.data.from_items(parts, override_num_blocks=len(parts)) \
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
        scene = assembler.pending[image]
        assembler.fail(image, f"{image}: the pipeline ended with {len(scene.headers)} of its {scene.parts} parts "
                              f"and {len(scene.vectors)} tiles; nothing written, run again")


def index_archive(paths: list[str], archive: str, settings: ArchiveSettings, batch_size: int,
                  logger: logging.Logger | None = None, memory_mb: int | None = None,
                  part_pixels: int = PART_PIXELS) -> IndexRun:
    """Index the images of ``paths`` (files, folders, globs; see :func:`expand_images`) into ``archive``
    with ``settings`` (see :mod:`predict.archive.store`);
    Ray must be initialised (as :func:`~predict.cli.ray_session.ray_session` does). Scenes already there with
    the same key are kept (``tiles_encoded`` 0), scenes whose image is gone are removed; ``batch_size`` tiles
    go through the encoder at once; a scene that fails is one error line, the others go on. A conflict with the
    archive's settings raises ``ValueError`` (one line) before any work. A scene of any size is read by
    stripes within ``memory_mb`` per cutting task (:func:`open_striped`), and one of more than ``part_pixels``
    pixels by several tasks (:func:`part_rows`); neither is a setting of the archive: they never change a
    tile nor a vector."""
    if type(part_pixels) is not int or part_pixels < 1:
        raise ValueError(f"part_pixels {part_pixels!r}: expected a whole number of pixels, at least 1")
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
        encode_scenes(plan_scenes(images, archive, settings, assembler, logger, part_pixels), settings, batch_size,
                      assembler, memory_mb)
        write_catalogue(archive, settings.vectors_key)
        run.write()
    return run
