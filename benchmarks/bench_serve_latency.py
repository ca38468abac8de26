"""Explorer latency: seconds from a query sent to the explorer's HTTP API to its map PNG received, on a
5000 x 5000 scene whose tile vectors are cached, against the full-resolution ``localise()`` of the same query
(same encoder, vectors in memory) in the same run.

    .venv/bin/python benchmarks/bench_serve_latency.py [--size 5000] [--queries 10] [--pipeline v1]

The server is the real one (uvicorn on 127.0.0.1, a free port) with the demo encoder on the CPU; the client
sends ``POST /api/localise`` then ``GET map_url``. The page's map is the preview (longer side 1024 px);
``localise()`` makes the exact full-resolution map.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import uvicorn

from predict import REPO_ROOT, localise
from predict.demo.synthetic import CAPTIONS, generate_scene
from predict.encoders.registry import load_encoder
from predict.run.explorer import Explorer, ExplorerConfig
from predict.run.vectors import TileVectorStore
from predict.web.app import create_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5000, help="side of the square scene, pixels")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--pipeline", default="v1", choices=("v1", "v2"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="selo_bench_serve_") as folder:
        measure(args, Path(folder))


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Encode the scene in ``folder`` once, then time the queries through the server and ``localise()``."""
    queries = [phrase.replace("{n}", "four") for phrases in CAPTIONS.values() for phrase in phrases[:2]][:args.queries]

    scene = generate_scene(1, args.size, args.size)
    cv2.imwrite(str(folder / "scene.jpg"), cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    encoder = load_encoder(REPO_ROOT / "predict/options/demo/demo_encoder.yaml", device="cpu")
    explorer = Explorer(encoder, ExplorerConfig(images_dir=str(folder)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        start = time.perf_counter()
        body = {"image": "scene.jpg", "pipeline": args.pipeline}
        while (answer := client.post("/api/encode", json=body)).status_code == 202:
            time.sleep(0.2)
        print(f"{args.size} x {args.size} scene, {args.pipeline}: {answer.json()['tiles_encoded']} tiles encoded "
              f"once in {time.perf_counter() - start:.1f} s (demo encoder, CPU)")
        served, server_side, encoded = [], [], 0
        for query in queries:
            start = time.perf_counter()
            answer = client.post("/api/localise", json={**body, "query": query})
            assert answer.status_code == 200, answer.text
            png = client.get(answer.json()["map_url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            served.append(time.perf_counter() - start)
            server_side.append(answer.json()["seconds"])
            encoded += answer.json()["tiles_encoded"]
    server.should_exit = True

    store = TileVectorStore(encoder)  # the baseline's vectors in memory, encoded before timing
    localise(folder / "scene.jpg", queries[0], encoder, args.pipeline, vectors=store)
    full = []
    for query in queries:
        start = time.perf_counter()
        localise(folder / "scene.jpg", query, encoder, args.pipeline, vectors=store)
        full.append(time.perf_counter() - start)

    print(f"{len(queries)} new queries, tiles encoded by them: {encoded}")
    print(f"{'':42s} {'median s':>9s} {'max s':>7s}")
    print(f"{'explorer: request -> PNG received':42s} {statistics.median(served):9.3f} {max(served):7.3f}")
    print(f"{'  of which server work (seconds field)':42s} {statistics.median(server_side):9.3f} {max(server_side):7.3f}")
    print(f"{'localise(), full resolution (baseline)':42s} {statistics.median(full):9.3f} {max(full):7.3f}")
    print(f"explorer / baseline (medians): {statistics.median(served) / statistics.median(full):.3f}")


if __name__ == "__main__":
    main()
