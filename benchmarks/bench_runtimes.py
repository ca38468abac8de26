"""The image encoders per runtime on this machine: tiles/s, ratio to eager torch fp32 in the same round, cosine
to torch; then the whole AMFMN run of one large scene per runtime (wall, peak, probmap difference).

    .venv/bin/python benchmarks/bench_runtimes.py [--encoders demo,AMFMN,ViT-B-32,RN50] [--rounds 2]
    .venv/bin/python benchmarks/bench_runtimes.py --encoders none --scene IMAGE --runs 0a60974,torch,auto,onnxruntime:int8

Part 1 (``--encoders``): each encoder's whole per-batch function (uint8 tiles in, vectors out:
``image_encoder`` on ``--tiles`` tiles at the yaml's batch) under eager torch fp32, torch with the network
in channels_last, ONNX Runtime and OpenVINO fp32 and int8 (calibrated on other tiles of the same scenes),
in ``--rounds`` interleaved rounds; the ratio is to eager torch in the same round, the cosine the per-vector
minimum to eager torch's vectors. Tiles are cut from synthetic aerial scenes
(:func:`predict.demo.synthetic.generate_scene`). AMFMN has fixture weights
(``../shared/reference/model/make_fixture_checkpoint.py``, seed 5) and the RSITMD vocabulary of
``../shared/slm``; the CLIP models random weights (speed and export fidelity do not depend on training).

Part 2 (``--scene``): ``selo-localise`` with AMFMN on ``--scene`` and two queries, each run in a process of
its own on a fresh output folder and a fresh runtime cache: a commit (the code before the runtimes, with
``PYTHONPATH`` on a ``git archive`` of it), or ours with ``--runtime R`` (``R:int8`` adds ``--precision int8``).
Printed: wall, peak resident memory, the ratio to the first run, and the mean absolute difference of the
probmaps to the first run's, in grey levels.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from measured import run_measured

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("SELO_SHARED", REPO.parent / "shared"))
QUERIES = ["a playground with a green football field and a red track.", "many buildings near a road."]


def amfmn_yaml(folder: Path) -> Path:
    """An AMFMN yaml with fixture weights (seed 5) and the RSITMD vocabulary, written under ``folder``."""
    import torch
    import yaml

    spec = SHARED / "reference" / "model" / "AMFMN_state_dict_spec.json"
    sys.path.insert(0, str(spec.parent))
    from make_fixture_checkpoint import make_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": make_state_dict(json.loads(spec.read_text()), seed=5)}, folder / "AMFMN_fixture.tar")
    options = {"model": {"name": "AMFMN", "batch_size": 16, "embed": {"embed_dim": 512},
                         "multiscale": {"multiscale_input_channel": 3, "multiscale_output_channel": 1},
                         "seq2vec": {"dir_st": str(folder / "skipthoughts")}},
               "dataset": {"vocab_path": str(SHARED / "slm" / "rsitmd_splits_vocab.json")},
               "optim": {"resume": str(folder / "AMFMN_fixture.tar")}}
    (folder / "amfmn.yaml").write_text(yaml.safe_dump(options))
    return folder / "amfmn.yaml"


def clip_yaml(folder: Path, architecture: str) -> Path:
    """An open_clip yaml with random weights for ``architecture``, written under ``folder``."""
    import open_clip
    import torch
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(open_clip.create_model(architecture, pretrained=None).state_dict(), folder / f"{architecture}.pt")
    path = folder / f"{architecture}.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "open_clip", "architecture": architecture,
                                              "weights": str(folder / f"{architecture}.pt"), "batch_size": 16}}))
    return path


def encoder_yaml(name: str, work: Path) -> str:
    if name == "demo":
        return str(REPO / "predict/options/demo/demo_encoder.yaml")
    if name == "AMFMN":
        return str(amfmn_yaml(work / "amfmn"))
    return str(clip_yaml(work / "clip", name))


def scene_tiles(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tiles to time and 128 others to calibrate int8 on, of two synthetic 2400 px scenes."""
    from predict.core.tiling import sample_tiles
    from predict.demo.synthetic import generate_scene

    scenes = [np.ascontiguousarray(generate_scene([seed, 3], 2400, 2400).rgb[:, :, ::-1]) for seed in (11, 12)]
    tiles = sample_tiles(scenes, 256, count + 128, per_image=(count + 128 + 1) // 2)
    return tiles[1::2][:count], tiles[0::2]


def channels_last(encoder):
    import torch

    for value in vars(encoder).values():
        if isinstance(value, torch.nn.Module):
            value.to(memory_format=torch.channels_last)
    return encoder


def variants(yaml_path: str, calibration: np.ndarray) -> dict:
    """Every variant's encoder, or the one line that refused it (an int8 model below its floor)."""
    from predict.encoders.base import EncoderError
    from predict.encoders.registry import load_encoder

    def load(runtime, precision="fp32"):
        try:
            return load_encoder(yaml_path, device="cpu", runtime=runtime, precision=precision, sample=calibration)
        except EncoderError as refused:
            return str(refused)

    return {"torch": load("torch"), "torch channels_last": channels_last(load("torch")),
            "onnxruntime fp32": load("onnxruntime"), "openvino fp32": load("openvino"),
            "onnxruntime int8": load("onnxruntime", "int8"), "openvino int8": load("openvino", "int8")}


def bench_encoders(names: list[str], tiles: np.ndarray, calibration: np.ndarray, rounds: int, work: Path) -> None:
    from predict.encoders.runtimes.exported import cosines

    print(f"{'encoder':>10} {'variant':>20} {'tiles/s':>8} {'ratio':>6} {'min cos':>10} {'mean cos':>10}", flush=True)
    for name in names:
        loaded = variants(encoder_yaml(name, work), calibration)
        encoders = {label: encoder for label, encoder in loaded.items() if not isinstance(encoder, str)}
        reference = encoders["torch"].image_encoder(tiles)
        seconds = {label: [] for label in encoders}
        for _ in range(rounds):
            for label, encoder in encoders.items():
                start = time.perf_counter()
                encoder.image_encoder(tiles)
                seconds[label].append(time.perf_counter() - start)
        for label, refused in loaded.items():
            if isinstance(refused, str):
                print(f"{name:>10} {label:>20} refused: {refused}", flush=True)
        for label, encoder in encoders.items():
            found = cosines(encoder.image_encoder(tiles), reference)
            ratios = [base / own for base, own in zip(seconds["torch"], seconds[label])]
            print(f"{name:>10} {label:>20} {len(tiles) / min(seconds[label]):8.1f} {np.median(ratios):5.2f}x "
                  f"{found.min():10.7f} {found.mean():10.7f}", flush=True)


def run_scene(kind: str, scene: str, yaml_path: str, work: Path) -> dict:
    """One ``selo-localise`` run in a process of its own: wall, peak MB, its output folder."""
    out = work / f"scene_{kind.replace(':', '_')}"
    shutil.rmtree(out, ignore_errors=True)
    runtime, _, precision = kind.partition(":")
    env = {**os.environ, "SELO_RUNTIME_CACHE": str(work / f"runtimes_{kind.replace(':', '_')}")}
    shutil.rmtree(env["SELO_RUNTIME_CACHE"], ignore_errors=True)
    flags = []
    if runtime in ("torch", "auto", "onnxruntime", "openvino"):
        tree = REPO
        flags = ["--runtime", runtime] + (["--precision", precision] if precision else [])
    else:  # a commit
        tree = work / f"tree_{kind}"
        if not tree.is_dir():
            tree.mkdir(parents=True)
            archive = subprocess.run(["git", "-C", str(REPO), "archive", kind], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "predict.cli.localise", "--yaml_path", yaml_path, "--device", "cpu",
               "--image", scene, "--out", str(out), *[a for q in QUERIES for a in ("--query", q)], *flags]
    run = run_measured(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {out / 'log.txt'}")
    return {"kind": kind, "wall": run.wall, "peak_mb": run.peak_mb, "out": out}


def probmaps(out: Path) -> list[np.ndarray]:
    import rasterio

    maps = []
    for path in sorted(out.glob("*_probmap.tif")):
        with rasterio.open(path) as src:
            maps.append(src.read(1).astype(np.float64))
    return maps


def bench_scene(scene: str, kinds: list[str], work: Path) -> None:
    yaml_path = str(amfmn_yaml(work / "amfmn"))
    print(f"AMFMN (fixture weights) on {scene}, {len(QUERIES)} queries, {os.cpu_count()} CPUs", flush=True)
    print(f"{'run':>18} {'wall s':>8} {'ratio':>6} {'peak MB':>8} {'mean |d| grey':>14}", flush=True)
    first = None
    for kind in kinds:
        result = run_scene(kind, scene, yaml_path, work)
        first = first or result
        difference = np.mean([np.abs(a - b).mean() for a, b in zip(probmaps(result["out"]), probmaps(first["out"]))])
        print(f"{kind:>18} {result['wall']:8.1f} {first['wall'] / result['wall']:5.2f}x {result['peak_mb']:8.0f} "
              f"{difference:14.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="demo,AMFMN,ViT-B-32,RN50", help="comma-separated, or none")
    parser.add_argument("--tiles", type=int, default=64, help="tiles timed per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scene", default=None, help="an image for part 2 (e.g. the largest like-SLM image)")
    parser.add_argument("--runs", default="0a60974,torch,auto,onnxruntime:int8,openvino:int8",
                        help="part 2's runs: commits or runtimes (R:int8), ratios and differences to the first")
    parser.add_argument("--work", default=None, help="folder for weights, trees and outputs (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_runtimes-")).resolve()
    os.environ.setdefault("SELO_RUNTIME_CACHE", str(work / "runtimes"))
    try:
        if args.encoders != "none":
            tiles, calibration = scene_tiles(args.tiles)
            bench_encoders(args.encoders.split(","), tiles, calibration, args.rounds, work)
        if args.scene:
            bench_scene(os.path.abspath(args.scene), args.runs.split(","), work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
