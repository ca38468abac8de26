"""The archive of scenes on Ray: index throughput with one and two Ray worker nodes, one query's search over
the whole archive (scoring and maps apart) against a loop of ``selo-localise``, peak memory per Ray worker,
and on paper the wall time of 10,000 scenes of 10000 x 10000 px on N GPU nodes.

    .venv/bin/python benchmarks/bench_archive.py [--scenes 40] [--min_side 2000] [--max_side 5000] [--nodes 1 2]
    .venv/bin/python benchmarks/bench_archive.py --gpu --scenes 4 --yaml Y   # a local Ray with its GPUs: index only

Scenes: ``predict.demo.synthetic.generate_scene`` of random sides between ``--min_side`` and ``--max_side``
(kept as 8-bit TIFFs in ``--work`` for the next run). Each cluster (``ray.cluster_utils.Cluster`` on this
machine, on 127.0.0.1: a head without CPUs for the driver and ``--nodes`` worker nodes of ``--cpus`` CPUs)
indexes the scenes into a new archive; the search and the ``selo-localise`` loop (one process, every
scene, the same query, its tiles encoded as it goes) run once. Peak memory: the largest resident set of
each kind of Ray worker process (sampled every 0.2 s). The paper estimate uses the measured CPU costs
(decoding and cutting per tile, scoring per tile, one map per pixel) and an assumed GPU rate
(``--gpu_tiles_per_s``; ``--gpu`` measures one).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: nodes on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import cv2
import numpy as np
import ray
from ray.cluster_utils import Cluster

from predict.archive import ArchiveSettings, index_archive, scene_files, search_archive
from predict.archive.search import scene_maps, score_scenes
from predict.archive.store import read_header
from predict.cli.ray_session import ray_session
from predict.core.pipelines import get_pipeline
from predict.core.tiling import cut_tiles
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder
from predict.io.raster import read_raster
from predict.localisation.maps import query_vector
from predict.provenance import vectors_key
from predict.resources import find_yaml
from predict.scenes import SceneConfig, localise_scenes

REPO = Path(__file__).resolve().parent.parent

QUERY = "a playground with a green football field and a red track."
BIG_SIDE, BIG_SCENES, BIG_TILES = 10000, 10000, 4283  # v1 tiles of a 10000 x 10000 scene


def make_scenes(folder: str, count: int, min_side: int, max_side: int, seed: int = 5) -> list[str]:
    """``count`` synthetic scenes of random sides in ``[min_side, max_side]`` as 8-bit TIFFs (kept)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        height, width = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        path = os.path.join(folder, f"scene{i:03d}_{height}x{width}.tif")
        if not os.path.isfile(path):
            cv2.imwrite(path, cv2.cvtColor(generate_scene([seed, i], height, width).rgb, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


class WorkerMemory:
    """The largest resident set of its own (``VmRSS`` less ``RssShmem`` in ``/proc/<pid>/status``: the pages of
    Ray's shared object store it wrote are not counted; read every ``interval`` seconds) of every Ray worker
    process while the block runs, per role its title shows (the task or actor it runs)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peaks: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def kind(title: str) -> str:
        """The role of a Ray process by its title (``ray::MapWorker(...)``, ``ray::scene_maps`` ...).

        >>> WorkerMemory.kind("ray::MapWorker(MapBatches(TileEncoder)) x"), WorkerMemory.kind("ray::scene_maps")
        ('encoder actor', 'scene_maps')
        """
        for marker, kind in (("TileEncoder", "encoder actor"), ("cut_scene", "cut_scene task"),
                             ("score_scenes", "score_scenes task"), ("plan_scene", "plan_scene task")):
            if marker in title:
                return kind
        return title[len("ray::"):].split("(")[0].split(" ")[0]

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    if not title.startswith("ray::") or title.startswith("ray::IDLE"):
                        continue
                    with open(f"/proc/{pid}/status") as f:
                        fields = dict(line.split(":", 1) for line in f if ":" in line)
                    # the object store's shared pages a worker wrote (every tile it cut) are Ray's, not its own
                    rss = 1024 * (int(fields["VmRSS"].split()[0]) - int(fields["RssShmem"].split()[0]))
                except (OSError, KeyError):
                    continue  # ended meanwhile
                key = (int(pid), self.kind(title))
                self.peaks[key] = max(self.peaks.get(key, 0), rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def by_kind(self) -> dict[str, float]:
        """``{kind: the largest peak, MiB}``."""
        peaks: dict[str, float] = defaultdict(float)
        for (_, kind), rss in self.peaks.items():
            peaks[kind] = max(peaks[kind], rss / 2**20)
        return dict(peaks)


ROLES = ("plan_scene task", "cut_scene task", "encoder actor", "score_scenes task", "scene_maps")


def print_memory(memory: WorkerMemory) -> None:
    """The peak of each of our roles, and the largest of Ray's own processes (its statistics actors...)."""
    peaks = memory.by_kind()
    for role in ROLES:
        if role in peaks:
            print(f"    peak memory per worker, {role}: {peaks[role]:.0f} MiB")
    others = {kind: mib for kind, mib in peaks.items() if kind not in ROLES}
    if others:
        print(f"    peak memory of Ray's own processes: at most {max(others.values()):.0f} MiB")


def index_on_cluster(images: list[str], archive: str, settings: ArchiveSettings, batch_size: int, nodes: int,
                     cpus: int) -> None:
    """Index ``images`` into a new ``archive`` on a cluster of ``nodes`` worker nodes; print the tiles/s."""
    shutil.rmtree(archive, ignore_errors=True)
    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **loopback})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus, **loopback)
        ray.init(address=cluster.address, log_to_driver=False, _node_ip_address="127.0.0.1")
        with ray_session(), WorkerMemory() as memory:
            started = time.perf_counter()
            run = index_archive(images, archive, settings, batch_size)
            seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    tiles = sum(scene["tiles"] for scene in run.scenes)
    print(f"index, {nodes} worker node(s) x {cpus} CPUs: {len(run.scenes)} scenes, {tiles} tiles in {seconds:.1f}s: "
          f"{tiles / seconds:.1f} tiles/s ({len(run.errors)} errors)")
    print_memory(memory)


