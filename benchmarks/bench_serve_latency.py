"""Explorer latency under load: seconds from a query sent to the explorer's HTTP API to its map PNG received,
with 1, 4 and 16 concurrent clients, on a 5000 x 5000 scene whose tile vectors are cached; and the
full-resolution ``localise()`` of the same queries (same encoder, vectors in memory) as the baseline.

    .venv/bin/python benchmarks/bench_serve_latency.py [--size 5000] [--queries 10] [--clients 1 4 16] [--pipeline v1]

The server is the real one (uvicorn on 127.0.0.1, a free port) with the demo encoder on the CPU. Each client
sends its own ``--queries`` queries one after the other (``POST /api/localise``, then ``GET map_url``); a
202 answer ("busy" / "queued") is counted and the same request is sent again after 0.1 s, as the page does,
and the latency runs from the first send to the PNG received. Every query of the whole run is a different
text (two captions of the demo grammar joined by "near"), so no answer is a stored result of an earlier one.
"""
from __future__ import annotations

import argparse
import itertools
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import uvicorn

from predict import localise
from predict.demo.synthetic import CAPTIONS, generate_scene
from predict.encoders.registry import load_encoder
from predict.explorer import Explorer, ExplorerConfig
from predict.localisation.vectors import TileVectorStore
from predict.web.app import create_app

RETRY_SECONDS = 0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def distinct_queries() -> itertools.chain:
    """Endless distinct queries made of the demo grammar's words: every ordered pair of two captions."""
    phrases = [p.replace("{n}", "four").replace("{roofs}", "red") for ps in CAPTIONS.values() for p in ps]
    return (f"{a} near {b}" for a, b in itertools.permutations(phrases, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5000, help="side of the square scene, pixels")
    parser.add_argument("--queries", type=int, default=10, help="queries sent by each client")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients, per row")
    parser.add_argument("--pipeline", default="v1", choices=("v1", "v2"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="selo_bench_serve_") as folder:
        measure(args, Path(folder))


def client_run(base_url: str, body: dict, queries: list[str], latencies: list, waits: list, errors: list) -> None:
    """One client: its queries in turn, each retried while the server answers 202."""
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for query in queries:
            start = time.perf_counter()
            while (answer := client.post("/api/localise", json={**body, "query": query})).status_code == 202:
                waits.append(1)
                time.sleep(RETRY_SECONDS)
            if answer.status_code != 200:
                errors.append(f"{answer.status_code}: {answer.text[:200]}")
                continue
            png = client.get(answer.json()["map_url"])
            if png.status_code != 200:
                errors.append(f"map {png.status_code}")
                continue
            latencies.append(time.perf_counter() - start)


def load_row(base_url: str, body: dict, clients: int, queries) -> dict:
    """``clients`` clients at once, each with ``len(queries[i])`` queries: the latency figures of the row."""
    latencies, waits, errors = [], [], []
    threads = [threading.Thread(target=client_run, args=(base_url, body, queries[i], latencies, waits, errors))
               for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "answers": len(latencies), "median": statistics.median(latencies),
            "p95": float(np.percentile(latencies, 95)), "max": max(latencies), "202": len(waits),
            "errors": len(errors), "per_s": len(latencies) / wall, "first_error": errors[0] if errors else ""}


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Encode the scene in ``folder`` once, then time the loads through the server and ``localise()``."""
    scene = generate_scene(1, args.size, args.size)
    cv2.imwrite(str(folder / "scene.jpg"), cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    encoder = load_encoder("demo", device="cpu")
    explorer = Explorer(encoder, ExplorerConfig(images_dir=str(folder)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{port}"
    body = {"image": "scene.jpg", "pipeline": args.pipeline}
    with httpx.Client(base_url=base_url, timeout=600) as client:
        start = time.perf_counter()
        while (answer := client.post("/api/encode", json=body)).status_code == 202:
            time.sleep(0.2)
        print(f"{args.size} x {args.size} scene, {args.pipeline}: {answer.json()['tiles_encoded']} tiles encoded "
              f"once in {time.perf_counter() - start:.1f} s (demo encoder, CPU)")
    texts = distinct_queries()
    rows = []
    try:
        for clients in args.clients:
            queries = [[next(texts) for _ in range(args.queries)] for _ in range(clients)]
            rows.append(load_row(base_url, body, clients, queries))
    finally:
        server.should_exit = True

    baseline_queries = [next(texts) for _ in range(args.queries)]
    store = TileVectorStore(encoder)  # the baseline's vectors in memory, encoded before timing
    localise(folder / "scene.jpg", baseline_queries[0], encoder, args.pipeline, vectors=store)
    full = []
    for query in baseline_queries:
        start = time.perf_counter()
        localise(folder / "scene.jpg", query, encoder, args.pipeline, vectors=store)
        full.append(time.perf_counter() - start)

    print(f"{'clients':>7s} {'answers':>7s} {'median s':>9s} {'p95 s':>7s} {'max s':>7s} {'202s':>6s} "
          f"{'errors':>6s} {'answers/s':>9s}")
    for row in rows:
        print(f"{row['clients']:7d} {row['answers']:7d} {row['median']:9.3f} {row['p95']:7.3f} {row['max']:7.3f} "
              f"{row['202']:6d} {row['errors']:6d} {row['per_s']:9.2f}")
        if row["first_error"]:
            print(f"        first error: {row['first_error']}")
    print(f"localise(), full resolution, one at a time: median {statistics.median(full):.3f} s, max {max(full):.3f} s")


if __name__ == "__main__":
    main()
