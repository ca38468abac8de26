"""Tile throughput of the open_clip encoder: batched against one tile per call, measured in the same run.

    .venv/bin/python benchmarks/bench_clip.py [--tiles 64] [--batch_size 32] [--architecture ViT-B-32]
    .venv/bin/python benchmarks/bench_clip.py --device cuda     # adds fp16 and bf16 against fp32

Randomly initialised weights (speed does not depend on their values) are saved to a temp file and loaded
through ``load_encoder``, as a user's checkpoint would be. Timed routes, all on the same 256 x 256 tiles:

- ``batched <precision>``: ``image_encoder`` on ``--batch_size`` tiles per call (the pipeline's way);
- ``one tile per call``: ``image_encoder`` on one tile per call, fp32;
- ``open_clip per tile (PIL)``: open_clip's own transform on a PIL image and ``encode_image`` of one
  tile per call, fp32 (the way the published CLIP-family SeLo numbers were produced).

Each route is warmed up once, then the routes take turns over ``--rounds`` rounds (one pass over all tiles
each); medians are reported, with ratios against ``one tile per call``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import yaml
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from tqdm import tqdm

from predict.model_encoder import load_encoder

REPO = Path(__file__).resolve().parent.parent


def make_tiles(count: int, side: int = 256, seed: int = 0) -> np.ndarray:
    """``(count, side, side, 3)`` uint8 RGB tiles of smooth random texture."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.integers(0, 256, (count, 3, side // 16, side // 16)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return smooth.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_pass(encode, tiles: np.ndarray, chunk: int, device: str) -> float:
    """Tiles per second of ``encode`` called on consecutive chunks of ``chunk`` tiles."""
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(tiles), chunk):
        encode(tiles[first:first + chunk])
    synchronize(device)
    return len(tiles) / (time.perf_counter() - start)


def run(architecture: str, device: str, n_tiles: int, batch_size: int, rounds: int) -> dict:
    """Median tiles/s of every route over ``rounds`` rounds; the routes take turns within a round, so
    that a load change on a shared machine hits them alike."""
    tiles = make_tiles(n_tiles)
    torch.manual_seed(0)
    model = open_clip.create_model(architecture, pretrained=None).eval()
    results = {"architecture": architecture, "device": device, "tiles": n_tiles, "batch_size": batch_size,
               "rounds": rounds, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(device)
    routes = {}  # name -> (encode, tiles per call)
    vectors = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save(model.state_dict(), weights)
        for precision in ("fp32", "fp16", "bf16") if device.startswith("cuda") else ("fp32",):
            yaml_path = Path(tmp) / f"{precision}.yaml"
            yaml_path.write_text(yaml.safe_dump({"model": {
                "name": "open_clip", "architecture": architecture, "weights": str(weights),
                "precision": precision, "batch_size": batch_size}}))
            encoder = load_encoder(yaml_path, device=device)
            routes[f"batched {precision}"] = (encoder.image_encoder, batch_size)
            vectors[precision] = encoder.image_encoder(tiles[:batch_size])
            if precision == "fp32":
                routes["one tile per call"] = (encoder.image_encoder, 1)

    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    model = model.to(device)

    @torch.inference_mode()
    def library_one_tile(batch):
        image = preprocess(Image.fromarray(batch[0]))[None].to(device)
        return model.encode_image(image, normalize=True).cpu()

    routes["open_clip per tile (PIL)"] = (library_one_tile, 1)
    for encode, chunk in routes.values():  # warm-up
        encode(tiles[:chunk])
    speeds = {name: [] for name in routes}
    for _ in tqdm(range(rounds), desc="rounds"):
        for name, (encode, chunk) in routes.items():
            speeds[name].append(timed_pass(encode, tiles, chunk, device))
    results["tiles_per_s"] = {name: float(np.median(v)) for name, v in speeds.items()}
    baseline = results["tiles_per_s"]["one tile per call"]
    results["speedup_vs_one_tile_per_call"] = {k: v / baseline for k, v in results["tiles_per_s"].items()}
    results["min_cosine_vs_fp32"] = {p: float(np.min(np.sum(v * vectors["fp32"], axis=1))) for p, v in vectors.items()}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds fp16 and bf16)")
    parser.add_argument("--tiles", type=int, default=32, help="tiles per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch's default if not given)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args.architecture, args.device, args.tiles, args.batch_size, args.rounds)
    where = results.get("gpu", f"CPU, {results['torch_threads']} torch threads")
    print(f"{args.architecture} on {where}: {args.tiles} tiles of 256 x 256, batch {args.batch_size}, "
          f"median of {args.rounds} rounds")
    for route, speed in results["tiles_per_s"].items():
        ratio = results["speedup_vs_one_tile_per_call"][route]
        print(f"  {route:28s} {speed:8.1f} tiles/s   x{ratio:.2f}")
    for precision, cosine in results["min_cosine_vs_fp32"].items():
        if precision != "fp32":
            print(f"  {precision} vectors vs fp32: min cosine {cosine:.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
