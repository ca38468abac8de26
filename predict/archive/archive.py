"""An archive of scenes on Ray: every scene's tile vectors indexed once (``selo-index``), then "where is X?"
answered across the whole archive (``selo-search``).

Ray is the engine (Ray Data for the indexing pipeline, Ray tasks for the search): on this machine a local
Ray starts and stops with the command; with ``address`` the command joins an existing cluster. Every path
is made absolute before it is shipped to a worker (a worker's current folder is not the user's), and the
images, the archive and the output folder must be on a file system every node sees.

An archive folder holds:

- ``archive.json``: what every scene in it was indexed with (:class:`ArchiveSettings`: the encoder's yaml
  and its vectors key, the pipeline and steps, the bands and stretch); a run with other settings stops
  before any work;
- ``scenes/<stem>-<id>.parquet``: one file per scene, written under a temporary name and renamed once
  complete, so a scene is in the archive whole or not at all: one row per first-stage tile (``r0``, ``r1``,
  ``c0``, ``c1``: the tile's box in pixels, ``vector``: its float32 vector) and the scene's header in the
  file's metadata (:data:`HEADER_KEY`: size, CRS, transform, nodata, the image and vectors keys);
- ``scenes.parquet``: every scene's header, one row each (rebuilt at the end of every run);
- ``index.json``: this run's scenes (``image``, ``tiles``, ``tiles_encoded``, ``seconds``) and ``errors``;
- ``log.txt``.

Every file of it but the log is a stored file (:func:`~predict.provenance.write_stored`: a record of its
bytes' sha256 and of the encoder's vectors key lies beside it) and is read back only verified. A scene file
is used only when it is whole (its record, and Parquet's page checksums), made with the archive's encoder
and settings, holds the scene its name is for, and that scene's image (file, sidecars, decoding code) is the
one indexed: else ``selo-index`` indexes the scene again and ``selo-search`` leaves it out, each with one
line naming the file and the reason.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from predict.core.heatmap import scene_score
from predict.core.pipelines import PipelineSpec, get_pipeline
from predict.core.stretch import Stretch
from predict.core.tiling import Tile, cut_tiles
from predict.encoders.base import EncoderSpecModel, check_image_vectors, similarities
from predict.encoders.registry import load_encoder
from predict.errors import first_line
from predict.io.lock import folder_lock
from predict.io.logs import notes_logged
from predict.io.raster import DEFAULT_STRETCH, dataset_files, read_raster
from predict.localisation import TileVectorStore, query_rng, query_vector, tile_cells
from predict.provenance import (
    StoredFileError,
    digest_of,
    image_key,
    read_stored,
    remove_stored,
    seal_file,
    short,
    vectors_key,
    verify_stored,
    write_stored,
)
from predict.scenes import SceneConfig, SceneRun, first_stage

SETTINGS_NAME = "archive.json"
INDEX_NAME = "index.json"
CATALOGUE_NAME = "scenes.parquet"
SCENES_DIR = "scenes"
SUMMARY_NAME = "summary.json"
HEADER_KEY = b"selo.scene"  # the Parquet metadata key of a scene file's header
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
RASTER_DECODER = "predict.io.raster"  # the module that reads a scene (its code is part of the image key)
TILES_PER_BATCH = 256  # tiles per block cut: a 10000 px scene is about 17 blocks, never one huge one
PLAN_BLOCKS = 256  # at most this many tasks check which scenes are already indexed


# ---- Ray ---------------------------------------------------------------------------------------------------

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


# ---- archive settings and scene files ----------------------------------------------------------------------

@dataclass(frozen=True)
class ArchiveSettings:
    """What every scene of an archive is indexed with (``archive.json``).

    Attributes:
        yaml_path: the encoder's yaml, absolute (the search loads it for the text vectors and the maps).
        vectors_key: :func:`~predict.provenance.vectors_key` of the encoder: the key space of the vectors.
        tile_size: the side of the tiles the encoder takes, pixels (the cut tiles are resized to it).
        pipeline: ``"v1"`` or ``"v2"``; its first-stage tiles are indexed (v2's refinement boxes depend on
            the query: the search encodes them for the maps it draws).
        steps: the first-stage tile sides, pixels.
        bands: 1-based bands read (None: the file's RGB, else its first three).
        stretch: how data deeper than 8 bits become 8 bits (None: scaled from the type's range).
    """

    yaml_path: str
    vectors_key: str
    tile_size: int
    pipeline: str
    steps: tuple[int, ...]
    bands: tuple[int, ...] | None = None
    stretch: Stretch | None = DEFAULT_STRETCH

    def spec(self) -> PipelineSpec:
        return get_pipeline(self.pipeline, self.steps)

    def as_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict) -> ArchiveSettings:
        """The settings :meth:`as_json` wrote.

        >>> a = ArchiveSettings("/a.yaml", "demo-1", 256, "v1", (256,), (4, 3, 2))
        >>> ArchiveSettings.from_json(json.loads(json.dumps(a.as_json()))) == a
        True
        """
        bands, stretch = data.get("bands"), data.get("stretch")
        return cls(**{**data, "steps": tuple(data["steps"]), "bands": None if bands is None else tuple(bands),
                      "stretch": None if stretch is None else Stretch(**stretch)})


def settings_path(archive: str) -> str:
    return os.path.join(archive, SETTINGS_NAME)


def write_stored_json(path: str, data: dict, key: str) -> None:
    """A JSON file of the archive or the search, stored with its record (produced by ``key``)."""
    write_stored(path, (json.dumps(data, indent=1, allow_nan=False) + "\n").encode(), key)


def read_settings(archive: str) -> ArchiveSettings | None:
    """The archive's settings, verified (its own root: any producer); None when it has none yet (a new
    archive). A :class:`~predict.provenance.StoredFileError` (one line) when ``archive.json`` cannot be
    trusted: the scenes then cannot be told apart from others."""
    path = settings_path(archive)
    if not os.path.isfile(path):
        return None
    advice = "remove it and run selo-index again (each scene is checked against the settings it asks)"
    try:
        return ArchiveSettings.from_json(json.loads(read_stored(path, None)))
    except StoredFileError as error:
        raise StoredFileError(path, f"{error.reason}; {advice}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise StoredFileError(path, f"not an archive's settings ({first_line(exc)}); {advice}") from None


def settings_conflict(recorded: ArchiveSettings | None, current: ArchiveSettings) -> str | None:
    """Why an archive indexed with ``recorded`` cannot take scenes indexed with ``current`` (None when it
    can: the same vectors, tiles and decoding; a copied yaml of the same encoder is fine).

    >>> a = ArchiveSettings("/a.yaml", "demo-1", 256, "v1", (256,))
    >>> settings_conflict(a, ArchiveSettings("/b.yaml", "demo-1", 256, "v1", (256, 512)))
    'steps: indexed (256,), asked (256, 512)'
    """
    if recorded is None:
        return None
    for name in ("vectors_key", "pipeline", "steps", "bands", "stretch"):
        before, now = getattr(recorded, name), getattr(current, name)
        if before != now:
            return f"{name}: indexed {before}, asked {now}"
    return None


def check_settings(archive: str, settings: ArchiveSettings) -> None:
    """A one-line ``ValueError`` when ``archive`` holds scenes indexed with settings other than ``settings``."""
    conflict = settings_conflict(read_settings(archive), settings)
    if conflict:
        raise ValueError(f"{archive}: its scenes were indexed with other settings ({conflict}); "
                         "index into another --archive")


def open_archive(archive: str) -> tuple[ArchiveSettings, list[str]]:
    """An archive's settings and scene files; a one-line ``ValueError`` when it has none."""
    settings = read_settings(archive)
    files = scene_files(archive)
    if settings is None or not files:
        raise ValueError(f"{archive}: not an archive, or no scene indexed in it yet (run selo-index)")
    return settings, files


def scene_file_name(image: str) -> str:
    """The archive file of the scene at absolute path ``image``: its stem and a digest of the path (two
    files of one name in two folders are two scenes).

    >>> name = scene_file_name("/data/a/scene.tif")
    >>> name[:6], name != scene_file_name("/data/b/scene.tif")
    ('scene-', True)
    """
    stem = os.path.splitext(os.path.basename(image))[0]
    return f"{stem}-{short(digest_of(image))}.parquet"


def scene_path(archive: str, image: str) -> str:
    return os.path.join(archive, SCENES_DIR, scene_file_name(image))


def scene_metadata(path: str, metadata: dict | None) -> dict:
    """The header in a scene file's Parquet metadata; a :class:`~predict.provenance.StoredFileError` when
    there is none."""
    if not metadata or HEADER_KEY not in metadata:
        raise StoredFileError(path, f"not a scene file of a SeLo archive (no {HEADER_KEY.decode()} metadata)")
    return json.loads(metadata[HEADER_KEY])


def read_header(path: str, key: str) -> dict:
    """The header of the scene file at ``path`` made with vectors key ``key``: the file verified whole (the
    stat-guarded digest: cheap when unchanged), then its footer read."""
    verify_stored(path, key)
    return scene_metadata(path, pq.read_schema(path).metadata)


def verified_header(path: str, key: str) -> dict | None:
    """:func:`read_header`; None for a file that does not verify (a run indexes its scene again, a search
    reports it)."""
    try:
        return read_header(path, key)
    except (StoredFileError, OSError, pa.ArrowException):
        return None


def write_scene(path: str, header: dict, tiles: np.ndarray, vectors: np.ndarray) -> None:
    """Write a scene file whole, atomically, with Parquet's page checksums and its record (produced by the
    header's vectors key): ``tiles`` int ``(N, 4)`` (r0, r1, c0, c1) and float32 ``vectors`` ``(N, D)``,
    ``header`` in the metadata."""
    columns = {name: pa.array(tiles[:, i].astype(np.int32)) for i, name in enumerate(("r0", "r1", "c0", "c1"))}
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1])
    table = pa.table(columns).replace_schema_metadata({HEADER_KEY: json.dumps(header).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_stored(path, sink.getvalue().to_pybytes(), header["vectors_key"])


def read_scene(path: str, key: str) -> tuple[dict, list[Tile], np.ndarray]:
    """A scene file's header, tiles and float32 ``(N, D)`` vectors (bit for bit those written): its bytes
    read once, verified against its record (made with vectors key ``key``) and parsed from memory with the
    page checksums checked, so the bytes verified are the bytes used. :class:`~predict.provenance.StoredFileError`
    (one line) otherwise."""
    data = read_stored(path, key)
    try:
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise StoredFileError(path, f"not a readable Parquet file ({first_line(exc)})") from None
    header = scene_metadata(path, table.schema.metadata)
    tiles = [tuple(int(v) for v in row) for row in
             zip(*(table.column(name).to_numpy() for name in ("r0", "r1", "c0", "c1")))]
    column = table.column("vector").combine_chunks()
    vectors = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return header, tiles, vectors


SCENE_SETTINGS = ("pipeline", "steps", "bands", "stretch")  # a scene's header records these of its settings


def scene_problem(path: str, header: dict, settings: ArchiveSettings) -> str | None:
    """Why the verified scene file at ``path`` (``header``) is not the scene a fresh index of its image with
    ``settings`` would write there now (None when it is): it holds another image's scene (a file copied
    over it), other tiles or decoding, or its image is gone or changed since."""
    image = header["image"]
    if scene_file_name(image) != os.path.basename(path):
        return f"holds the scene of {image}, not the scene of its name (copied over it?)"
    recorded = settings.as_json()
    for name in SCENE_SETTINGS:
        if header.get(name) != recorded[name]:
            return f"indexed with other settings ({name}: {header.get(name)}, the archive's {recorded[name]})"
    if not os.path.exists(image):
        return f"{image}: gone since it was indexed"
    if scene_image_key(image, settings) != header["image_key"]:
        return f"{image}: changed since it was indexed (the file, a sidecar or the code that decodes it)"
    return None


def load_scene(path: str, settings: ArchiveSettings) -> tuple[dict, list[Tile], np.ndarray]:
    """:func:`read_scene` of a scene file that is current (see :func:`scene_problem`); a
    :class:`~predict.provenance.StoredFileError` (one line naming the file and the reason) otherwise."""
    header, tiles, vectors = read_scene(path, settings.vectors_key)
    problem = scene_problem(path, header, settings)
    if problem:
        raise StoredFileError(path, problem)
    return header, tiles, vectors


def scene_files(archive: str) -> list[str]:
    """The scene files of an archive, sorted (temporary files of a write in progress are not listed)."""
    return sorted(glob.glob(os.path.join(archive, SCENES_DIR, "*.parquet")))


def expand_images(paths: list[str]) -> tuple[list[str], list[str]]:
    """Absolute image paths of ``paths`` (files, folders: the images directly in them, or globs), each
    once, in the order given; and one error line per path that names no image."""
    images, errors = [], []
    for path in paths:
        if glob.has_magic(path):
            found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, name)))
        else:
            found = [path]
        if not found:
            errors.append(f"{path}: no image found there")
        images += [os.path.abspath(p) for p in found]
    return list(dict.fromkeys(images)), errors


