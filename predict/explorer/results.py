"""The explorer's results: :class:`Result` (a finished request, as plain data) and its record on disk, and
:class:`Results`, those made so far, keyed by content.

A result's id is :func:`~predict.provenance.digest_of` the image's content key, what every result depends on
besides the request (the encoder's vector key, the code, the seed, the preview side), the query and the
pipeline: not the image's name, so a copy of an image shares its results. Results are kept on disk (the
record ``<id>.json`` and ``<id>.npz``, the map ``<id>.png``: stored files, :mod:`predict.explorer.outputs`),
so a result shown in a page's history can still be downloaded later, after a restart too.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from predict.core.pipelines import PipelineSpec, get_pipeline
from predict.errors import BadRequest, NotFound
from predict.explorer.outputs import kept, made
from predict.provenance import StoredFileError, digest_of, read_stored, write_stored

DOWNLOADS = {"probmap": "_probmap.tif", "peaks": "_peaks.geojson"}  # kind -> suffix of its file
RESULT_ID = re.compile(r"[0-9a-f]{32}")

logger = logging.getLogger(__name__)


def safe_stem(text: str, limit: int = 40) -> str:
    """``text`` as a file-name part: letters, digits, ``-`` and ``.`` kept, runs of anything else as ``_``.

    >>> safe_stem("scene 1.jpg"), safe_stem("a green field / two courts")
    ('scene_1.jpg', 'a_green_field_two_courts')
    """
    return re.sub(r"[^\w.-]+", "_", text, flags=re.ASCII).strip("_.")[:limit] or "x"


@dataclass
class Result:
    """A finished request: the map of ``query`` on ``image`` (or, with ``query`` None, its tiles encoded)."""

    id: str
    image: str
    query: str | None
    spec: PipelineSpec
    height: int
    width: int
    image_key: str
    tiles_encoded: int
    seconds: float
    geo: dict | None = None
    tiles: list = field(default_factory=list)
    scores: np.ndarray | None = None
    preview: np.ndarray | None = None  # uint8 (h, w): the page's map, for its region outlines
    peaks: list = field(default_factory=list)  # (x, y, gray) in full-resolution pixels, best first
    peaks_lonlat: list | None = None  # [lon, lat] of each peak when the image is georeferenced
    scene_score: float | None = None
    unknown_words: list = field(default_factory=list)

    def download_name(self, kind: str) -> str:
        """The name a download is saved under: image, query and kind, e.g. ``scene_two_courts_probmap.tif``."""
        stem = safe_stem(os.path.splitext(self.image)[0])
        return f"{stem}_{safe_stem(self.query or 'tiles')}{DOWNLOADS[kind]}"

    def as_dict(self) -> dict:
        """The result as plain JSON data: its id, the map's peaks (``rank``, full-resolution ``x``, ``y``, and
        ``lon``, ``lat`` when georeferenced), its score and its downloads by kind (the name each is saved
        under); the web layer adds where to get the map and the downloads."""
        answer = {"image": self.image, "height": self.height, "width": self.width, "pipeline": self.spec.name,
                  "steps": list(self.spec.steps), "tiles_encoded": self.tiles_encoded,
                  "seconds": round(self.seconds, 4), "geo": self.geo}
        if self.query is None:
            return answer
        return {**answer, "query": self.query, "result": self.id, "scene_score": self.scene_score,
                "unknown_words": self.unknown_words,
                "peaks": [{"rank": i + 1, "x": x, "y": y, "probability": round(gray / 255, 4),
                           **({"lon": self.peaks_lonlat[i][0], "lat": self.peaks_lonlat[i][1]}
                              if self.peaks_lonlat else {})}
                          for i, (x, y, gray) in enumerate(self.peaks)],
                "downloads": {kind: {"filename": self.download_name(kind)} for kind in DOWNLOADS}}

    def save(self, folder: str) -> None:
        """Write the record (``<id>.npz`` arrays, then ``<id>.json``, the commit point) for :meth:`load`: two
        stored files made by the result's id, the json naming the image content the map was computed from."""
        arrays = {"tiles": np.asarray(self.tiles, np.int64).reshape(-1, 4), "scores": np.asarray(self.scores),
                  "preview": self.preview}
        path = os.path.join(folder, self.id)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_stored(path + ".npz", buffer.getvalue(), self.id)
        meta = {"image": self.image, "query": self.query, "pipeline": self.spec.name, "steps": list(self.spec.steps),
                "height": self.height, "width": self.width, "image_key": self.image_key, "seconds": self.seconds,
                "tiles_encoded": self.tiles_encoded, "geo": self.geo, "peaks": self.peaks,
                "peaks_lonlat": self.peaks_lonlat, "scene_score": self.scene_score, "unknown_words": self.unknown_words}
        write_stored(path + ".json", json.dumps(meta).encode(), self.id)

    @classmethod
    def load(cls, folder: str, result_id: str) -> Result:
        """The record :meth:`save` wrote, both files verified (:func:`~predict.provenance.read_stored`);
        :class:`~predict.provenance.StoredFileError` when one is missing, changed, made by another id or
        not a record."""
        path = os.path.join(folder, result_id)
        text, packed = read_stored(path + ".json", result_id), read_stored(path + ".npz", result_id)
        try:
            meta = json.loads(text)
            with np.load(io.BytesIO(packed)) as arrays:
                tiles, scores, preview = arrays["tiles"], arrays["scores"], arrays["preview"]
            return cls(result_id, meta["image"], meta["query"], get_pipeline(meta["pipeline"], meta["steps"]),
                       meta["height"], meta["width"], meta["image_key"], meta["tiles_encoded"], meta["seconds"],
                       meta["geo"], [tuple(int(v) for v in t) for t in tiles], scores, preview,
                       [tuple(p) for p in meta["peaks"]], meta["peaks_lonlat"], meta["scene_score"],
                       meta["unknown_words"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StoredFileError(path + ".json", f"not a result record ({type(error).__name__}: {error})") from None


class Results:
    """The results made in ``folder``: the latest ``keep`` in memory, every one on disk, read back verified.
    ``basis``: what every result id depends on besides the request (see the module's docstring)."""

    def __init__(self, folder: str, basis: tuple, keep: int = 64):
        self.folder = folder
        self._basis = basis
        self._keep = keep
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, Result] = OrderedDict()

    def id_of(self, image_key: str, query: str | None, spec: PipelineSpec) -> str:
        """The id of the result of ``query`` with ``spec`` computed from the image content ``image_key``."""
        return digest_of(image_key, *self._basis, query, spec.as_dict())[:32]

    def get(self, result_id) -> Result:
        """A result made earlier (in memory, or its record on disk); :class:`NotFound` when unknown."""
        if not isinstance(result_id, str) or not RESULT_ID.fullmatch(result_id):
            raise NotFound(f"result {result_id!r}: unknown (ask /api/localise again)")
        known = self.find(result_id)
        if known is None:
            raise NotFound(f"result {result_id}: unknown (ask /api/localise again)")
        return known

    def find(self, result_id: str) -> Result | None:
        """The result filed under ``result_id``: in memory, or its record on disk verified (both files whole
        and made by this id, and this id the one of the image content, request and code the record names);
        None when there is none, or when the record fails (logged in one line: the result is computed again)."""
        with self._lock:
            known = self._latest.get(result_id)
        path = os.path.join(self.folder, result_id + ".json")
        if known is not None or not made(path):
            return known
        try:
            known = Result.load(self.folder, result_id)
            if self.id_of(known.image_key, known.query, known.spec) != result_id:
                raise StoredFileError(path, f"its image content ({known.image_key[:16]}...), query or code is not "
                                            "what its id names")
        except StoredFileError as error:
            logger.warning("%s; computed again", error)
            return None
        return self._remember(known)

    def with_map(self, result_id: str) -> Result | None:
        """As :meth:`find`, and only when its map is whole too: a result a query asked again may be answered
        with."""
        known = self.find(result_id)
        return known if known is not None and kept(self._map_file(result_id), result_id) else None

    def named(self, result: Result, image: str) -> Result:
        """``result`` (of the same content, maybe made for a copy of the image under another name) named by
        ``image``, and remembered so: its answer and downloads carry that name, and a download checks that
        image."""
        if result.image == image:
            return result
        return self._remember(dataclasses.replace(result, image=image))

    def keep(self, result: Result, png: bytes) -> Result:
        """File a new result: its map ``png``, then its record (the commit point: a result on disk has its map)."""
        write_stored(self._map_file(result.id), png, result.id)
        result.save(self.folder)
        return self._remember(result)

    def map_path(self, filename) -> str:
        """The path of a result's map ``<id>.png``, verified: whole and made by that result.
        :class:`BadRequest` for a path or a hidden name (a record ``.<name>.selo``), :class:`NotFound` for any
        other file, a map never made or one changed since (logged; asking the query again remakes it)."""
        if not isinstance(filename, str) or "/" in filename or "\\" in filename or filename.startswith(".") \
                or "\x00" in filename:
            raise BadRequest(f"{filename!r}: a bare file name of the explorer's outputs is expected")
        result_id, extension = os.path.splitext(filename)
        if extension != ".png" or not RESULT_ID.fullmatch(result_id) or not kept(self._map_file(result_id), result_id):
            raise NotFound(f"{filename}: no such output (or changed since it was made: ask the query again)")
        return self._map_file(result_id)

    def _map_file(self, result_id: str) -> str:
        return os.path.join(self.folder, f"{result_id}.png")

    def _remember(self, result: Result) -> Result:
        with self._lock:
            self._latest[result.id] = result
            self._latest.move_to_end(result.id)
            while len(self._latest) > self._keep:
                self._latest.popitem(last=False)
        return result
