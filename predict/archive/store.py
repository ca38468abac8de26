"""The archive folder and its files: what ``selo-index`` writes and ``selo-search`` reads, and the rules that
say when a scene file may be used.

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
import os
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from predict.core.pipelines import PipelineSpec, get_pipeline
from predict.core.stretch import Stretch
from predict.core.tiling import Tile
from predict.errors import first_line
from predict.io.raster import DEFAULT_STRETCH, dataset_files
from predict.provenance import (StoredFileError, canonical_json, digest_of, image_key, read_stored, read_stored_json, remove_stored,
                                short, verify_stored, write_stored, write_stored_json)

SETTINGS_NAME = "archive.json"
INDEX_NAME = "index.json"
CATALOGUE_NAME = "scenes.parquet"
SCENES_DIR = "scenes"
HEADER_KEY = b"selo.scene"  # the Parquet metadata key of a scene file's header
RASTER_DECODER = "predict.io.scene_blocks"  # the module that reads a scene (its code, and what it imports, in the key)
SCENE_SETTINGS = ("pipeline", "steps", "bands", "stretch")  # a scene's header records these of its settings
TORCH_CHOICE = canonical_json({"runtime": "torch"})


# ---- the archive's settings and its JSON files --------------------------------------------------------------

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
        runtime_choice: the canonical JSON of the encoder's ``runtime_choice`` (what runs its image network:
            :mod:`predict.encoders.runtimes`), so that the actors and the search run that very model.
    """

    yaml_path: str
    vectors_key: str
    tile_size: int
    pipeline: str
    steps: tuple[int, ...]
    bands: tuple[int, ...] | None = None
    stretch: Stretch | None = DEFAULT_STRETCH
    runtime_choice: str = TORCH_CHOICE

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


def read_trusted_json(path: str, parse, mismatch: str, advice: str):
    """``parse`` of the stored JSON file at ``path``, read verified (its own root: any producer) by
    :func:`~predict.provenance.read_stored_json`. When it cannot be used, one line that says what to do: a
    :class:`~predict.provenance.StoredFileError` naming the reason (or ``mismatch``, e.g. "not an archive's
    settings", when it verifies but ``parse`` refuses it) and then ``advice``."""
    try:
        return parse(read_stored_json(path, None))
    except StoredFileError as error:
        raise StoredFileError(path, f"{error.reason}; {advice}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoredFileError(path, f"{mismatch} ({first_line(exc)}); {advice}") from None


def read_settings(archive: str) -> ArchiveSettings | None:
    """The archive's settings, verified (its own root: any producer); None when it has none yet (a new
    archive). A :class:`~predict.provenance.StoredFileError` (one line) when ``archive.json`` cannot be
    trusted: the scenes then cannot be told apart from others."""
    path = settings_path(archive)
    if not os.path.isfile(path):
        return None
    return read_trusted_json(path, ArchiveSettings.from_json, "not an archive's settings",
                             "remove it and run selo-index again (each scene is checked against the settings it asks)")


def write_settings(archive: str, settings: ArchiveSettings) -> None:
    write_stored_json(settings_path(archive), settings.as_json(), settings.vectors_key)


def write_index(archive: str, scenes: list[dict], errors: list[str], key: str) -> None:
    """``index.json``: a run's scenes and errors, produced by vectors key ``key``."""
    write_stored_json(os.path.join(archive, INDEX_NAME), {"scenes": scenes, "errors": errors}, key)


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


def check_archive_settings(archive: str, settings: ArchiveSettings) -> None:
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


# ---- scene files ---------------------------------------------------------------------------------------------

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


def scene_files(archive: str) -> list[str]:
    """The scene files of an archive, sorted (temporary files of a write in progress are not listed)."""
    return sorted(glob.glob(os.path.join(archive, SCENES_DIR, "*.parquet")))


def scene_error(image: str, error: BaseException) -> str:
    """The one line of a scene's failure, naming the image once.

    >>> scene_error("/a.png", ValueError("/a.png: image not found")), scene_error("/a.png", ValueError("bad"))
    ('/a.png: image not found', '/a.png: bad')
    """
    message = first_line(error)
    return message if message.startswith(image) else f"{image}: {message}"


def scene_image_key(image: str, settings: ArchiveSettings) -> str:
    """The content key of a scene as the archive reads it (file and sidecar bytes, decoding code, bands,
    stretch)."""
    choices = settings.as_json()
    return image_key(image, decoder=RASTER_DECODER, sidecars=dataset_files(image), bands=choices["bands"],
                     stretch=choices["stretch"])


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
    flat = pa.array(vectors.astype(np.float32).ravel())
    columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
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


# ---- the archive as a whole: catalogue and clean-up ----------------------------------------------------------

CATALOGUE_SCHEMA = pa.schema([("file", pa.string()), ("image", pa.string()), ("height", pa.int64()),
                              ("width", pa.int64()), ("tiles", pa.int64()), ("crs", pa.string()),
                              ("transform", pa.list_(pa.float64())), ("nodata_pixels", pa.int64()),
                              ("image_key", pa.string()), ("vectors_key", pa.string())])


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
