"""Train the demo encoder on tile/caption pairs from synthetic training scenes; writes
``predict/checkpoints/demo_encoder.pth`` and prints held-out text-to-tile recall@5.

Tiles are cut as the v1 pipeline cuts them (the 256/512/768 grids, resized to 256 with
``cv2.INTER_CUBIC``, BGR -> RGB) from JPEG-compressed scenes ``[TRAIN_SEED, i]``, plus tiles at random
positions around every object. A tile shows an object when the object covers ``POSITIVE_COVER`` of
the tile or the tile holds ``POSITIVE_SHARE`` of the object; tiles that hold only a little of an
object are left out (neither a match nor a non-match), the others show their main background
(forest, lawn, road, river, sea). Captions come from the grammar of ``predict.encoders.demo_text``. The loss is
a symmetric InfoNCE in which every caption of the same kind counts as a match.

With no arguments it reproduces the committed checkpoint (``make train-demo``): everything is seeded
and runs single-process on the CPU (same torch version and thread count -> same weights).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from predict.core.tiling import cut_tiles, multiscale_tiles
from predict.demo.synthetic import (BACKGROUND_KINDS, JPEG_QUALITY, KINDS, LABELS, TRAIN_SEED, generate_scene,
                                    make_caption)
from predict.encoders.demo import default_vocabulary, encode_captions
from predict.layers.demo_net import DemoNet, pool_tiles

STEPS = (256, 512, 768)  # the pipeline's default scales
POSITIVE_COVER = 0.3  # object pixels / tile pixels
POSITIVE_SHARE = 0.6  # object pixels in the tile / object pixels
AMBIGUOUS = 0.08  # not positive, but cover (or half the share) above this: left out of training
EXTRA_TILES_PER_OBJECT = 12
VALIDATION_OFFSET = 10_000  # validation scenes are [TRAIN_SEED, VALIDATION_OFFSET + i]
CLASSES = KINDS + BACKGROUND_KINDS
DEFAULT_OUT = "predict/checkpoints/demo_encoder.pth"


@dataclass
class TileSet:
    """Pooled tiles with what they show.

    Attributes:
        pooled: float16 ``(N, 3, 64, 64)`` tiles as ``pool_tiles`` gives them.
        classes: int ``(N,)`` index into ``CLASSES``.
        attributes: per tile, the caption slots of its object (``{}`` for backgrounds).
    """
    pooled: torch.Tensor
    classes: np.ndarray
    attributes: list


def jpeg_round_trip(rgb: np.ndarray) -> np.ndarray:
    """The scene as the pipeline reads it back from a quality-95 JPEG, in BGR."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table ``(H + 1, W + 1)`` of a bool mask (int64)."""
    return cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_64F).astype(np.int64)


