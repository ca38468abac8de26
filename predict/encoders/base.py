"""The encoder contract of the SeLo pipeline: :class:`EncoderSpecModel` and the checks every encoder shares.

Every encoder, built-in or the user's own, is an :class:`EncoderSpecModel`:

- ``image_encoder(tiles)``: uint8 RGB tiles ``(N, tile_size, tile_size, 3)`` -> ``(N, D)`` float32. The
  base class batches: a subclass implements ``encode_batch`` for at most ``batch_size`` tiles (or overrides
  ``image_encoder`` as a whole);
- ``text_encoder(text)``: one query string -> ``(D,)`` float32;
- ``unknown_words(text)``: the words of a query the encoder's vocabulary lacks (``[]`` by default: an
  encoder without a vocabulary has nothing to check); a query with no known word is a ``ValueError``;
- ``cosine_sim(image_vectors, text_vector)``: ``(N, D)``, ``(D,)`` -> ``(N,)`` scores; by default the
  original's similarity, the MEAN of the elementwise product of the two L2-normalised vectors
  (cosine / D, not the cosine).
- optionally ``image_network()`` and ``network_input(tiles)``: the image side as a ``torch.nn.Module`` and
  its input, so that ONNX Runtime or OpenVINO can run it (:mod:`predict.encoders.runtimes`); an encoder
  without them runs as it is.

What an encoder answers is checked against the contract by :func:`check_image_vectors` and
:func:`similarities` (the run, the archive and the self-check call them). This module does not import
torch, so a numpy-only plug-in stays light.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Container

import numpy as np

from predict.errors import EncoderError  # noqa: F401 - raised by the encoders, re-exported here

PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # yaml model.precision; int8 on an exported runtime only
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")  # yaml model.runtime, --runtime


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (numpy's norm, as the original's ``cosine_sim``), float32.

    >>> l2_normalize(np.array([3.0, 4.0]))
    array([0.6, 0.8], dtype=float32)
    """
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def check_tiles(tiles: np.ndarray, tile_size: int | None = None) -> np.ndarray:
    """``tiles`` as a C-contiguous uint8 RGB ``(N, S, S, 3)`` array (S == ``tile_size`` when given; N may be 0);
    anything else is a one-line ``ValueError``.

    >>> check_tiles(np.zeros((2, 8, 8, 3), np.uint8), 8).shape
    (2, 8, 8, 3)
    """
    tiles = np.asarray(tiles)
    side = "S" if tile_size is None else tile_size
    if (tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[3] != 3
            or tiles.shape[1] != tiles.shape[2] or (tile_size is not None and tiles.shape[1] != tile_size)):
        raise ValueError(f"image_encoder expected uint8 RGB tiles (N, {side}, {side}, 3), got {tiles.dtype} {tiles.shape}")
    return np.ascontiguousarray(tiles)


