"""AMFMN image-branch throughput on 256x256 tiles: the original's one-tile-per-call way against batched
inference, with thread counts, channels-last memory format and tile preparation overlapped with the forward
passes. Random weights (speed does not depend on them); every ratio is against the original's way measured
in the same run.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from predict.layers.amfmn import AMFMN  # noqa: E402
from predict.layers.retrieval_encoder import IMAGENET_MEAN, IMAGENET_STD, l2norm  # noqa: E402
from predict.model_encoder import load_encoder  # noqa: E402

SOURCE_TILE = 320  # side of the crops cut from the large image before the resize to 256


def make_encoder(folder: Path, device: str, batch_size: int):
    """An AMFMN encoder through ``load_encoder``: random weights and a 2-word vocabulary written to ``folder``."""
    (folder / "vocab.json").write_text('{"word2idx": {"road": 1, "<unk>": 2}, "idx2word": {}, "idx": 3}')
    torch.manual_seed(0)
    torch.save({"model": AMFMN(3).state_dict()}, folder / "amfmn.pth")
    options = {"model": {"name": "AMFMN", "batch_size": batch_size}, "dataset": {"vocab_path": "vocab.json"},
               "optim": {"resume": "amfmn.pth"}}
    (folder / "amfmn.yaml").write_text(yaml.safe_dump(options))
    return load_encoder(folder / "amfmn.yaml", device=device)


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