# ---- indexing: the Ray Data pipeline ---------------------------------------------------------------------

def scene_image_key(image: str, settings: ArchiveSettings) -> str:
    """The content key of a scene as the archive reads it (file and sidecar bytes, decoding code, bands,
    stretch)."""
    choices = settings.as_json()
    return image_key(image, decoder=RASTER_DECODER, sidecars=dataset_files(image), bands=choices["bands"],
                     stretch=choices["stretch"])


def scene_error(image: str, error: BaseException) -> str:
    """The one line of a scene's failure, naming the image once.

    >>> scene_error("/a.png", ValueError("/a.png: image not found")), scene_error("/a.png", ValueError("bad"))
    ('/a.png: image not found', '/a.png: bad')
    """
    message = first_line(error)
    return message if message.startswith(image) else f"{image}: {message}"


def plan_scene(row: dict, archive: str, settings: ArchiveSettings) -> dict:
    """Ray Data ``map``: the ``status`` of the scene ``row["image"]``: ``"kept"`` when its file in the archive
    is whole and current (:func:`load_scene`; ``tiles``: its tile count), ``"index"`` when it must be
    indexed (``reason``: why its file is not kept, "" when it has none), else the error line."""
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


def scene_header(raster, settings: ArchiveSettings, key: str, tiles: int, left_out: int, notes: list[str]) -> dict:
    """What the archive records of a scene beside its vectors (JSON-ready)."""
    height, width = raster.pixels.shape[:2]
    return {"image": raster.path, "height": height, "width": width,
            "crs": raster.crs.to_wkt() if raster.crs is not None else None,
            "transform": list(raster.transform)[:6],
            "nodata": {"masked_pixels": 0 if raster.valid is None else int(np.count_nonzero(~raster.valid)),
                       "tiles_left_out": left_out, "rule": "tiles less than half valid are neither encoded nor scored"},
            **{name: settings.as_json()[name] for name in ("bands", "stretch", "pipeline", "steps")},
            "image_key": key, "vectors_key": settings.vectors_key, "tiles": tiles,
            "warnings": notes}


