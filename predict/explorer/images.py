"""The served folder's images as they are now: their names, their states (read again whenever their bytes or
sidecars change), the last few decoded, their tile vectors and their thumbnails.

Every image is read through :func:`~predict.io.scene_blocks.open_scene`, as ``selo-localise`` reads it (the
same pixels and key as :func:`~predict.io.raster.read_raster`), at bounded memory whatever its size: its
state, tiles and nodata by stripes, its thumbnail decimated (from a GeoTIFF's overviews when it has them);
the last few used stay open (an image that fits one stripe decoded once and kept), and its maps and
downloads are made stripe by stripe from the cells of its tile grid.

Names of images are the file names directly in the folder as :meth:`ImageFolder.names` lists them; a path
or a name not listed is a :class:`~predict.errors.BadRequest`.
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np

from predict.core.blocks import StripePlan, plan_stripes
from predict.core.memory import MEMORY_PER_CORE
from predict.core.preview import preview_scale
from predict.encoders.base import EncoderSpecModel
from predict.errors import BadRequest, ExplorerError, ImageChanged, InvalidRequest
from predict.io.annotations import SampleError
from predict.explorer.outputs import kept
from predict.explorer.requests import bare_name
from predict.io.images import IMAGE_EXTENSIONS
from predict.io.jpeg import encode_jpeg
from predict.io.raster import RasterImage, dataset_files, pixel_coordinates
from predict.io.scene_blocks import open_scene
from predict.localisation import StageTimer, TileVectorStore
from predict.provenance import dataset_digest, digest_of, write_stored


@dataclass(frozen=True)
class ImageState:
    """An image as last read: its ``digest`` (file and sidecars: :func:`~predict.provenance.dataset_digest`),
    content ``key`` (the vector store's), size, georeference
    (:func:`lonlat_affine`) and whether some of its pixels are nodata."""

    digest: str
    key: str
    height: int
    width: int
    geo: dict | None
    has_nodata: bool


def lonlat_affine(raster: RasterImage, height: int, width: int) -> dict | None:
    """For a georeferenced image: pixel ``(x, y)`` -> lon/lat as an affine fit through three corners,
    ``{"lon": [c, a, b], "lat": [c, a, b]}`` meaning ``lon = c + a x + b y``, and the ground size of a pixel
    ``metres_per_pixel`` (along the top edge); None when the image is not georeferenced."""
    if raster.crs is None:
        return None
    (lon0, lat0), (lon1, lat1), (lon2, lat2) = pixel_coordinates(raster, [0, width - 1, 0], [0, 0, height - 1])
    across, down = max(1, width - 1), max(1, height - 1)
    metres = 6371008.8 * math.radians(math.hypot((lon1 - lon0) * math.cos(math.radians(lat0)), lat1 - lat0)) / across
    return {"lon": [lon0 - 0.5 * ((lon1 - lon0) / across + (lon2 - lon0) / down), (lon1 - lon0) / across,
                    (lon2 - lon0) / down],
            "lat": [lat0 - 0.5 * ((lat1 - lat0) / across + (lat2 - lat0) / down), (lat1 - lat0) / across,
                    (lat2 - lat0) / down],
            "metres_per_pixel": metres}


class SharedStore:
    """One image's :class:`TileVectorStore` used by several threads: cached vectors are read at once; encoding
    (which changes the store and writes its file) runs one thread at a time. The store stays on its image:
    its ``use_image`` is only ever called with that image's key."""

    def __init__(self, store: TileVectorStore):
        self.store = store
        self.encoding = threading.Lock()

    def missing(self, tiles: Sequence) -> list:
        """The tiles of ``tiles`` without a vector yet, each once, in order."""
        return [t for t in dict.fromkeys(tiles) if t not in self.store.vectors_by_tile]

    def __getattr__(self, name):  # the rest of the store's interface (checks that only read it)
        return getattr(self.store, name)

    def vectors(self, pixels: np.ndarray, tiles: Sequence, timer: StageTimer, progress=None) -> np.ndarray:
        """As :meth:`TileVectorStore.vectors`."""
        if not self.missing(tiles):
            return np.stack([self.store.vectors_by_tile[t] for t in tiles])
        with self.encoding:
            return self.store.vectors(pixels, tiles, timer, progress)


@dataclass
class HeldScene:
    """An image kept open by :class:`ImageFolder`: its raster, the stack that closes its file, and how many
    requests use it now (the file is closed once it is dropped from the kept ones and none does)."""

    raster: RasterImage
    stack: ExitStack
    users: int = 0
    dropped: bool = False

    def release(self) -> None:
        self.users -= 1
        if self.dropped and not self.users:
            self.stack.close()

    def drop(self) -> None:
        self.dropped = True
        if not self.users:
            self.stack.close()


class ImageFolder:
    """The images directly in ``images_dir``: the last ``keep_rasters`` used kept open (by content), their
    tile vectors (``encoder``'s, in ``cache_dir``) and thumbnails (in ``outputs_dir``)."""

    def __init__(self, encoder: EncoderSpecModel, images_dir: str, cache_dir: str, outputs_dir: str,
                 keep_rasters: int = 2):
        self.encoder = encoder
        self.images_dir, self.cache_dir, self.outputs_dir = images_dir, cache_dir, outputs_dir
        self._keep_rasters = keep_rasters
        self._lock = threading.Lock()  # guards the dictionaries below and the held scenes' users
        self._states: dict[str, ImageState] = {}  # name -> the image as last read
        self._held: OrderedDict[str, HeldScene] = OrderedDict()  # content key -> open image, LRU
        self._stores: dict[str, SharedStore] = {}  # content key -> its vectors

    def names(self) -> list[str]:
        """File names of the images directly in the folder (no links, no hidden files), sorted."""
        with os.scandir(self.images_dir) as entries:
            return sorted(e.name for e in entries if e.is_file(follow_symlinks=False) and not e.name.startswith(".")
                          and e.name.lower().endswith(IMAGE_EXTENSIONS))

    def path(self, name) -> str:
        """The path of a listed image; :class:`BadRequest` for anything else (a path, a name not listed)."""
        if bare_name(name) not in self.names():
            raise BadRequest(f"image {name!r}: not an image of the served folder")
        return os.path.join(self.images_dir, name)

    def state(self, name: str) -> ImageState:
        """Image ``name`` as its content is now: read again (by stripes, the scene then kept open among the
        last few used) whenever its bytes or its sidecars' changed (by digest, whatever their sizes and times
        say: a new world file or mask is a new image)."""
        path = self.path(name)
        digest = dataset_digest(path, dataset_files(path))
        with self._lock:
            state = self._states.get(name)
        if state is None or state.digest != digest:
            with self.raster(name) as raster:
                height, width = raster.pixels.shape[:2]
                state = ImageState(digest, raster.key, height, width, lonlat_affine(raster, height, width),
                                   raster.pixels.nodata_pixels() > 0)
            with self._lock:
                self._states[name] = state
        return state

    @contextmanager
    def raster(self, name: str, state: ImageState | None = None) -> Iterator[RasterImage]:
        """Image ``name`` while the context lasts, its pixels read by stripes (:func:`open_planned`; kept open
        among the last few used): as ``state`` describes it (:class:`ImageChanged` when the file has changed
        meanwhile), else as it is now; :class:`InvalidRequest` when it cannot be read or a block of it fails
        to decode."""
        held = None
        if state is not None:
            with self._lock:
                held = self._held.get(state.key)
                if held is not None:
                    self._held.move_to_end(state.key)
                    held.users += 1
        if held is None:
            held = self._open(name)
        try:
            if state is not None and held.raster.key != state.key:
                raise ImageChanged(f"image {name!r} changed while it was being read; ask again")
            yield held.raster
        except SampleError as error:  # a block that fails to decode, the file changed meanwhile
            raise InvalidRequest(str(error)) from None
        finally:
            with self._lock:
                held.release()

    def _open(self, name: str) -> HeldScene:
        """Open image ``name`` (one user), keep it among the last few used and close those it replaces."""
        stack = ExitStack()
        try:
            raster = open_planned(self.path(name), stack)
        except BaseException:
            stack.close()
            raise
        held = HeldScene(raster, stack, users=1)
        with self._lock:
            if (before := self._held.pop(raster.key, None)) is not None:  # opened by another request meanwhile
                before.drop()
            self._held[raster.key] = held
            while len(self._held) > self._keep_rasters:
                self._held.popitem(last=False)[1].drop()
        return held

    def store(self, key: str) -> SharedStore:
        """The tile-vector store of the image with content key ``key`` (loaded from disk once)."""
        with self._lock:
            if key not in self._stores:
                store = TileVectorStore(self.encoder, self.cache_dir)
                store.use_image(key)
                self._stores[key] = SharedStore(store)
            return self._stores[key]

    def listing(self) -> list[dict]:
        """Each image's ``name``, ``height`` and ``width`` (pixels), file size ``bytes`` and whether tile
        vectors of it are ``cached``; an image that cannot be read has an ``error`` instead. An image is
        decoded once per content to know its key."""
        listing = []
        for name in self.names():
            size = os.stat(os.path.join(self.images_dir, name)).st_size
            try:
                state = self.state(name)
            except ExplorerError as error:
                listing.append({"name": name, "height": None, "width": None, "bytes": size, "cached": False,
                                "error": str(error)})
                continue
            listing.append({"name": name, "height": state.height, "width": state.width, "bytes": size,
                            "cached": bool(self.store(state.key).store.vectors_by_tile), "geo": state.geo})
        return listing

    def thumbnail(self, name: str, side: int) -> str:
        """Path of a JPEG of image ``name`` with its longer side at most ``side`` pixels, verified: made once
        per content and side, in the outputs folder, named by the image's content key and stored as made by
        that key and side (made again when it fails)."""
        if type(side) is not int or not 16 <= side <= 4096:
            raise BadRequest(f"side {side!r}: expected 16 to 4096 pixels")
        state = self.state(name)
        path = os.path.join(self.outputs_dir, f"{state.key[:32]}_{side}.jpg")
        key = digest_of(state.key, side, "decimated")  # read decimated, no longer shrunk from the whole pixels
        if not kept(path, key):
            scale = preview_scale(state.height, state.width, side)
            with self.raster(name, state) as raster:
                small = raster.pixels.decimated(max(1, round(state.height * scale)),
                                                max(1, round(state.width * scale)))
            write_stored(path, encode_jpeg(small, path).tobytes(), key)
        return path


def open_planned(path: str, stack: ExitStack) -> RasterImage:
    """The image at ``path`` opened by :func:`~predict.io.scene_blocks.open_scene` until ``stack`` closes, its
    pixels read on demand by stripes within :data:`~predict.core.memory.MEMORY_PER_CORE`
    (:func:`scene_plan`); a file that cannot be read is an :class:`InvalidRequest`."""
    try:
        raster = open_scene(path, stack)
    except (OSError, ValueError) as error:
        raise InvalidRequest(str(error)) from None
    plan = scene_plan(*raster.pixels.shape[:2], raster.pixels.block_rows)
    raster.pixels.plan(plan.rows, plan.margin)
    return raster


def scene_plan(height: int, width: int, block_rows: int = 1) -> StripePlan:
    """How the explorer reads an image and writes its maps: within :data:`~predict.core.memory.MEMORY_PER_CORE`
    (the tiles are cut with the rows they need beyond a stripe, whatever the pipeline asked for)."""
    return plan_stripes(height, width, MEMORY_PER_CORE, 0, block_rows)