def resolve_precision(precision: str, device_type: str, where: str) -> str:
    """The precision a torch network runs in: ``precision`` checked against :data:`PRECISIONS`; fp16 on a CPU
    falls back to fp32 with a warning (slow and inexact there; bf16 is the reduced precision CPUs run well);
    int8 is an exported runtime's (:mod:`predict.encoders.runtimes`), whose torch network stays fp32."""
    if precision not in PRECISIONS:
        raise EncoderError(f"{where}: model.precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        return "fp32"
    if precision == "fp16" and device_type == "cpu":
        warnings.warn(f"{where}: precision fp16 needs CUDA; running fp32 on the CPU (bf16 works on CPUs)")
        return "fp32"
    return precision


def unknown_tokens(text: str, tokens: list[str], vocabulary: Container[str], encoder: str,
                   left_out: Container[str] = frozenset()) -> list[str]:
    """The ``tokens`` of ``text`` not in ``vocabulary``, in order, each once, except those ``left_out`` of it
    on purpose (stop words the model was trained to read as ``<unk>``); a ``ValueError`` naming the
    ``encoder`` and listing them when not one token is in the vocabulary (or there is none). See
    :meth:`EncoderSpecModel.unknown_words`.

    >>> unknown_tokens("a zzzz field", ["a", "zzzz", "field"], {"field"}, "AMFMN", left_out={"a"})
    ['zzzz']
    >>> unknown_tokens("the zzzz", ["the", "zzzz"], {"field"}, "AMFMN", left_out={"the"})
    Traceback (most recent call last):
    ValueError: query 'the zzzz': no word the AMFMN encoder knows (unknown: the, zzzz)
    """
    missing = list(dict.fromkeys(token for token in tokens if token not in vocabulary))
    if len(missing) == len(set(tokens)):
        found = f"unknown: {', '.join(missing)}" if missing else "no word left once punctuation is dropped"
        raise ValueError(f"query {text!r}: no word the {encoder} encoder knows ({found})")
    return [token for token in missing if token not in left_out]


class EncoderSpecModel:
    """Base class of every encoder the pipeline can use.

    Attributes:
        name: a short name used in logs and cache keys.
        tile_size: side in pixels of the square tiles the pipeline hands to ``image_encoder``.
        batch_size: how many tiles go through ``encode_batch`` at once (yaml ``model.batch_size``).
        embed_dim: length of the vectors, for the ``(0, D)`` answer to an empty batch (None: ``(0, 0)``).
        any_tile_size: ``image_encoder`` takes square tiles of any side (the model resizes them itself).
    """

    name = "encoder"
    tile_size = 256
    batch_size = 64
    embed_dim: int | None = None
    any_tile_size = False
    runtime = "torch"  # what runs the image side: set by load_encoder (predict.encoders.runtimes)
    exported_batch = None  # the exported runtime's ``(B, C, H, W) float32 -> (B, D)``, when one runs it

    def __new__(cls, *args, **kwargs):
        # configured here as well as in __init__, so that a subclass whose own __init__ does not call
        # super().__init__() still has its options, device and yaml batch size
        self = super().__new__(cls)
        options = kwargs.get("options", args[0] if args else None)
        device = kwargs.get("device", args[1] if len(args) > 1 else None)
        EncoderSpecModel._configure(self, options if isinstance(options, dict) else None,
                                    device if isinstance(device, str) else None)
        return self

    def __init__(self, options: dict | None = None, device: str | None = None):
        self._configure(options, device)

    def _configure(self, options: dict | None, device: str | None) -> None:
        self.options = options or {}
        self.device = device or "cpu"
        batch = (self.options.get("model") or {}).get("batch_size")
        if batch:
            self.batch_size = int(batch)

    def image_encoder(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(N, tile_size, tile_size, 3)`` -> ``(N, D)`` float32, ``batch_size`` tiles per
        ``encode_batch`` call, all of them inside :meth:`inference`."""
        tiles = check_tiles(tiles, None if self.any_tile_size else self.tile_size)
        chunks = []
        encode = self.encode_batch if self.exported_batch is None else self.run_exported
        with self.inference():
            for start in range(0, len(tiles), self.batch_size):
                chunks.append(np.asarray(encode(tiles[start:start + self.batch_size]), dtype=np.float32))
        if not chunks:
            return np.zeros((0, self.embed_dim or 0), np.float32)
        return np.concatenate(chunks)

    def encode_batch(self, tiles: np.ndarray) -> np.ndarray:
        """One batch: uint8 RGB ``(B, tile_size, tile_size, 3)``, B <= ``batch_size`` -> ``(B, D)``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither encode_batch nor image_encoder")

    def image_network(self):
        """The image side as a network an exported runtime can run, or None (this default: the encoder
        always runs as it is, on torch).

        A plug-in opts in by returning a ``torch.nn.Module`` whose ``forward`` takes the float32 batch
        :meth:`network_input` gives, ``(B, C, H, W)`` with B free, and returns the ``(B, D)`` vectors
        ``encode_batch`` returns for the same tiles (normalisation included). It is exported to ONNX once,
        checked against torch on tiles of the images at hand and cached (:mod:`predict.encoders.runtimes`).
        """
        return None

    def network_input(self, tiles: np.ndarray):
        """uint8 RGB ``(B, S, S, 3)`` -> the float32 ``(B, C, H, W)`` batch :meth:`image_network` takes (a
        numpy array or a CPU tensor): the encoder's own preprocessing."""
        raise NotImplementedError(f"{type(self).__name__} has an image_network but no network_input")

    def run_exported(self, tiles: np.ndarray) -> np.ndarray:
        """One batch through the exported runtime: :meth:`network_input`, then the runtime's network."""
        return self.exported_batch(np.ascontiguousarray(np.asarray(self.network_input(tiles), dtype=np.float32)))

    def inference(self) -> contextlib.AbstractContextManager:
        """The context every batch runs in (torch encoders: inference mode and autocast)."""
        return contextlib.nullcontext()

    def text_encoder(self, text: str) -> np.ndarray:
        """One query -> ``(D,)`` float32."""
        raise NotImplementedError

    def working_bytes(self, batch_size: int) -> int | None:
        """Bytes :meth:`image_encoder` needs beyond the loaded model for a batch of ``batch_size`` tiles (its
        activations), or None when unknown (counted as none). A run over a testset lowers the batch by it to
        stay within its memory limit; an encoder with large activations declares it."""
        return None

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` this encoder has no entry for (it would read each as ``<unk>``), in order,
        each once, as the encoder itself splits the text (its lower-casing, tokeniser, punctuation filter).

        ``[]`` when every word is known, and always for an encoder without a vocabulary: this default, as
        there is nothing to check. When not one word of ``text`` is known (all unknown, or none left after
        the encoder's filter) it raises ``ValueError`` listing them: the vector of such a query means
        nothing. An encoder with a vocabulary implements it with :func:`unknown_tokens`.
        """
        return []

    def cosine_sim(self, image_vectors: np.ndarray, text_vector: np.ndarray) -> np.ndarray:
        """The original's similarity: ``mean(a / |a| * b / |b|)`` per row, ``(N,)`` float32.

        >>> EncoderSpecModel().cosine_sim(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([1.0, 0.0]))
        array([0.5, 0. ], dtype=float32)
        """
        a = l2_normalize(np.atleast_2d(image_vectors))
        b = l2_normalize(np.asarray(text_vector).reshape(-1))
        return np.mean(a * b, axis=1, dtype=np.float32)


def check_image_vectors(vectors: np.ndarray, n_tiles: int, encoder_name: str, dim: int | None = None) -> np.ndarray:
    """``vectors`` as float32 if they are ``(n_tiles, D)`` (``D == dim`` when given); otherwise a one-line
    ``ValueError`` naming the encoder and both shapes. Non-finite values are let through (their scores are
    the map's business).

    >>> check_image_vectors(np.zeros((2, 3)), 3, "toy")
    Traceback (most recent call last):
    ValueError: encoder toy: image_encoder returned vectors of shape (2, 3) for 3 tiles; expected (3, D)
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    expected = f"({n_tiles}, {'D' if dim is None else dim})"
    if vectors.ndim != 2 or vectors.shape[0] != n_tiles or (dim is not None and vectors.shape[1] != dim):
        raise ValueError(f"encoder {encoder_name}: image_encoder returned vectors of shape {vectors.shape} "
                         f"for {n_tiles} tiles; expected {expected}")
    return vectors


def similarities(encoder: EncoderSpecModel, image_vectors: np.ndarray, text_vector: np.ndarray) -> np.ndarray:
    """``encoder.cosine_sim`` as float64 ``(N,)`` for ``(N, D)`` image vectors, shapes checked: with the base
    class's similarity the text vector must be ``(D,)`` (a plug-in's own similarity may pair other shapes),
    and the scores ``(N,)``. A mismatch is a one-line ``ValueError`` naming the encoder and the shapes.

    >>> similarities(EncoderSpecModel(), np.ones((2, 4)), np.ones(3))
    Traceback (most recent call last):
    ValueError: encoder encoder: text vector of shape (3,) does not match image vectors (2, 4); expected (4,)
    """
    name = getattr(encoder, "name", type(encoder).__name__)
    dim = image_vectors.shape[1]
    if getattr(type(encoder), "cosine_sim", None) is EncoderSpecModel.cosine_sim and np.shape(text_vector) != (dim,):
        raise ValueError(f"encoder {name}: text vector of shape {np.shape(text_vector)} does not match image "
                         f"vectors {image_vectors.shape}; expected ({dim},)")
    scores = np.asarray(encoder.cosine_sim(image_vectors, text_vector), dtype=np.float64)
    if scores.shape != (len(image_vectors),):
        raise ValueError(f"encoder {name}: cosine_sim returned scores of shape {scores.shape} for image vectors "
                         f"{image_vectors.shape}; expected ({len(image_vectors)},)")
    return scores