def error_rows(image: str, message: str, tile_size: int) -> dict:
    """The one row that carries a scene's failure through the pipeline (``tiles_in_scene`` 0)."""
    return {"scene": np.array([image]), "header": np.array([json.dumps({"error": message})]),
            "tiles_in_scene": np.zeros(1, np.int64), "tile": np.full((1, 4), -1, np.int64),
            "pixels": np.zeros((1, tile_size, tile_size, 3), np.uint8), "started": np.array([time.time()])}


def cut_scene(batch: dict, settings: ArchiveSettings):
    """Ray Data ``map_batches`` (one scene per batch, a CPU task): decode the scene as ``selo-localise``
    does, cut its first-stage tiles (those at least half valid) to the encoder's tile size, and yield them
    in blocks of :data:`TILES_PER_BATCH` rows: ``scene``, ``header`` (JSON), ``tiles_in_scene``, ``tile``
    ``(4,)``, ``pixels`` uint8 RGB ``(S, S, 3)``, ``started`` (epoch seconds). A scene that cannot be read
    or has no valid tile yields one error row instead."""
    tile_size = settings.tile_size
    for image in batch["image"]:
        started = time.time()
        notes: list[str] = []  # for the driver's log
        try:
            raster = read_raster(image, settings.bands, settings.stretch, notes)
            key = scene_image_key(image, settings)
            tiles = settings.spec().first_stage_tiles(*raster.pixels.shape[:2], image, notes)
            kept = first_stage(raster, settings.spec(), image, notes=[])  # the tiles selo-localise scores (half valid)
            if not kept:
                raise ValueError("no tile is at least half valid pixels (the image is mostly nodata)")
            header = json.dumps(scene_header(raster, settings, key, len(kept), len(tiles) - len(kept), notes))
        except Exception as exc:
            yield error_rows(image, scene_error(image, exc), tile_size)
            continue
        for start in range(0, len(kept), TILES_PER_BATCH):
            chunk = kept[start:start + TILES_PER_BATCH]
            yield {"scene": np.array([image] * len(chunk)), "header": np.array([header] * len(chunk)),
                   "tiles_in_scene": np.full(len(chunk), len(kept), np.int64), "tile": np.array(chunk, np.int64),
                   "pixels": cut_tiles(raster.pixels, chunk, tile_size), "started": np.full(len(chunk), started)}


