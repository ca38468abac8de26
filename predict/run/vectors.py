"""Tile vectors, computed once per image and reused by every query on it.

For a dual encoder the image side does not depend on the text, so the vectors of a tile are keyed by
(image content, encoder, tile coordinates): in memory for the image at hand, and optionally on disk
(``<cache>/tile_vectors/``), where a rerun or another query on the same image finds them.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from predict.core.tiling import Tile, tile_batches
from predict.encoders.base import EncoderSpecModel
from predict.io.atomic import write_atomically
from predict.run.timing import StageTimer


def file_digest(path: str, chunk: int = 1 << 22) -> str:
    """sha1 of a file's bytes (identifies an image by content, whatever its name)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class TileVectorStore:
    """Vectors of the tiles of one image at a time, computed in batches only for tiles not seen before.

    Args:
        encoder: the encoder whose ``image_encoder`` makes the vectors.
        cache_dir: folder for ``.npz`` files of vectors, or None to keep them in memory only.
    """

    def __init__(self, encoder: EncoderSpecModel, cache_dir: str | None = None):
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.image_key = None
        self.vectors_by_tile: dict[Tile, np.ndarray] = {}
        self.tiles_encoded = 0  # tiles that went through the encoder (for the reuse report)
        self.tiles_requested = 0

    def _disk_path(self) -> str | None:
        if not self.cache_dir:
            return None
        return os.path.join(self.cache_dir, f"{self.image_key}_{self.encoder.cache_key()}.npz")

    def use_image(self, image_key: str) -> None:
        """Switch to another image (by content digest); loads its vectors from disk if present."""
        if image_key == self.image_key:
            return
        self.image_key = image_key
        self.vectors_by_tile = {}
        path = self._disk_path()
        if path and os.path.isfile(path):
            try:
                with np.load(path) as data:
                    self.vectors_by_tile = {tuple(int(v) for v in t): vec for t, vec in zip(data["tiles"], data["vectors"])}
            except (OSError, ValueError, KeyError):
                self.vectors_by_tile = {}  # an unreadable cache file is only a lost speed-up

    def _save(self) -> None:
        path = self._disk_path()
        if not path or not self.vectors_by_tile:
            return
        os.makedirs(self.cache_dir, exist_ok=True)
        tiles = np.array(list(self.vectors_by_tile), dtype=np.int64)
        vectors = np.stack(list(self.vectors_by_tile.values()))
        buffer = io.BytesIO()
        np.savez(buffer, tiles=tiles, vectors=vectors)
        write_atomically(path, buffer.getvalue())

    def vectors(self, image_bgr: np.ndarray, tiles: Sequence[Tile], timer: StageTimer) -> np.ndarray:
        """``(len(tiles), D)`` vectors of ``tiles`` of the current image; cutting is timed as ``cut``,
        encoding as ``sim``."""
        self.tiles_requested += len(tiles)
        missing = [t for t in dict.fromkeys(tiles) if t not in self.vectors_by_tile]
        if missing:
            batches = tile_batches(image_bgr, missing, self.encoder.tile_size, self.encoder.batch_size)
            done = 0
            # a second bar under the per-sample one: a large image takes minutes with a real model on a CPU
            with tqdm(total=len(missing), desc="tiles", unit="tile", leave=False, dynamic_ncols=True) as bar:
                while True:
                    with timer.stage("cut"):
                        batch = next(batches, None)
                    if batch is None:
                        break
                    with timer.stage("sim"):
                        vecs = np.asarray(self.encoder.image_encoder(batch), dtype=np.float32)
                    for tile, vec in zip(missing[done:done + len(batch)], vecs):
                        self.vectors_by_tile[tile] = vec
                    done += len(batch)
                    bar.update(len(batch))
            self.tiles_encoded += len(missing)
            with timer.stage("sim"):
                self._save()
        return np.stack([self.vectors_by_tile[t] for t in tiles])