def cpu_costs(image: str, settings: ArchiveSettings, encoder) -> dict[str, float]:
    """Seconds per tile of decoding and cutting, and of encoding on the encoder's device, on one scene."""
    started = time.perf_counter()
    raster = read_raster(image)
    tiles = settings.spec().first_stage_tiles(*raster.pixels.shape[:2])
    cut = cut_tiles(raster.pixels, tiles, settings.tile_size)
    cut_cost = (time.perf_counter() - started) / len(tiles)
    started = time.perf_counter()
    encoder.image_encoder(cut)
    return {"cut": cut_cost, "encode": (time.perf_counter() - started) / len(tiles)}


def search_costs(archive: str, settings: ArchiveSettings, encoder, out_dir: str) -> dict[str, float]:
    """Seconds per tile of scoring (every scene, in this process) and per pixel of one scene's maps (the
    largest scene's, in this process): the search's work without Ray's start-up."""
    headers = {path: read_header(path, settings.vectors_key) for path in scene_files(archive)}
    started = time.perf_counter()
    score_scenes({"file": np.array(list(headers))}, [query_vector(encoder, QUERY)], settings, False)
    score = (time.perf_counter() - started) / sum(h["tiles"] for h in headers.values())
    pixels = {path: h["height"] * h["width"] for path, h in headers.items()}
    largest = max(pixels, key=pixels.get)
    started = time.perf_counter()
    scene_maps(largest, [(0, QUERY)], [QUERY], out_dir, settings)
    return {"score": score, "map_per_px": (time.perf_counter() - started) / pixels[largest]}


