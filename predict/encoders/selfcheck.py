"""The original's encoder self-check, and what the pipeline calls of an encoder (``python predict/model_encoder.py``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from predict.encoders.base import PRECISIONS, RUNTIMES, check_image_vectors, similarities
from predict.encoders.registry import load_encoder
from predict.provenance import runtime_identity, short, vectors_key

SAMPLE_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def default_image_path() -> str | None:
    """The first image directly in ``test_data/`` of the current folder (the original used
    ``sparseresidential_3814.tif`` there), or None when there is none, as on a fresh clone."""
    folder = Path("test_data")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_IMAGE_SUFFIXES) if folder.is_dir() else []
    return str(images[0]) if images else None


def self_check_tile(image_path: str | None, tile_size: int) -> np.ndarray:
    """uint8 RGB ``(tile_size, tile_size, 3)``: the image resized with PIL's bilinear filter, as the
    original's ``transforms.Resize``; a synthetic colour ramp when ``image_path`` is None."""
    if image_path is None:
        ramp = np.linspace(0, 255, tile_size).astype(np.uint8)
        return np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(128)), axis=-1)
    from PIL import Image

    from predict.io.images import read_image  # local import: it pulls in cv2

    rgb = np.ascontiguousarray(read_image(image_path)[:, :, ::-1])
    return np.asarray(Image.fromarray(rgb).resize((tile_size, tile_size), Image.BILINEAR))


def check_finite(values: np.ndarray, what: str) -> None:
    """A one-line ``ValueError`` when ``values`` hold a NaN or an infinity."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} holds non-finite values ({int(np.sum(~np.isfinite(values)))} of {values.size})")


def self_check(yaml_path: str, image_path: str | None, text: str, device: str | None = None,
               runtime: str | None = None, precision: str | None = None) -> None:
    """The original's encoder test, and what the pipeline calls: one tile's vector, a batch of 3 tiles in
    batches of 2 (``image_encoder``'s batching), the text vector, ``cosine_sim`` on the batch and the
    tile-vector store's key; every shape checked and every value finite, else a one-line ``ValueError``.
    The runtime is chosen as the commands choose it, its export checked on tiles of ``image_path``."""
    from predict.core.tiling import tile_sample
    from predict.io.images import read_image  # local import: it pulls in cv2

    sample = tile_sample([image_path], read_image) if image_path else None
    encoder = load_encoder(yaml_path, device=device, runtime=runtime, precision=precision, sample=sample)
    tile = self_check_tile(image_path, encoder.tile_size)
    name = getattr(encoder, "name", type(encoder).__name__)
    image_vector = check_image_vectors(encoder.image_encoder(tile[None]), 1, name)
    dim = image_vector.shape[1]
    tiles = np.stack([tile, tile[::-1], tile[:, ::-1]])
    batch_size, encoder.batch_size = encoder.batch_size, 2
    try:
        batch_vectors = check_image_vectors(encoder.image_encoder(tiles), len(tiles), name, dim)
    finally:
        encoder.batch_size = batch_size
    text_vector = np.asarray(encoder.text_encoder(text), dtype=np.float32)
    if text_vector.ndim != 1:
        raise ValueError(f"encoder {name}: text_encoder returned shape {text_vector.shape}; expected ({dim},)")
    sims = similarities(encoder, batch_vectors, text_vector)
    sim = similarities(encoder, image_vector, text_vector)
    for values, what in ((image_vector, "image vector"), (batch_vectors, "batch of image vectors"),
                         (text_vector, "text vector"), (sims, "similarities of the batch"), (sim, "similarity")):
        check_finite(values, f"encoder {name}: {what}")
    key = vectors_key(encoder)
    print(f"Encoder: {name} on {encoder.device}")
    print(f"Runtime: {describe_runtime(encoder)}")
    print(f"Image: {image_path or f'synthetic {encoder.tile_size}x{encoder.tile_size} colour ramp'}")
    print(f"Image vector shape: {image_vector.shape}")
    print(f"Batch of {len(tiles)} in batches of 2: {batch_vectors.shape}")
    print(f"Text vector shape: {text_vector.shape}")
    print(f"Similarity: {float(sim[0]):.6f}")
    print(f"Vector cache key: {key}")
    print("Encoder test successful!")


def describe_runtime(encoder) -> str:
    """``torch fp32``, ``onnxruntime fp32 (export 1a2b...)``, ``openvino int8 (..., mean cosine to fp32 ...)``."""
    choice = runtime_identity(encoder)
    text = f"{choice['runtime']} {getattr(encoder, 'precision', None) or 'fp32'}"
    if "export" in choice:
        text += f" (export {short(choice['export'])}"
        if "int8" in choice:
            text += (f"; cosine to fp32 on {choice['int8']['held_out_tiles']} held-out tiles: mean "
                     f"{choice['int8']['mean_cosine']:.6f}, min {choice['int8']['min_cosine']:.6f}")
        text += ")"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml_path", default="RSITMD_AMFMN",
                        help="encoder yaml, or a built-in preset by name (default %(default)s)")
    parser.add_argument("--image_path", default=None,
                        help="image to encode (default: the first image of test_data/, else a synthetic tile)")
    parser.add_argument("--text", default="many airplanes parked in the airport")
    parser.add_argument("--device", default=None)
    parser.add_argument("--runtime", choices=RUNTIMES, default=None, help="auto, torch, onnxruntime, openvino")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="fp32, fp16, bf16, int8")
    args = parser.parse_args(argv)
    try:
        self_check(args.yaml_path, args.image_path or default_image_path(), args.text, args.device, args.runtime,
                   args.precision)
    except Exception as exc:  # the self-check reports any failure in one line
        print(f"Encoder test failed: {exc}", file=sys.stderr)
        return 1
    return 0