class TileEncoder:
    """Ray Data actor: the encoder, loaded once per actor (on its GPU when Ray gave it one), turning the
    ``pixels`` of tile rows into ``vector`` rows (float32 ``(D,)``). Error rows get a NaN vector; an encoder
    failing on a batch turns its rows into error rows naming the scene."""

    def __init__(self, yaml_path: str, batch_size: int | None):
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.encoder = load_encoder(yaml_path, device=device, batch_size=batch_size)
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


@dataclass
class IndexRun:
    """What a ``selo-index`` run did: ``scenes`` (index.json's entries) and ``errors`` (one line each)."""

    archive: str
    key: str  # the archive's vectors key: what produced its files
    scenes: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def write(self) -> None:
        write_stored_json(os.path.join(self.archive, INDEX_NAME), {"scenes": self.scenes, "errors": self.errors},
                          self.key)


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


def write_catalogue(archive: str, key: str) -> None:
    """``scenes.parquet``: the header of every scene file made with vectors key ``key``, one row each, stored
    with its record (a file that does not verify is not listed: the search reports it)."""
    rows = []
    for path in scene_files(archive):
        header = verified_header(path, key)
        if header is None:
            continue
        rows.append({"file": os.path.relpath(path, archive), "image": header["image"], "height": header["height"],
                     "width": header["width"], "tiles": header["tiles"], "crs": header["crs"],
                     "transform": header["transform"], "nodata_pixels": header["nodata"]["masked_pixels"],
                     "image_key": header["image_key"], "vectors_key": header["vectors_key"]})
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=CATALOGUE_SCHEMA), sink, write_page_checksum=True)
    write_stored(os.path.join(archive, CATALOGUE_NAME), sink.getvalue().to_pybytes(), key)


