"""Does the demo encoder localise? The v1 pipeline with the trained and with the random-weight demo
encoder on a held-out synthetic testset, plus text-to-tile recall@5 on held-out tile/caption pairs.

    python benchmarks/bench_demo_localisation.py                 # demo-sized testset (8 scenes), seed 0
    python benchmarks/bench_demo_localisation.py --like-slm      # 22 images, 59 samples, real sizes

Testset and maps go to ``cache/bench_demo/<demo|slm_like>_seed<N>/``.

Neither testset seed is the training seed (``make_testset.TRAIN_SEED``), and the recall pairs come from
validation scenes the training never saw. Both encoders run in the same process on the same testset.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from evaluations.metrics import INDICATORS
from predict.cli.generate import main as generate_main
from predict.demo.make_testset import TRAIN_SEED, demo_layout, slm_layout, write_testset
from predict.demo.train_demo_encoder import VALIDATION_OFFSET, build_tiles, recall_at
from predict.model_encoder import load_encoder

ENCODERS = {"trained": "demo", "random": "demo_random"}  # the built-in presets by name
REPO = Path(__file__).resolve().parent.parent
RECALL_SCENES = 10


def run_pipeline(yaml_path: str, data_dir: Path, cache_dir: Path, device: str) -> tuple[dict, float]:
    """Mean indicators of a fresh v1 run and its wall time. The cache folder is removed first: results of
    another testset left there would otherwise stay in its metrics.json."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random encoder's expected warning
        rc = generate_main(["--yaml_path", yaml_path, "--cache_path", str(cache_dir),
                            "--src_data_path", str(data_dir / "imgs"),
                            "--src_anno_path", str(data_dir / "annotations/anno.json"),
                            "--device", device, "--overwrite", "--no_vector_cache"])
    seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"{cache_dir}: selo-generate failed (exit {rc}); see its log.txt")
    with open(cache_dir / "metrics.json", encoding="utf-8") as f:
        return json.load(f)["mean"], seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="testset seed (held out from training)")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--like-slm", action="store_true")
    parser.add_argument("--out", default=str(REPO / "cache/bench_demo"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.seed == TRAIN_SEED:
        parser.error("the testset seed must differ from the training seed")
    out = Path(args.out)
    run_dir = out / f"{'slm_like' if args.like_slm else 'demo'}_seed{args.seed}"
    data_dir = run_dir / "testset"
    rng = np.random.default_rng([args.seed, 10**6])
    layout = slm_layout(rng) if args.like_slm else demo_layout(rng, args.scenes)
    if not (data_dir / "annotations/anno.json").is_file():
        write_testset(str(data_dir), args.seed, layout)

    results = {name: run_pipeline(yaml, data_dir, run_dir / name, args.device) for name, yaml in ENCODERS.items()}
    tiles = build_tiles([[TRAIN_SEED, VALIDATION_OFFSET + i] for i in range(RECALL_SCENES)],
                        np.random.default_rng(1), False, 3, "recall scenes")
    recalls = {}
    for name, yaml in ENCODERS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            encoder = load_encoder(yaml, device=args.device)
        recalls[name] = recall_at(encoder.network, tiles, encoder.index, np.random.default_rng(2))

    n_samples = sum(captions for _, _, captions in layout)
    print(f"\nheld-out synthetic testset: seed {args.seed}, {len(layout)} images, {n_samples} samples "
          f"({'--like-slm' if args.like_slm else 'demo size'}); recall pairs: {len(tiles.classes)} tiles "
          f"from {RECALL_SCENES} validation scenes")
    print(f"{'encoder':<10}" + "".join(f"{k:>8}" for k in INDICATORS)
          + f"{'R@5 pair':>10}{'R@5 kind':>10}{'run s':>8}")
    for name, (mean, seconds) in results.items():
        exact, kind = recalls[name]
        print(f"{name:<10}" + "".join(f"{mean[k]:>8.4f}" for k in INDICATORS)
              + f"{exact:>10.3f}{kind:>10.3f}{seconds:>8.1f}")
    gain = results["trained"][0]["Rmi"] - results["random"][0]["Rmi"]
    print(f"Rmi trained - random: {gain:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
