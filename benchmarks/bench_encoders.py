"""AMFMN image-branch throughput on 256x256 tiles: the original's one-tile-per-call way against batched
inference, with thread counts, channels-last memory format and tile preparation overlapped with the forward
passes. Random weights (speed does not depend on them); every ratio is against the original's way measured
in the same run. Then reduced precision (``model.precision``: bf16 autocast on a CPU, fp16 and bf16 on
CUDA) against fp32: speed, and its effect on the vectors and similarities, with the reference fixture
weights and the RSITMD vocabulary of ../shared when present (activations of realistic size).

    .venv/bin/python benchmarks/bench_encoders.py [--tiles 32] [--batch-sizes 1 4 16] [--threads 1 2] [--device cpu]

The original's ``image_encoder`` did ``PIL -> transforms -> unsqueeze -> forward`` for each tile, autograd
on, batch 1 (about 31 tiles/s on the project's 2-core machine). Another process using a core slows every
multi-thread row a lot; the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from PIL import Image
from torchvision import transforms

from predict.encoders.retrieval import IMAGENET_MEAN, IMAGENET_STD
from predict.layers.amfmn import AMFMN
from predict.layers.common import l2norm
from predict.model_encoder import load_encoder

SOURCE_TILE = 320  # side of the crops cut from the large image before the resize to 256


SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
CAPTIONS = ("many airplanes parked in the airport next to the runway",
            "a green football field surrounded by a red track and some buildings",
            "two tennis courts beside the road and green trees",
            "many white oil storage tanks on the gray ground near the harbor",
            "some boats docked in the dark blue sea near the harbor")


def write_weights(folder: Path) -> tuple[str, str]:
    """Checkpoint and vocabulary for the benchmark: the reference fixture (seed 1) and the RSITMD vocabulary
    when ../shared is there, else random weights and a 2-word vocabulary."""
    spec = SHARED / "reference" / "model" / "AMFMN_state_dict_spec.json"
    vocab = SHARED / "slm" / "rsitmd_splits_vocab.json"
    if spec.is_file() and vocab.is_file():
        import importlib.util
        import json

        module_spec = importlib.util.spec_from_file_location("fixture", spec.parent / "make_fixture_checkpoint.py")
        fixture = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(fixture)
        torch.save({"model": fixture.make_state_dict(json.loads(spec.read_text()), seed=1)}, folder / "amfmn.pth")
        return str(folder / "amfmn.pth"), str(vocab)
    (folder / "vocab.json").write_text('{"word2idx": {"road": 1, "<unk>": 2}, "idx2word": {}, "idx": 3}')
    torch.manual_seed(0)
    torch.save({"model": AMFMN(3).state_dict()}, folder / "amfmn.pth")
    return str(folder / "amfmn.pth"), str(folder / "vocab.json")


def make_encoder(folder: Path, device: str, batch_size: int, precision: str = "fp32"):
    """An AMFMN encoder through ``load_encoder`` with the weights of :func:`write_weights` in ``folder``."""
    if not (folder / "amfmn.pth").is_file():
        write_weights(folder)
    vocab = SHARED / "slm" / "rsitmd_splits_vocab.json"
    options = {"model": {"name": "AMFMN", "batch_size": batch_size, "precision": precision},
               "dataset": {"vocab_path": str(vocab) if vocab.is_file() else "vocab.json"},
               "optim": {"resume": "amfmn.pth"}}
    (folder / f"amfmn_{precision}.yaml").write_text(yaml.safe_dump(options))
    return load_encoder(folder / f"amfmn_{precision}.yaml", device=device)


def precision_effect(folder: Path, device: str, tiles: np.ndarray, batch_size: int, repeats: int) -> list[str]:
    """fp32 against the reduced precisions the device runs: tiles/s, worst cosine between the fp32 and the
    reduced image vectors, largest similarity change (in cosine units, i.e. x512) and how many captions
    keep the same top-5 tiles."""
    reduced = ["bf16"] if device == "cpu" else ["fp16", "bf16"]
    encoders = {p: make_encoder(folder, device, batch_size, p) for p in ["fp32", *reduced]}
    results = {}
    for precision, encoder in encoders.items():
        encoder.image_encoder(tiles[:2])  # warm-up
        rate = timed(lambda: encoder.image_encoder(tiles), len(tiles), repeats)
        vectors = encoder.image_encoder(tiles)
        sims = np.stack([encoder.cosine_sim(vectors, encoder.text_encoder(c)) for c in CAPTIONS])
        results[precision] = (rate, vectors, sims)
    rate32, vectors32, sims32 = results["fp32"]
    top32 = [set(np.argsort(-row)[:5]) for row in sims32]
    lines = [f"{'precision':>9}  tiles/s  speed-up  min image cosine  max |d similarity| x512  same top-5"]
    for precision, (rate, vectors, sims) in results.items():
        cosine = np.sum(vectors * vectors32, axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(vectors32, axis=1))
        same = sum(set(np.argsort(-row)[:5]) == top for row, top in zip(sims, top32))
        lines.append(f"{precision:>9}  {rate:7.1f}  {rate / rate32:7.2f}x  {cosine.min():16.5f}  "
                     f"{np.abs(sims - sims32).max() * 512:23.5f}  {same}/{len(CAPTIONS)}")
    return lines


def cut_tiles(image: np.ndarray, count: int) -> np.ndarray:
    """``count`` crops of ``SOURCE_TILE`` pixels from ``image``, resized to 256x256: the pipeline's tile cutting."""
    h, w = image.shape[:2]
    tiles = np.empty((count, 256, 256, 3), np.uint8)
    for k in range(count):
        r = (k * 97) % (h - SOURCE_TILE)
        c = (k * 193) % (w - SOURCE_TILE)
        tiles[k] = cv2.resize(image[r:r + SOURCE_TILE, c:c + SOURCE_TILE], (256, 256), interpolation=cv2.INTER_AREA)
    return tiles