def paper_estimate(costs: dict[str, float], gpu_tiles_per_s: float, cpus_per_node: int) -> None:
    """The wall time of indexing 10,000 scenes of 10000 x 10000 px and of one search with --top 5."""
    tiles = BIG_SCENES * BIG_TILES
    print(f"on paper: {BIG_SCENES} scenes of {BIG_SIDE} x {BIG_SIDE} px = {tiles / 1e6:.1f} M tiles (v1); assumed "
          f"{gpu_tiles_per_s:.0f} tiles/s per GPU, {cpus_per_node} CPU cores per node decoding and cutting at the "
          f"measured {costs['cut'] * 1e3:.2f} ms/tile, scoring at {costs['score'] * 1e6:.1f} us/tile, "
          f"one map at {costs['map_per_px'] * 1e9:.1f} ns/px")
    one_map = costs["map_per_px"] * BIG_SIDE * BIG_SIDE
    for nodes in (1, 4, 16, 64):
        index_s = max(tiles / (nodes * gpu_tiles_per_s), tiles * costs["cut"] / (nodes * cpus_per_node))
        score_s = tiles * costs["score"] / (nodes * cpus_per_node)
        maps_s = one_map * max(1.0, 5 / (nodes * cpus_per_node))
        print(f"    {nodes:3d} GPU node(s): index {index_s / 3600:.1f} h; search: scoring {score_s:.0f}s, "
              f"5 maps {maps_s:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--min_side", type=int, default=2000)
    parser.add_argument("--max_side", type=int, default=5000)
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 2],
                        help="worker node counts to index with (none: search the archive of the last run)")
    parser.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)), help="CPUs of each worker node")
    parser.add_argument("--yaml", default="demo", help="encoder yaml or preset name")
    parser.add_argument("--gpu", action="store_true", help="index only, on a local Ray with this machine's GPUs")
    parser.add_argument("--gpu_tiles_per_s", type=float, default=2000.0, help="the GPU rate assumed on paper")
    parser.add_argument("--gpu_node_cpus", type=int, default=16, help="CPU cores of a GPU node assumed on paper")
    parser.add_argument("--work", default=str(REPO / "cache/bench_archive"))
    args = parser.parse_args()
    logging.getLogger("selo").addHandler(logging.NullHandler())
    images = make_scenes(os.path.join(args.work, "scenes"), args.scenes, args.min_side, args.max_side)
    encoder = load_encoder(args.yaml, device="cpu")
    spec = get_pipeline("v1")
    settings = ArchiveSettings(os.path.abspath(find_yaml(args.yaml)), vectors_key(encoder), encoder.tile_size,
                               spec.name, spec.steps)
    archive = os.path.join(args.work, "archive")
    print(f"{len(images)} scenes of {args.min_side}-{args.max_side} px, v1, {encoder.name} encoder, "
          f"{len(os.sched_getaffinity(0))} CPU cores on this machine")
    if args.gpu:
        shutil.rmtree(archive, ignore_errors=True)
        with ray_session(None):
            gpus = ray.cluster_resources().get("GPU", 0)
            started = time.perf_counter()
            run = index_archive(images, archive, settings, encoder.batch_size)
            seconds = time.perf_counter() - started
        tiles = sum(scene["tiles"] for scene in run.scenes)
        actors = "encoder actors with num_gpus=1" if gpus else "no GPU in this Ray: CPU encoder actors"
        print(f"index on a local Ray with {gpus:.0f} GPU(s) ({actors}): {tiles} tiles in {seconds:.1f}s: "
              f"{tiles / seconds:.1f} tiles/s, the whole pipeline ({len(run.errors)} errors)")
        return
    for nodes in args.nodes:
        index_on_cluster(images, archive, settings, encoder.batch_size, nodes, args.cpus)
    out = os.path.join(args.work, "search")
    shutil.rmtree(out, ignore_errors=True)
    with ray_session(None), WorkerMemory() as memory:
        run = search_archive(archive, [QUERY], 5, out)
    print(f"search, local Ray ({args.cpus} CPUs), 1 query, --top 5: scoring {run.seconds['scoring']:.1f}s "
          f"(every tile of {len(images)} scenes), maps {run.seconds['maps']:.1f}s ({len(run.results)} maps)")
    print_memory(memory)
    loop = os.path.join(args.work, "localise_loop")
    shutil.rmtree(loop, ignore_errors=True)
    started = time.perf_counter()
    localised = localise_scenes(images, [QUERY], encoder, SceneConfig(out_dir=loop, pipeline=spec))
    loop_s = time.perf_counter() - started
    print(f"selo-localise loop, 1 query on every scene (tiles encoded as it goes): {loop_s:.1f}s "
          f"({len(localised.results)} maps, {loop_s / len(images):.2f}s per scene)")
    costs = {**cpu_costs(images[0], settings, encoder), **search_costs(archive, settings, encoder, out)}
    print(f"measured on one scene: decode and cut {costs['cut'] * 1e3:.2f} ms/tile, encode on the CPU "
          f"{costs['encode'] * 1e3:.2f} ms/tile ({1 / costs['encode']:.0f} tiles/s)")
    paper_estimate(costs, args.gpu_tiles_per_s, args.gpu_node_cpus)


if __name__ == "__main__":
    main()