CATALOGUE_SCHEMA = pa.schema([("file", pa.string()), ("image", pa.string()), ("height", pa.int64()),
                              ("width", pa.int64()), ("tiles", pa.int64()), ("crs", pa.string()),
                              ("transform", pa.list_(pa.float64())), ("nodata_pixels", pa.int64()),
                              ("image_key", pa.string()), ("vectors_key", pa.string())])


def remove_gone_scenes(archive: str, key: str, logger: logging.Logger) -> None:
    """Remove the scenes whose image no longer exists (deleted or renamed since it was indexed): the archive
    holds what a fresh index of the images there now would hold, never a scene no one can read again."""
    for path in scene_files(archive):
        header = verified_header(path, key)
        if header is not None and not os.path.exists(image := header["image"]):
            remove_stored(path)
            logger.info("%s: gone since it was indexed; its scene %s was removed", image, os.path.basename(path))


def remove_partial_writes(archive: str) -> None:
    """Temporary files of a writer that died (the archive's lock is held: no writer is alive)."""
    for leftover in glob.glob(os.path.join(archive, SCENES_DIR, ".*.tmp")):
        os.unlink(leftover)


def index_archive(paths: list[str], archive: str, settings: ArchiveSettings, batch_size: int,
                  logger: logging.Logger | None = None) -> IndexRun:
    """Index the images of ``paths`` (files, folders, globs; see :func:`expand_images`) into ``archive``
    with ``settings`` (see the module's description);
    Ray must be initialised (as :func:`~predict.cli.ray_session.ray_session` does). Scenes already there with
    the same key are kept (``tiles_encoded`` 0), scenes whose image is gone are removed; ``batch_size`` tiles
    go through the encoder at once; a scene that fails is one error line, the others go on. A conflict with the
    archive's settings raises ``ValueError`` (one line) before any work."""
    logger = logger or logging.getLogger("selo")
    archive = os.path.abspath(archive)
    run = IndexRun(archive, settings.vectors_key)
    with folder_lock(archive):
        check_settings(archive, settings)
        write_stored_json(settings_path(archive), settings.as_json(), settings.vectors_key)
        remove_partial_writes(archive)
        remove_gone_scenes(archive, settings.vectors_key, logger)
        assembler = SceneAssembler(run, logger)
        images, path_errors = expand_images(paths)
        for error in path_errors:
            run.errors.append(error)
            logger.error("%s", error)
        todo = []
        if images:
            blocks = min(len(images), PLAN_BLOCKS)
            plans = ray.data.from_items([{"image": image} for image in images], override_num_blocks=blocks) \
                .map(plan_scene, fn_kwargs={"archive": archive, "settings": settings}).take_all()
            for plan in sorted(plans, key=lambda p: images.index(p["image"])):
                if plan["status"] == "index":
                    todo.append(plan["image"])
                    if plan["reason"]:
                        logger.info("%s; indexed again", plan["reason"])
                elif plan["status"] == "kept":
                    run.scenes.append({"image": plan["image"], "tiles": plan["tiles"], "tiles_encoded": 0,
                                       "seconds": round(plan["seconds"], 3)})
                    logger.info("%s: already indexed with the same key, kept", plan["image"])
                else:
                    assembler.fail(plan["image"], plan["status"])
        if todo:
            # decoding spread over the nodes, in tasks apart from the encoder actors (a ray_remote_args_fn
            # also keeps Ray Data from fusing the two stages into the actors)
            pipeline = ray.data.from_items([{"image": image} for image in todo], override_num_blocks=len(todo)) \
                .map_batches(cut_scene, batch_size=1, num_cpus=1, batch_format="numpy", ray_remote_args_fn=spread,
                             fn_kwargs={"settings": settings}) \
                .map_batches(TileEncoder, batch_size=batch_size, batch_format="numpy",
                             fn_constructor_kwargs={"yaml_path": settings.yaml_path, "batch_size": batch_size},
                             **encoder_actors())
            for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
                assembler.add(batch)
            for image in list(assembler.pending):  # cannot happen unless tiles were lost: never a partial file
                assembler.fail(image, f"{image}: the pipeline ended with {len(assembler.pending[image])} tiles "
                                      "of the scene missing; nothing written, run again")
        write_catalogue(archive, settings.vectors_key)
        run.write()
    return run


