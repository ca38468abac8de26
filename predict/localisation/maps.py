"""``localise()``: the SeLo probability map of one image for one query, and the steps it is made of.

    >>> from predict import load_encoder, localise
    >>> encoder = load_encoder("demo", device="cpu")  # the demo preset  # doctest: +SKIP
    >>> probmap = localise("scene.jpg", "a red track around a green football field", encoder)  # doctest: +SKIP

The steps, each usable alone: :func:`load_image` (decode once, identify by content), :func:`score_tiles`
(tile, encode through a :class:`~predict.localisation.vectors.TileVectorStore`, score against the query vector),
:func:`probability_map_of` (per-pixel mean, normalisation, filter).
"""
from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from predict.core import tiling
from predict.core.heatmap import CellMap, is_flat, mean_tile_scores, probability_map
from predict.core.notes import warn
from predict.core.pipelines import PipelineSpec, get_pipeline
from predict.encoders.base import EncoderSpecModel, similarities
from predict.io.images import read_image, require_image_file
from predict.localisation.timing import StageTimer
from predict.localisation.vectors import TileVectorStore
from predict.provenance import array_key, image_key, read_unchanged


@dataclass
class LoadedImage:
    """A decoded image and what identifies it.

    Attributes:
        path: the file it came from (None for an array).
        key: its content key (:func:`~predict.provenance.image_key` of the file, or
            :func:`~predict.provenance.array_key` of the array).
        pixels: uint8 BGR ``(H, W, 3)`` (OpenCV's order, as the original's ``cv2.imread``).
    """

    path: str | None
    key: str
    pixels: np.ndarray