def original_way(encoder, tiles: np.ndarray) -> None:
    """The original's loop: a PIL image per tile, torchvision transforms, batch 1, autograd on."""
    to_input = transforms.Compose([transforms.Resize((256, 256)), transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    network = encoder.network
    for tile in tiles:
        x = to_input(Image.fromarray(tile)).unsqueeze(0).to(encoder.device)
        l2norm(network.encode_image(x)).cpu().detach().numpy()


def batched(encoder, tiles: np.ndarray) -> None:
    encoder.image_encoder(tiles)


def prepare_then_encode(encoder, image: np.ndarray, count: int, overlap: bool) -> None:
    """Cut and resize tiles batch by batch and encode them; with ``overlap`` the next batch is cut in a
    worker thread while the current one runs through the network (torch releases the GIL)."""
    sizes = [min(encoder.batch_size, count - start) for start in range(0, count, encoder.batch_size)]
    if not overlap:
        for size in sizes:
            encoder.image_encoder(cut_tiles(image, size))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(cut_tiles, image, sizes[0])
        for size in sizes[1:] + [0]:
            tiles = pending.result()
            if size:
                pending = pool.submit(cut_tiles, image, size)
            encoder.image_encoder(tiles)


def timed(run, count: int, repeats: int) -> float:
    """Best tiles/s over ``repeats`` runs of ``run()`` (the best is the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def use_channels_last(encoder, enabled: bool) -> None:
    fmt = torch.channels_last if enabled else torch.contiguous_format
    encoder.network.extract_feature.to(memory_format=fmt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=32, help="tiles per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16],
                        help="image_encoder batch sizes; the last one is used for the other rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8), (0, 0), 3)
    tiles = cut_tiles(image, args.tiles)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        encoder = make_encoder(Path(folder), args.device, max(args.batch_sizes))
        batched(encoder, tiles[:2])  # warm-up: first-call allocations
        for threads in args.threads:
            torch.set_num_threads(threads)

            def measure(label, run):
                rows.append((threads, label, timed(run, len(tiles), args.repeats)))

            measure("original way: PIL + transforms, batch 1, autograd on", lambda: original_way(encoder, tiles))
            for batch_size in args.batch_sizes:
                encoder.batch_size = batch_size
                measure(f"image_encoder (inference_mode), batch {batch_size}", lambda: batched(encoder, tiles))
            use_channels_last(encoder, True)
            measure(f"image_encoder, batch {batch_size}, channels_last", lambda: batched(encoder, tiles))
            use_channels_last(encoder, False)
            for overlap in (False, True):
                label = f"cut+resize then encode, batch {batch_size}, " + ("cut overlapped" if overlap else "in turn")
                measure(label, lambda: prepare_then_encode(encoder, image, len(tiles), overlap))

    print(f"AMFMN image branch, {len(tiles)} tiles of 256x256 per run, best of {args.repeats}, device {args.device}, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    width = max(len(label) for _, label, _ in rows)
    print(f"threads  {'path':<{width}}  tiles/s  vs original (same threads)")
    baselines = {threads: rate for threads, label, rate in rows if label.startswith("original")}
    for threads, label, rate in rows:
        print(f"{threads:>7}  {label:<{width}}  {rate:7.1f}  {rate / baselines[threads]:9.2f}x")

    torch.set_num_threads(max(args.threads))
    with tempfile.TemporaryDirectory() as folder:
        weights = "reference fixture weights (seed 1)" if (SHARED / "reference").is_dir() else "random weights"
        print(f"\nReduced precision (autocast) on {args.device}, {weights}, batch {max(args.batch_sizes)}, "
              f"{len(tiles)} tiles x {len(CAPTIONS)} captions")
        for line in precision_effect(Path(folder), args.device, tiles, max(args.batch_sizes), args.repeats):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