# ---- search ------------------------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def cached_encoder(yaml_path: str) -> EncoderSpecModel:
    """The encoder of a yaml on the CPU, loaded once per worker process (Ray reuses its workers)."""
    return load_encoder(yaml_path, device="cpu")


def scorer(yaml_path: str, own_similarity: bool) -> EncoderSpecModel:
    """What scores vectors against a text vector: the base class's similarity needs no model; an encoder
    with its own ``cosine_sim`` is loaded."""
    return cached_encoder(yaml_path) if own_similarity else EncoderSpecModel()


def score_scenes(batch: dict, text_vectors: list[np.ndarray | None], settings: ArchiveSettings,
                 own_similarity: bool) -> dict:
    """Ray Data ``map_batches`` (a CPU task over a few scene files): each scene file checked first
    (:func:`load_scene`: whole, of this archive's encoder and settings, its image unchanged), then its scene
    score for every query that has a text vector (``text_vectors[k]`` None: not answered), from its stored
    vectors (rows ``file``, ``image``, ``k``, ``scene_score``, ``error``: a file left out has NaN scores and
    the line saying why)."""
    rows: dict[str, list] = {"file": [], "image": [], "k": [], "scene_score": [], "error": []}
    similarity = scorer(settings.yaml_path, own_similarity)
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