def load_image(image: str | os.PathLike | np.ndarray, notes: list[str] | None = None) -> LoadedImage:
    """Decode ``image`` (a file path, or a uint8 RGB ``(H, W, 3)`` array) into a :class:`LoadedImage`
    (warnings to ``notes`` when given: see :mod:`predict.core.notes`)."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        require_image_file(path)  # before anything reads it: a FIFO or a folder is one line
        pixels = read_unchanged(path, lambda: read_image(path, notes))  # it names a corrupt file
        return LoadedImage(path, image_key(path), pixels)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array: expected uint8 RGB (H, W, 3), got {array.dtype} {array.shape}")
    if array.size == 0:
        raise ValueError(f"image array: empty ({array.shape[0]}x{array.shape[1]} pixels)")
    return LoadedImage(None, array_key(array), cv2.cvtColor(array, cv2.COLOR_RGB2BGR))


def query_rng(seed: int, query: str) -> np.random.Generator:
    """The generator of a query's word shuffles: seeded by ``seed`` and the query text, so a query gets the
    same shuffles wherever it is asked (the original's shuffle was unseeded)."""
    text_key = int.from_bytes(hashlib.sha256(query.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, text_key])


def query_vector(encoder: EncoderSpecModel, text: str, shuffled_copies: int = 0,
                 rng: np.random.Generator | None = None, notes: list[str] | None = None) -> np.ndarray:
    """The query's text vector ``(D,)``; with ``shuffled_copies`` (v2: 4) the mean of it and of that many
    word-shuffled copies of the query ("chaotic self-feeding"), shuffled by ``rng``.

    Words the encoder's vocabulary lacks (:meth:`~predict.encoders.base.EncoderSpecModel.unknown_words`)
    are named in a warning; a query without one word it knows is a ValueError listing them (its vector
    would be that of ``<unk>``, the same for every such query).
    """
    unknown_words = getattr(encoder, "unknown_words", None)  # a duck-typed plug-in may lack it: nothing to check
    if unknown_words is not None and (unknown := unknown_words(text)):
        name = getattr(encoder, "name", type(encoder).__name__)
        warn(f"query {text!r}: word(s) the {name} encoder does not know, read as <unk>: {', '.join(unknown)}", notes)
    vectors = [np.asarray(encoder.text_encoder(text), dtype=np.float32)]
    if shuffled_copies:
        words = text.split(" ")
        for _ in range(shuffled_copies):
            shuffled = " ".join(words[i] for i in rng.permutation(len(words)))
            vectors.append(np.asarray(encoder.text_encoder(shuffled), dtype=np.float32))
    return np.mean(vectors, axis=0)


def mostly_valid(tiles: Sequence[tiling.Tile], valid) -> list[tiling.Tile]:
    """The tiles at least half of whose pixels are valid (``valid``: bool ``(H, W)``, False on nodata, or a
    :class:`~predict.io.scene_blocks.ScenePixels`, which counts them stripe by stripe).

    >>> valid = np.zeros((4, 8), bool); valid[:, :5] = True
    >>> mostly_valid([(0, 4, 0, 4), (0, 4, 2, 6), (0, 4, 4, 8)], valid)
    [(0, 4, 0, 4), (0, 4, 2, 6)]
    """
    if not isinstance(valid, np.ndarray):
        return valid.mostly_valid(tiles)
    height, width = valid.shape
    kept = []
    for tile in tiles:
        r0, r1, c0, c1 = tiling.effective_box(tile, height, width)
        if 2 * np.count_nonzero(valid[r0:r1, c0:c1]) >= (r1 - r0) * (c1 - c0):
            kept.append(tile)
    return kept


def score_tiles(image: LoadedImage, query: str, encoder: EncoderSpecModel, spec: PipelineSpec,
                vectors: TileVectorStore, seed: int = 0, timer: StageTimer | None = None,
                name: str = "image", valid: np.ndarray | None = None,
                notes: list[str] | None = None) -> tuple[list[tiling.Tile], np.ndarray]:
    """The tiles (and refinement boxes) of ``spec`` on ``image`` and their float64 scores against ``query``.

    With ``valid`` (bool ``(H, W)``, False on nodata, or what :func:`mostly_valid` takes) only tiles and boxes at least half valid are encoded
    and scored. Cutting is timed as ``cut``, encoding and scoring as ``sim``; warnings go to ``notes`` when given.
    """
    timer = timer or StageTimer()
    vectors.check_encoder(encoder)  # a store holds one encoder's vectors: never scored against another's text
    height, width = image.pixels.shape[:2]
    vectors.use_image(image.key, notes)
    with timer.stage("cut"):
        stage1 = spec.first_stage_tiles(height, width, name, notes)
        if valid is not None:
            stage1 = mostly_valid(stage1, valid)
            if not stage1:
                raise ValueError(f"{name}: no tile is at least half valid pixels (the image is mostly nodata)")
    stage1_vectors = vectors.vectors(image.pixels, stage1, timer)
    with timer.stage("sim"):
        query_vec = query_vector(encoder, query, spec.shuffled_copies, query_rng(seed, query), notes)
        stage1_scores = similarities(encoder, stage1_vectors, query_vec)
    if spec.refinement is None:
        return stage1, stage1_scores
    refinement = spec.refinement
    order = np.argsort(-stage1_scores, kind="stable")[:tiling.keep_count(len(stage1), refinement.keep_fraction)]
    kept = [stage1[i] for i in order]
    with timer.stage("cut"):
        boxes = list(dict.fromkeys(box for tile in kept
                                   for box in tiling.refinement_boxes(tile, height, width, refinement.box_half_sizes)))
        if valid is not None:
            boxes = mostly_valid(boxes, valid)
    if not boxes:
        return kept, stage1_scores[order]
    box_vectors = vectors.vectors(image.pixels, boxes, timer)
    with timer.stage("sim"):
        box_scores = similarities(encoder, box_vectors, query_vec)
    return kept + boxes, np.concatenate([stage1_scores[order], box_scores])


class ProbabilityMap(NamedTuple):
    """The result of :func:`probability_map_of`.

    Attributes:
        pixels: uint8 ``(H, W)``, the probability map.
        nonfinite: how many tile scores were NaN or infinite (left out of the mean).
        degenerate: True when there was nothing to localise: no finite score, or the mean is the same
            everywhere (the map is all zero; the original divided 0 by 0 there).
    """

    pixels: np.ndarray
    nonfinite: int
    degenerate: bool


def tile_cells(tiles: Sequence[tiling.Tile], scores: np.ndarray, height: int, width: int,
               fill_uncovered: bool = False) -> CellMap:
    """The per-pixel mean of scored tiles as a :class:`~predict.core.heatmap.CellMap` (non-finite scores left
    out); with ``fill_uncovered`` pixels no tile covers get the minimum instead of 0 (see
    :func:`probability_map_of`)."""
    boxes = [tiling.effective_box(tile, height, width) for tile in tiles]
    scores = np.asarray(scores, dtype=np.float64)
    if fill_uncovered:  # a box over the whole image with no score: cells only it covers get the minimum
        boxes, scores = boxes + [(0, height, 0, width)], np.append(scores, np.nan)
    return mean_tile_scores(boxes, scores, height, width)


def nonfinite_scores(scores: np.ndarray, name: str = "image", notes: list[str] | None = None) -> int:
    """How many of the float64 ``scores`` are NaN or infinite, with a warning that counts them (to ``notes``
    when given) when there are any: they are left out of the per-pixel mean."""
    nonfinite = int(np.count_nonzero(~np.isfinite(scores)))
    if nonfinite:
        warn(f"{name}: {nonfinite} of {len(scores)} tile scores are not finite (NaN or infinite); "
             "left out of the per-pixel mean", notes)
    return nonfinite


def probability_map_of(tiles: Sequence[tiling.Tile], scores: np.ndarray, height: int, width: int,
                       spec: PipelineSpec, timer: StageTimer | None = None, name: str = "image",
                       fill_uncovered: bool = False, notes: list[str] | None = None) -> ProbabilityMap:
    """The probability map of scored tiles: per-pixel mean (timed ``gnt``), normalisation and ``spec``'s
    filter (timed ``flt``). Tiles whose score is not finite are left out of the mean, with a warning that
    counts them (to ``notes`` when given). With ``fill_uncovered`` (a map whose mostly-nodata tiles were left out) pixels no tile
    covers get the map's minimum instead of 0, which could be anywhere in the range of the scores.

    >>> from predict import PIPELINES, MapFilter
    >>> spec = PIPELINES["v1"].replace(map_filter=MapFilter(median=1))
    >>> tiles, scores = [(0, 1, 2, 3), (0, 1, 3, 4)], [-0.5, -0.2]  # column 0-1: no tile
    >>> [probability_map_of(tiles, scores, 1, 4, spec, fill_uncovered=f).pixels.tolist() for f in (False, True)]
    [[[255, 255, 0, 153]], [[0, 0, 0, 255]]]
    """
    timer = timer or StageTimer()
    scores = np.asarray(scores, dtype=np.float64)
    nonfinite = nonfinite_scores(scores, name, notes)
    with timer.stage("gnt"):
        cells = tile_cells(tiles, scores, height, width, fill_uncovered)
    with timer.stage("flt"):
        pixels = probability_map(cells, spec.map_filter, name, notes)
    return ProbabilityMap(pixels, nonfinite, is_flat(cells.values))  # no finite score: all-zero cells


# One in-memory store per encoder, so that calling localise() again on the same image encodes nothing.
_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_store(encoder: EncoderSpecModel) -> TileVectorStore:
    """The in-memory :class:`TileVectorStore` ``localise()`` uses for ``encoder`` when given none."""
    if encoder not in _STORES:
        _STORES[encoder] = TileVectorStore(encoder)
    return _STORES[encoder]


def localise(image: str | os.PathLike | np.ndarray, query: str, encoder: EncoderSpecModel,
             pipeline: str | PipelineSpec = "v1", steps: str | Sequence[int] | None = None, seed: int = 0,
             vectors: TileVectorStore | None = None) -> np.ndarray:
    """The SeLo probability map of ``image`` for ``query``.

    Args:
        image: a file path (JPEG, PNG, TIFF) or a uint8 RGB ``(H, W, 3)`` array.
        query: the text to localise.
        encoder: an :class:`~predict.encoders.base.EncoderSpecModel` (``load_encoder(yaml)``).
        pipeline: ``"v1"``, ``"v2"`` (see :data:`~predict.core.pipelines.PIPELINES`) or a
            :class:`~predict.core.pipelines.PipelineSpec`.
        steps: tile sides, e.g. ``(256, 512, 768)`` or ``"256_512_768"``; the pipeline's own when None.
        seed: seed of v2's word shuffles (with the query text).
        vectors: the tile-vector store to use (e.g. one with a folder on disk); by default one kept in
            memory per encoder, so calling again on the same image encodes no tile.

    Returns:
        uint8 ``(H, W)``: the probability map ``generate_selo.py`` saves for this image and query (before
        its JPEG encoding); all zero, with a warning, when the scores localise nothing (all equal or
        none finite).

    Raises:
        TypeError: ``query`` is not one string (e.g. a list of queries).
        ValueError: an empty or blank query, a query without one word the encoder knows, an empty or
            wrongly typed array, steps that are not positive integers.
        SampleError: a missing, truncated or corrupt image file (a ValueError too).
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be one string, got {type(query).__name__}"
                        + (" (call localise once per query)" if isinstance(query, (list, tuple)) else ""))
    if not query.strip():
        raise ValueError(f"query {query!r} is empty: give the text to localise")
    spec = get_pipeline(pipeline, steps)
    loaded = load_image(image)
    name = loaded.path or "image array"
    store = vectors if vectors is not None else default_store(encoder)
    tiles, scores = score_tiles(loaded, query, encoder, spec, store, seed, name=name)
    height, width = loaded.pixels.shape[:2]
    return probability_map_of(tiles, scores, height, width, spec, name=name).pixels
