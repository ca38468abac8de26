"""Tile vectors, computed once per image and reused by every query on it.

For a dual encoder the image side does not depend on the text, so the vectors of a tile are keyed by
(image content, encoder, tile coordinates): in memory for the image at hand, and optionally on disk
(``<cache>/tile_vectors/``), where a rerun or another query on the same image finds them. A store belongs
to one encoder identity (:func:`~predict.provenance.vectors_key`): asking it for another encoder's
vectors is an error, never a mix. A file is a stored file of :mod:`predict.provenance` (its record beside
it holds the sha256 of its bytes and its key), read back only verified; runs that share a folder (the
explorer, ``selo-localise``, a testset run) merge their vectors into it under a lock.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from predict.core.notes import warn
from predict.core.stripes import results_ahead
from predict.core.tiling import Tile, cut_tiles, tile_batches
from predict.encoders.base import EncoderSpecModel, check_image_vectors
from predict.errors import first_line
from predict.io.lock import exclusive_lock
from predict.io.progress import progress as stage_progress
from predict.localisation.timing import StageTimer
from predict.provenance import StoredFileError, read_stored, vectors_key, write_stored


def batches_ahead(image_bgr: np.ndarray, tiles: Sequence[Tile], size: int, batch_size: int,
                  depth: int = 2) -> Iterator[np.ndarray]:
    """:func:`~predict.core.tiling.tile_batches`, cut in a thread up to ``depth`` batches ahead of the
    consumer, so that cutting overlaps the encoder (OpenCV releases the GIL); the same batches."""
    with ThreadPoolExecutor(1, thread_name_prefix="selo-cut") as pool:
        yield from results_ahead(pool, lambda start: cut_tiles(image_bgr, tiles[start:start + batch_size], size),
                                 range(0, len(tiles), batch_size), depth)


class TileVectorStore:
    """Vectors of the tiles of one image at a time, computed in batches only for tiles not seen before.

    Args:
        encoder: the encoder whose ``image_encoder`` makes the vectors.
        cache_dir: folder for ``.npz`` files of vectors, or None to keep them in memory only.
        refresh: ignore the files already in ``cache_dir`` (``--overwrite``): every image's vectors are
            computed again once, then reused within this store's life.
        cut_ahead: cut the next batches of tiles in a thread while the encoder runs on the current one.

    A file that cannot be read, or holds another key, is recomputed and replaced, with a warning naming
    it; a file is written only after every tile asked for has been encoded, so a failing encoder leaves
    none behind.
    """

    def __init__(self, encoder: EncoderSpecModel, cache_dir: str | None = None, refresh: bool = False,
                 cut_ahead: bool = False):
        self.encoder = encoder
        self.key = vectors_key(encoder)  # the encoder identity whose vectors this store holds
        self.cache_dir = cache_dir
        self.refresh = refresh
        self.cut_ahead = cut_ahead
        self.image_key = None
        self.vectors_by_tile: dict[Tile, np.ndarray] = {}
        self.tiles_encoded = 0  # tiles that went through the encoder (for the reuse report)
        self.tiles_requested = 0
        self._written: set[str] = set()  # files this store wrote (trusted even when refreshing)

    def _disk_path(self) -> str | None:
        if not self.cache_dir:
            return None
        return os.path.join(self.cache_dir, f"{self.file_key()}.npz")

    def file_key(self) -> str:
        """``<image key>_<encoder key>``: the name and the recorded key of the current image's vector file."""
        return f"{self.image_key}_{self.key}"

    def check_encoder(self, encoder: EncoderSpecModel) -> None:
        """A one-line ``ValueError`` unless ``encoder`` has this store's identity (its vectors are these)."""
        if encoder is not self.encoder and vectors_key(encoder) != self.key:
            raise ValueError(f"vectors: this TileVectorStore holds the tile vectors of encoder {self.key}, not of "
                             f"encoder {vectors_key(encoder)}; give each encoder its own store")

    def use_image(self, image_key: str, notes: list[str] | None = None) -> None:
        """Switch to another image (by content digest); loads its vectors from disk if present (a warning,
        to ``notes`` when given, names a file that cannot be read)."""
        if image_key == self.image_key:
            return
        self.image_key = image_key
        self.vectors_by_tile = {}
        path = self._disk_path()
        if path and os.path.isfile(path) and (not self.refresh or path in self._written):
            try:
                self.vectors_by_tile = read_vectors(path, self.file_key())
            except Exception as exc:  # changed, truncated, another key's: it only costs the encoding again
                reason = exc.reason if isinstance(exc, StoredFileError) else first_line(exc)
                warn(f"{path}: unusable tile vectors ({reason}); recomputing and replacing them", notes)

    def _save(self) -> None:
        """Write the current image's vectors, merged under a lock with those another run wrote meanwhile
        (same key: same image content and encoder identity, so either's vectors are right)."""
        path = self._disk_path()
        if not path or not self.vectors_by_tile:
            return
        os.makedirs(self.cache_dir, exist_ok=True)
        with exclusive_lock(os.path.join(self.cache_dir, ".write.lock")):
            merged = {}
            if os.path.isfile(path) and (not self.refresh or path in self._written):
                try:
                    merged = read_vectors(path, self.file_key())
                except Exception:  # noqa: BLE001 - a damaged file is replaced by ours
                    pass
            merged.update(self.vectors_by_tile)
            tiles = np.array(list(merged), dtype=np.int64)
            buffer = io.BytesIO()
            np.savez(buffer, tiles=tiles, vectors=np.stack(list(merged.values())))
            write_stored(path, buffer.getvalue(), self.file_key())
        self._written.add(path)

    def vectors(self, image_bgr: np.ndarray, tiles: Sequence[Tile], timer: StageTimer,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """``(len(tiles), D)`` vectors of ``tiles`` of the current image (``image_bgr``: uint8 BGR ``(H, W, 3)``, or
        a :class:`~predict.io.scene_blocks.ScenePixels` that cuts them stripe by stripe); cutting is timed as ``cut``,
        encoding as ``sim``; ``progress(done, total)`` is called after each batch of tiles encoded. An encoder
        answering with another shape is a one-line ``ValueError``."""
        self.tiles_requested += len(tiles)
        missing = [t for t in dict.fromkeys(tiles) if t not in self.vectors_by_tile]
        if missing:
            name = getattr(self.encoder, "name", type(self.encoder).__name__)
            dim = next(iter(self.vectors_by_tile.values())).shape[0] if self.vectors_by_tile else None
            if isinstance(image_bgr, np.ndarray):
                cut = batches_ahead if self.cut_ahead else tile_batches
                batches = cut(image_bgr, missing, self.encoder.tile_size, self.encoder.batch_size)
            else:  # a scene read by stripes (predict.io.scene_blocks.ScenePixels): tiles cut in its order
                missing = image_bgr.encoding_order(missing)
                batches = image_bgr.tile_batches(missing, self.encoder.tile_size, self.encoder.batch_size)
            computed: dict[Tile, np.ndarray] = {}  # kept only once every batch succeeded
            # a second bar under the per-sample one: a large image takes minutes with a real model on a CPU
            with stage_progress("tiles", len(missing), "tile", leave=False) as advance:
                while True:
                    with timer.stage("cut"):
                        batch = next(batches, None)
                    if batch is None:
                        break
                    with timer.stage("sim"):
                        vecs = check_image_vectors(self.encoder.image_encoder(batch), len(batch), name, dim)
                    dim = vecs.shape[1]
                    computed.update(zip(missing[len(computed):len(computed) + len(batch)], vecs))
                    advance(len(batch))
                    if progress is not None:
                        progress(len(computed), len(missing))
            self.vectors_by_tile.update(computed)
            self.tiles_encoded += len(missing)
            with timer.stage("sim"):
                self._save()
        return np.stack([self.vectors_by_tile[t] for t in tiles])


def read_vectors(path: str, key: str) -> dict[Tile, np.ndarray]:
    """The ``{tile: (D,) vector}`` of a ``.npz`` the store wrote for ``key``, verified
    (:func:`~predict.provenance.read_stored`: :class:`~predict.provenance.StoredFileError` when its bytes
    or its key are not those recorded); ``ValueError`` when its arrays are not ``tiles (N, 4)`` and
    ``vectors (N, D)``."""
    with np.load(io.BytesIO(read_stored(path, key))) as data:
        tiles, vectors = data["tiles"], data["vectors"]
    if tiles.ndim != 2 or tiles.shape[1] != 4 or vectors.ndim != 2 or len(vectors) != len(tiles):
        raise ValueError(f"arrays tiles {tiles.shape} and vectors {vectors.shape} do not match")
    return {tuple(int(v) for v in t): vec for t, vec in zip(tiles, vectors)}