def archive_store(encoder: EncoderSpecModel, raster_key: str, tiles: list[Tile], vectors: np.ndarray) -> TileVectorStore:
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
    (:class:`~predict.scenes.run.SceneRun`) with the tiles' vectors taken from the archive, then moved into
    ``out_dir``. Returns per job ``{"k", "files", "peak"}`` (the output names and the rank-1 peak feature)
    or ``{"k", "error"}``."""
    image = path  # named by its image once its file is read
    ignored: list[str] = []  # the scene's warnings were reported when it was indexed
    try:
        header, tiles, vectors = load_scene(path, settings)  # checked again: it may have changed since the scoring
        image = header["image"]
        raster = read_raster(image, settings.bands, settings.stretch, ignored)
    except Exception as exc:
        return [{"k": k, "error": scene_error(image, exc)} for k, _ in jobs]
    encoder = cached_encoder(settings.yaml_path)
    answers = []
    with tempfile.TemporaryDirectory(prefix=".maps-", dir=out_dir) as scratch:  # beside: moved by a rename
        run = SceneRun(SceneConfig(out_dir=scratch, pipeline=settings.spec(), bands=settings.bands,
                                   stretch=settings.stretch), encoder, logging.getLogger("selo.search"))
        run.summary.queries = list(queries)  # the files are named by the search's query numbers
        run.vectors = archive_store(encoder, raster.key, tiles, vectors)
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


def hit_feature(row: dict, rank: int, peak: dict | None) -> dict:
    """A top scene as a GeoJSON Point at its rank-1 peak (no geometry when its map has no peak)."""
    properties = {"scene": row["image"], "rank": rank, "scene_score": row["scene_score"]}
    if peak is None:
        return {"type": "Feature", "geometry": None,
                "properties": {**properties, "score": None, "col": None, "row": None}}
    return {"type": "Feature", "geometry": peak["geometry"],
            "properties": {**properties, **{name: peak["properties"][name] for name in ("score", "col", "row")}}}


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


def read_stored_json(path: str, parse, advice: str):
    """``parse`` of the stored JSON file at ``path``, verified (its own root: any producer); a one-line
    :class:`~predict.provenance.StoredFileError` ending with ``advice`` when it cannot be trusted."""
    try:
        return parse(json.loads(read_stored(path, None)))
    except StoredFileError as error:
        raise StoredFileError(path, f"{error.reason}; {advice}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoredFileError(path, f"not what it should hold ({first_line(exc)}); {advice}") from None


def listed_outputs(out_dir: str) -> list[str]:
    """The outputs the summary of a search into ``out_dir`` lists ([] when it has none), names in the
    folder only (an edited summary never names a file elsewhere). A summary that cannot be trusted is a
    one-line :class:`~predict.provenance.StoredFileError`: what the folder holds would be unknown."""
    path = os.path.join(out_dir, SUMMARY_NAME)
    if not os.path.isfile(path):
        return []
    return read_stored_json(path, lambda data: [str(name) for name in data["files"] if os.path.basename(name) == name],
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


def score_archive(files: list[str], text_vectors: list[np.ndarray | None], settings: ArchiveSettings,
                  own_similarity: bool) -> list[dict]:
    """Every scene's score for every answered query, in parallel Ray tasks of a few scene files each."""
    if all(text is None for text in text_vectors):
        return []
    chunks = max(1, min(len(files), 4 * int(ray.cluster_resources().get("CPU", 1))))
    return ray.data.from_items([{"file": f} for f in files], override_num_blocks=chunks) \
        .map_batches(score_scenes, batch_size=None, batch_format="numpy", num_cpus=1,
                     fn_kwargs={"text_vectors": text_vectors, "settings": settings,
                                "own_similarity": own_similarity}).take_all()


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
    for path, ref in refs.items():
        try:
            answers.update({(path, answer["k"]): answer for answer in ray.get(ref)})
        except ray.exceptions.RayError as exc:
            answers.update({(path, k): {"k": k, "error": f"{path}: {first_line(exc)}"} for k, _ in jobs[path]})
    return answers


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
    encoder = load_encoder(yaml, device="cpu")  # as it is now: its key is checked
    if vectors_key(encoder) != settings.vectors_key:
        raise ValueError(f"{yaml}: not the encoder {archive} was indexed with (vectors key {vectors_key(encoder)}, "
                         f"indexed {settings.vectors_key}); name its yaml with --yaml_path, or index into another --archive")
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
    data = json.dumps({"type": "FeatureCollection", "features": hits}, indent=1, allow_nan=False) + "\n"
    run.files[name] = write_stored(os.path.join(run.out_dir, name), data.encode(), key, beside=False)
