"""The explorer's job queue through its HTTP API: queries whose tiles are encoded are answered beside a running
encode; jobs wait first in, first out per client with the clients in turn, each told its position; a job is
cancelled by the API (queued: at once; encoding: within a batch); one request's tiles and body are bounded."""
import threading
import time

import cv2
import pytest

from predict.core.pipelines import get_pipeline
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder

fastapi_testclient = pytest.importorskip("fastapi.testclient")
from predict.explorer import Explorer, ExplorerConfig  # noqa: E402
from predict.web.app import create_app  # noqa: E402

from helpers import DEMO_YAML as YAML  # noqa: E402

QUERY = "a green football field surrounded by a red track"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for name, seed, height, width in [("field.png", 5, 700, 900), ("lake.jpg", 6, 800, 800), ("port.png", 9, 600, 700)]:
        cv2.imwrite(str(folder / name), cv2.cvtColor(generate_scene(seed, height, width).rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def gated(scenes, tmp_path):
    """(client factory, gate): an explorer whose encoder waits for ``gate`` before each batch once ``hold`` is
    set; field.png is encoded before the hold. The gate is opened at the end whatever happens."""
    encoder = load_encoder(YAML, device="cpu")
    hold, gate = threading.Event(), threading.Event()
    encode_batch = encoder.encode_batch
    encoder.encode_batch = lambda tiles: (hold.is_set() and gate.wait(60), encode_batch(tiles))[1]
    explorer = Explorer(encoder, ExplorerConfig(images_dir=str(scenes), cache_dir=str(tmp_path / "vectors"),
                                                outputs_dir=str(tmp_path / "outputs"), preview_side=256))
    app = create_app(explorer)

    def client(name):
        return fastapi_testclient.TestClient(app, headers={"X-Selo-Client": name})

    assert client("setup").post("/api/encode", json={"image": "field.png"}).status_code in (200, 202)
    wait_for(lambda: client("setup").post("/api/encode", json={"image": "field.png"}).status_code == 200)
    hold.set()
    yield client, gate
    gate.set()


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cached_query_is_answered_while_an_encode_runs(gated):
    client, gate = gated
    encoding = client("a").post("/api/localise", json={"image": "lake.jpg", "query": QUERY})
    assert encoding.status_code == 202 and encoding.json()["status"] in ("queued", "encoding")
    started = time.perf_counter()
    cached = client("b").post("/api/localise", json={"image": "field.png", "query": "a dark green lake"})
    assert cached.status_code == 200 and cached.json()["tiles_encoded"] == 0
    assert time.perf_counter() - started < 10  # the encode is held for up to 60 s
    job = client("a").get(f"/api/jobs/{encoding.json()['job']}").json()
    assert job["status"] == "encoding" and job["position"] == 0 and job["done"] < job["total"]
    gate.set()
    wait_for(lambda: client("a").get(f"/api/jobs/{encoding.json()['job']}").status_code == 200)
    done = client("a").get(f"/api/jobs/{encoding.json()['job']}").json()
    assert done["status"] == "done" and done["query"] == QUERY and done["tiles_encoded"] == encoding.json()["total"]


def test_queue_is_fifo_per_client_and_clients_take_turns(gated):
    client, gate = gated
    ask = lambda who, image, query: client(who).post("/api/localise", json={"image": image, "query": query}).json()  # noqa: E731
    running = ask("a", "lake.jpg", QUERY)
    wait_for(lambda: client("a").get(f"/api/jobs/{running['job']}").json()["status"] == "encoding")
    a2, a3 = ask("a", "lake.jpg", "a dark green lake"), ask("a", "port.png", QUERY)
    b1 = ask("b", "port.png", "some white ships on the dark sea")
    positions = {name: client("a").get(f"/api/jobs/{job['job']}").json()["position"]
                 for name, job in [("a1", running), ("a2", a2), ("a3", a3), ("b1", b1)]}
    assert positions == {"a1": 0, "a2": 1, "b1": 2, "a3": 3}  # b's first job before a's third
    assert "position 2" in client("b").get(f"/api/jobs/{b1['job']}").json()["message"]
    same = ask("c", "port.png", "some white ships on the dark sea")  # the same request: the same job
    assert same["job"] == b1["job"]
    gate.set()
    for job in (running, a2, a3, b1):
        wait_for(lambda job=job: client("a").get(f"/api/jobs/{job['job']}").status_code == 200)


def test_cancel_a_queued_job_at_once_and_a_running_one_within_a_batch(gated):
    client, gate = gated
    running = client("a").post("/api/encode", json={"image": "lake.jpg"}).json()
    queued = client("a").post("/api/encode", json={"image": "port.png"}).json()
    wait_for(lambda: client("a").get(f"/api/jobs/{running['job']}").json()["status"] == "encoding")
    cancelled = client("a").delete(f"/api/jobs/{queued['job']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client("a").get(f"/api/jobs/{queued['job']}").json()["status"] == "cancelled"
    assert client("a").delete(f"/api/jobs/{running['job']}").status_code == 200
    gate.set()
    wait_for(lambda: client("a").get(f"/api/jobs/{running['job']}").json()["status"] == "cancelled")
    job = client("a").get(f"/api/jobs/{running['job']}").json()
    assert job["done"] < job["total"]  # stopped after its first batch
    again = client("a").post("/api/encode", json={"image": "lake.jpg"}).json()  # asked again: a new job
    assert again.get("job") != running["job"]
    assert client("a").delete("/api/jobs/0123456789abcdef").status_code == 404


def test_a_job_another_client_waits_for_is_not_cancelled(gated):
    client, gate = gated
    mine = client("a").post("/api/encode", json={"image": "lake.jpg"}).json()
    theirs = client("b").post("/api/encode", json={"image": "lake.jpg"}).json()
    assert theirs["job"] == mine["job"]
    assert client("a").delete(f"/api/jobs/{mine['job']}").json()["status"] in ("queued", "encoding")
    gate.set()
    wait_for(lambda: client("b").get(f"/api/jobs/{mine['job']}").status_code == 200)
    assert client("b").get(f"/api/jobs/{mine['job']}").json()["status"] == "done"


def test_a_request_for_too_many_tiles_is_refused_with_the_count(scenes, tmp_path):
    explorer = Explorer(load_encoder(YAML, device="cpu"), ExplorerConfig(images_dir=str(scenes), max_tiles=50,
                                                                       outputs_dir=str(tmp_path),
                                                                       cache_dir=str(tmp_path / "vectors")))
    client = fastapi_testclient.TestClient(create_app(explorer))
    refused = client.post("/api/localise", json={"image": "lake.jpg", "query": QUERY, "steps": "64"})
    assert refused.status_code == 422
    assert "lake.jpg" in refused.json()["detail"] and "more than the 50" in refused.json()["detail"]
    accepted = client.post("/api/encode", json={"image": "lake.jpg", "steps": "512"})  # no vector kept yet: queued
    tiles = get_pipeline("v1", "512").first_stage_tiles(800, 800)  # lake.jpg is 800 x 800
    assert accepted.status_code == 202 and accepted.json()["total"] == len(tiles) <= 50


def test_request_bodies_are_bounded(scenes, tmp_path):
    explorer = Explorer(load_encoder(YAML, device="cpu"), ExplorerConfig(images_dir=str(scenes),
                                                                       outputs_dir=str(tmp_path)))
    client = fastapi_testclient.TestClient(create_app(explorer))
    for size in (20_000, 10_000_000):
        response = client.post("/api/localise", json={"image": "lake.jpg", "query": "x" * size})
        assert response.status_code == 413 and "request body over" in response.json()["detail"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield b'{"image": "lake.jpg", "query": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'
    response = client.post("/api/localise", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
