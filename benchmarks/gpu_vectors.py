"""Encoder vectors on a device against the CPU in fp32: AMFMN and LW-MCR with fixture weights, open_clip ViT-B-32.

    .venv/bin/python benchmarks/gpu_vectors.py --device cuda [--work cache/gpu_check] [--tiles 256]
    .venv/bin/python benchmarks/gpu_vectors.py --fixture-yaml AMFMN --work cache/gpu_check   # prints its path

AMFMN and LW-MCR get the deterministic fixture checkpoints of ``../shared/reference/model`` (as
``tests/test_encoders_fidelity.py`` makes them, digest checked), ViT-B-32 random weights
(``pretrained=None``, seed 0) saved as its weights file; nothing is downloaded. For each model and
precision (fp32, fp16, bf16) it prints, against CPU fp32 on the same tiles and queries: the largest
absolute difference of the image vectors and of the text vectors, the lowest cosine between them, and
the device's image tiles/s.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SELO_SHARED", REPO.parent / "shared"))
MODEL_REFERENCE = SHARED / "reference/model"
QUERIES = ["many airplanes parked in the airport", "a river passes through the green forest",
           "some green trees are near a white building"]
PRECISIONS = ("fp32", "fp16", "bf16")


def fixture_yaml(name: str, work: Path) -> Path:
    """``work/<name>/encoder.yaml`` with the fixture checkpoint of AMFMN or LW_MCR (made once)."""
    folder = work / name
    path = folder / "encoder.yaml"
    if path.is_file():
        return path
    spec = importlib.util.spec_from_file_location("make_fixture_checkpoint", MODEL_REFERENCE / "make_fixture_checkpoint.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    expected = json.loads((MODEL_REFERENCE / "expected_dev.json").read_text(encoding="utf-8"))
    fixture = expected["fixture"]
    state = generator.make_state_dict(json.loads((MODEL_REFERENCE / fixture[name]["spec"]).read_text()), fixture["seed"])
    if generator.state_dict_digest(state) != fixture[name]["state_dict_digest"]:
        raise SystemExit(f"{name}: fixture checkpoint digest differs from {MODEL_REFERENCE / 'expected_dev.json'}")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, folder / "fixture.pth")
    options = {"model": {"name": name, "batch_size": 64},
               "dataset": {"vocab_path": str(SHARED / "slm/rsitmd_splits_vocab.json")},
               "optim": {"resume": "fixture.pth"}}  # relative to the yaml's folder
    path.write_text(yaml.safe_dump(options))
    return path


def clip_yaml(work: Path) -> Path:
    """``work/ViT-B-32/encoder.yaml`` with random ViT-B-32 weights (seed 0, made once)."""
    import open_clip

    folder = work / "ViT-B-32"
    path = folder / "encoder.yaml"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), folder / "weights.pt")
        path.write_text(yaml.safe_dump({"model": {"name": "open_clip", "architecture": "ViT-B-32",
                                                  "weights": str(folder / "weights.pt"), "batch_size": 64}}))
    return path


def with_precision(path: Path, precision: str) -> Path:
    """A copy of the yaml at ``path`` with ``model.precision`` set (beside it, so relative paths still hold)."""
    options = yaml.safe_load(path.read_text())
    options["model"]["precision"] = precision
    copy = path.with_name(f"encoder_{precision}.yaml")
    copy.write_text(yaml.safe_dump(options))
    return copy


def scene_tiles(count: int, seed: int = 0) -> np.ndarray:
    """``count`` uint8 RGB 256 x 256 tiles cut from a synthetic aerial scene."""
    from predict.demo.synthetic import generate_scene

    scene = generate_scene([seed, 0], 1024, 1024).rgb
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 1024 - 256, size=(count, 2))
    return np.stack([scene[r:r + 256, c:c + 256] for r, c in corners])


def vectors(yaml_path: Path, device: str, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Image vectors, text vectors and image tiles/s of the encoder of ``yaml_path`` on ``device``."""
    from predict.encoders.registry import load_encoder

    encoder = load_encoder(yaml_path, device=device)
    encoder.image_encoder(tiles[:2])  # warm-up (CUDA context, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = encoder.image_encoder(tiles)  # returns numpy: the device work is done
    seconds = time.perf_counter() - start
    texts = np.stack([encoder.text_encoder(query) for query in QUERIES])
    return images, texts, len(tiles) / seconds


def compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference and lowest cosine, row by row."""
    cosine = np.sum(reference * other, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1))
    return float(np.max(np.abs(reference - other))), float(np.min(cosine))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", default=str(REPO / "cache/gpu_check"), help="folder for the weights files")
    parser.add_argument("--tiles", type=int, default=256, help="tiles per model (the CPU reference encodes them too)")
    parser.add_argument("--models", default="AMFMN,LW_MCR,ViT-B-32")
    parser.add_argument("--fixture-yaml", choices=("AMFMN", "LW_MCR"), help="only write that yaml; print its path")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    if args.fixture_yaml:
        print(fixture_yaml(args.fixture_yaml, work))
        return
    tiles = scene_tiles(args.tiles)
    print(f"{len(tiles)} tiles, {len(QUERIES)} queries; device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""), flush=True)
    print(f"{'model':>9} {'precision':>9} {'image max|d|':>12} {'image min cos':>13} {'text max|d|':>11} "
          f"{'text min cos':>12} {'tiles/s':>8} {'cpu tiles/s':>11}", flush=True)
    failed = False
    for model in args.models.split(","):
        path = clip_yaml(work) if model == "ViT-B-32" else fixture_yaml(model, work)
        cpu_images, cpu_texts, cpu_rate = vectors(path, "cpu", tiles)
        for precision in PRECISIONS:
            if precision == "fp16" and not args.device.startswith("cuda"):
                continue  # fp16 runs on CUDA only (the CPU falls back to fp32)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    images, texts, rate = vectors(with_precision(path, precision), args.device, tiles)
            except Exception as exc:
                failed = True
                print(f"{model:>9} {precision:>9} FAILED: {str(exc).splitlines()[0]}", flush=True)
                continue
            (image_diff, image_cos), (text_diff, text_cos) = compare(cpu_images, images), compare(cpu_texts, texts)
            print(f"{model:>9} {precision:>9} {image_diff:12.2e} {image_cos:13.6f} {text_diff:11.2e} {text_cos:12.6f} "
                  f"{rate:8.1f} {cpu_rate:11.1f}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