def box_sums(table: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Pixels counted by ``table`` inside each box ``(r0, r1, c0, c1)`` of ``boxes`` ``(N, 4)``."""
    r0, r1, c0, c1 = boxes.T
    return table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]


def label_tiles(scene, boxes: np.ndarray) -> tuple[np.ndarray, list]:
    """Class index per tile (``-1`` = ambiguous, leave out) and the caption slots of its object."""
    height, width = scene.labels.shape
    areas = ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])).astype(np.float64)
    best_score = np.zeros(len(boxes))
    best_object = np.full(len(boxes), -1)
    positive = np.zeros(len(boxes), bool)
    for k, obj in enumerate(scene.objects):
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.round(obj.polygon).astype(np.int32)], 1)
        inside = box_sums(integral(mask), boxes)
        cover, share = inside / areas, inside / max(1, int(mask.sum()))
        score = np.maximum(cover / POSITIVE_COVER, share / POSITIVE_SHARE)
        better = score > best_score
        best_score[better], best_object[better] = score[better], k
        positive |= score >= 1
    backgrounds = np.stack([box_sums(integral(scene.labels == LABELS[b]), boxes) for b in BACKGROUND_KINDS], axis=1)
    classes = len(KINDS) + backgrounds.argmax(1)
    attributes = [{} for _ in boxes]
    for i in np.flatnonzero(positive):
        obj = scene.objects[best_object[i]]
        classes[i] = KINDS.index(obj.kind)
        attributes[i] = obj.attributes
    ambiguous = ~positive & (best_score * POSITIVE_COVER >= AMBIGUOUS)
    classes[ambiguous] = -1
    return classes, attributes


def object_tiles(rng: np.random.Generator, scene, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` square tiles per object at the pipeline's scales, centred near the object."""
    height, width = scene.labels.shape
    tiles = []
    for obj in scene.objects:
        cx, cy = obj.polygon.mean(0)
        extent = np.ptp(obj.polygon, axis=0).max()
        for _ in range(count):
            side = int(STEPS[rng.integers(len(STEPS))])
            x = int(np.clip(cx + rng.uniform(-0.4, 0.4) * extent - side / 2, 0, width - side))
            y = int(np.clip(cy + rng.uniform(-0.4, 0.4) * extent - side / 2, 0, height - side))
            tiles.append((y, y + side, x, x + side))
    return tiles


def build_tiles(seeds: list, rng: np.random.Generator, grid: bool, extra: int, desc: str) -> TileSet:
    """Generate the scenes of ``seeds``, cut grid and/or object tiles, label and pool them."""
    pooled, classes, attributes = [], [], []
    for seed in tqdm(seeds, desc=desc, unit="scene"):
        scene_rng = np.random.default_rng(list(seed) + [1])
        height, width = int(scene_rng.integers(2000, 3001)), int(scene_rng.integers(2000, 3001))
        scene = generate_scene(seed, height, width)
        bgr = jpeg_round_trip(scene.rgb)
        tiles = (multiscale_tiles(height, width, STEPS) if grid else []) + object_tiles(rng, scene, extra)
        boxes = np.array(tiles, dtype=np.int64)
        tile_classes, tile_attributes = label_tiles(scene, boxes)
        keep = np.flatnonzero(tile_classes >= 0)
        for start in range(0, len(keep), 256):
            chunk = keep[start:start + 256]
            pixels = cut_tiles(bgr, [tiles[i] for i in chunk], 256)
            pooled.append(pool_tiles(torch.from_numpy(pixels)).half())
        classes.append(tile_classes[keep])
        attributes += [tile_attributes[i] for i in keep]
    return TileSet(torch.cat(pooled), np.concatenate(classes), attributes)


def match_matrix(classes: np.ndarray, attributes: list) -> torch.Tensor:
    """``(N, N)`` bool: caption j matches tile i (same kind; for houses also the same roof colours)."""
    keys = [(c, tuple(sorted(a.get("roofs", [])))) for c, a in zip(classes, attributes)]
    codes = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    ids = torch.tensor([codes[k] for k in keys])
    return ids[:, None] == ids[None, :]


def captions_for(rng: np.random.Generator, classes: np.ndarray, attributes: list) -> list[str]:
    return [make_caption(rng, CLASSES[c], a) for c, a in zip(classes, attributes)]


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, match: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every matching pair counts as a positive (multi-positive softmax)."""
    logits = scale * F.normalize(image, dim=1) @ F.normalize(text, dim=1).T
    neg_inf = torch.finfo(logits.dtype).min

    def one_way(l: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(l, 1) - torch.logsumexp(l.masked_fill(~match, neg_inf), 1)).mean()

    return 0.5 * (one_way(logits) + one_way(logits.T))


def augment(pooled: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random quarter turn and flip (aerial views have no up), and a small brightness change per tile."""
    k = int(torch.randint(4, (1,), generator=generator))
    x = torch.rot90(pooled.float(), k, dims=(2, 3))
    if torch.rand(1, generator=generator) < 0.5:
        x = x.flip(3)
    x = x.contiguous()  # convolutions on a rotated view are twice as slow
    gain = 1 + 0.1 * (torch.rand(len(x), 1, 1, 1, generator=generator) - 0.5)
    return (x * gain).clamp_(0, 1)


def balanced_batch(rng: np.random.Generator, by_class: list[np.ndarray], size: int) -> np.ndarray:
    """``size`` tile indices, classes drawn uniformly (rare kinds as often as lawn)."""
    present = [ix for ix in by_class if len(ix)]
    picks = rng.integers(len(present), size=size)
    return np.array([present[p][rng.integers(len(present[p]))] for p in picks])


@torch.inference_mode()
def recall_at(network: DemoNet, tiles: TileSet, index: dict, rng: np.random.Generator, k: int = 5) -> tuple[float, float]:
    """Text-to-tile recall@k over held-out pairs (one caption per tile, each tile its own pair).

    Returns (exact, kind): the caption's own tile among the best ``k``; any tile of the caption's kind
    (and roof colours) among the best ``k`` (captions name a kind, not an instance).
    """
    network.eval()
    captions = captions_for(rng, tiles.classes, tiles.attributes)
    image = F.normalize(network.encode_image(tiles.pooled.float()), dim=1)
    text = F.normalize(network.encode_text(encode_captions(captions, index)), dim=1)
    top = (text @ image.T).topk(k, dim=1).indices
    exact = (top == torch.arange(len(captions))[:, None]).any(1).float().mean().item()
    match = match_matrix(tiles.classes, tiles.attributes)
    kind = torch.gather(match, 1, top).any(1).float().mean().item()
    return exact, kind


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--scenes", type=int, default=40, help="training scenes")
    parser.add_argument("--val-scenes", type=int, default=6, help="held-out scenes for recall@5")
    parser.add_argument("--steps", type=int, default=400, help="optimisation steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng([args.seed, TRAIN_SEED])
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()

    train = build_tiles([[TRAIN_SEED, i] for i in range(args.scenes)], rng, True, EXTRA_TILES_PER_OBJECT, "train scenes")
    val = build_tiles([[TRAIN_SEED, VALIDATION_OFFSET + i] for i in range(args.val_scenes)], rng, False, 3, "val scenes")
    counts = np.bincount(train.classes, minlength=len(CLASSES))
    print(f"{len(train.classes)} training tiles ({time.perf_counter() - start:.0f} s): "
          + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, counts)))

    vocab = default_vocabulary()
    index = {w: i for i, w in enumerate(vocab)}
    network = DemoNet(len(vocab))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optimizer = torch.optim.AdamW(list(network.parameters()) + [log_scale], lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.1)
    by_class = [np.flatnonzero(train.classes == c) for c in range(len(CLASSES))]
    progress = tqdm(range(args.steps), desc="training", unit="step")
    for step in progress:
        network.train()
        batch = balanced_batch(rng, by_class, args.batch)
        classes = train.classes[batch]
        attributes = [train.attributes[i] for i in batch]
        ids = encode_captions(captions_for(rng, classes, attributes), index)
        image = network.encode_image(augment(train.pooled[batch], generator))
        loss = contrastive_loss(image, network.encode_text(ids), match_matrix(classes, attributes),
                                log_scale.exp().clamp(max=100))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")

    exact, kind = recall_at(network, val, index, np.random.default_rng([args.seed, 1]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save({"model": network.state_dict(), "vocab": vocab}, args.out)
    print(f"held-out text-to-tile recall@5 over {len(val.classes)} pairs: exact pair {exact:.3f}, "
          f"same kind {kind:.3f}")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
