"""The explorer's results filed under the content they were computed from, and every file it keeps used or
served only verified.

A job whose image is replaced while it waits in the queue runs on the new pixels: its map is filed under the
new content's id (and answered to its clients, the image as it is now), never under the id it was asked
with; the old content, restored or copied, even after a restart, gets its own map. A record naming other
content than its id's is never served. A result record, map, thumbnail or download changed since it was
written, or without its record, is logged in one line naming it and the reason and made again, never
served as it is. Each case failed on the code before (a 640 x 900 map for a 600 x 800 image, a 409 for its
download, a damaged file served)."""
import dataclasses
import logging
import os
import shutil
import threading

import cv2
import pytest

from predict import load_encoder
from predict.demo.synthetic import generate_scene
from predict.explorer import Explorer, ExplorerConfig, Job, Result
from predict.explorer.jobs import FairQueue
from predict.provenance import record_path

from helpers import wait_for

fastapi_testclient = pytest.importorskip("fastapi.testclient")
from predict.web.app import create_app, result_answer  # noqa: E402

QUERY = "a green football field surrounded by a red track"
STEPS = "256_512"
OLD, NEW = (5, 600, 800), (6, 640, 900)  # seed, height, width


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("demo", device="cpu")


@pytest.fixture
def held(monkeypatch):
    """An event that the explorers' encoder thread waits for after taking a job from the queue, before the job
    reads its image: cleared, a job asked stays queued (set again at the end whatever happens)."""
    gate = threading.Event()
    gate.set()
    take = FairQueue.take

    def held_take(queue):
        job = take(queue)
        gate.wait(60)
        return job

    monkeypatch.setattr(FairQueue, "take", held_take)
    yield gate
    gate.set()


def write_scene(path, scene):
    seed, height, width = scene
    cv2.imwrite(str(path), cv2.cvtColor(generate_scene(seed, height, width).rgb, cv2.COLOR_RGB2BGR))


def explorer_of(folder, state, encoder):
    return Explorer(encoder, ExplorerConfig(images_dir=str(folder), cache_dir=str(state / "vectors"),
                                            outputs_dir=str(state / "outputs"), preview_side=128))


def answer(explorer, name):
    """The explorer's result for image ``name`` as it is now, asked again until its job is done."""
    return wait_for(lambda: not isinstance(asked := explorer.localise(name, QUERY, steps=STEPS), Job) and asked)


def fresh_answer(tmp_path, scene, encoder):
    """(explorer, result): the result for ``scene`` of a fresh explorer in folders of its own."""
    folder = tmp_path / f"fresh{scene[0]}"
    folder.mkdir()
    write_scene(folder / "x.png", scene)
    explorer = explorer_of(folder, folder / "state", encoder)
    return explorer, answer(explorer, "x.png")


def map_bytes(explorer, result):
    with open(explorer.output_path(f"{result.id}.png"), "rb") as f:
        return f.read()


@pytest.fixture
def scene(tmp_path, encoder, held):
    """(folder, explorer, gate): scenes/a.png (600 x 800) served, no vector encoded yet."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene(folder / "a.png", OLD)
    return folder, explorer_of(folder, tmp_path / "state", encoder), held


def test_a_job_whose_image_was_replaced_while_queued_files_its_map_under_the_new_content(scene, tmp_path, encoder):
    folder, explorer, gate = scene
    gate.clear()
    job = explorer.localise("a.png", QUERY, steps=STEPS)
    assert isinstance(job, Job) and job.state == "queued"
    write_scene(folder / "a.png", NEW)  # replaced while the job waits: it will read the 640 x 900 pixels
    gate.set()
    wait_for(lambda: job.state not in ("queued", "encoding"))
    new, (fresh, fresh_new) = job.result, fresh_answer(tmp_path, NEW, encoder)
    assert job.state == "done" and (new.height, new.width) == (640, 900)
    assert new.id == fresh_new.id != job.result_id  # the id of the pixels it ran on, not the one asked with
    assert map_bytes(explorer, new) == map_bytes(fresh, fresh_new) and new.peaks == fresh_new.peaks

    write_scene(folder / "a.png", OLD)  # restored: its own map, not the 640 x 900 one
    fresh, fresh_old = fresh_answer(tmp_path, OLD, encoder)
    for server in (explorer, explorer_of(folder, tmp_path / "state", encoder)):  # and after a restart
        old = answer(server, "a.png")
        assert (old.height, old.width) == (600, 800) and old.id == fresh_old.id == job.result_id
        assert map_bytes(server, old) == map_bytes(fresh, fresh_old) and old.peaks == fresh_old.peaks
        assert server.download(old.id, "probmap")[0]  # not a 409
    shutil.copy(folder / "a.png", folder / "copy.png")  # a copy: the same result, under its own name
    copied = answer(explorer, "copy.png")
    assert copied.id == fresh_old.id and copied.image == "copy.png"
    assert explorer.download(copied.id, "peaks")[1].startswith("copy_")


def test_a_record_of_other_content_than_its_id_names_is_never_served(scene, tmp_path, encoder, caplog):
    folder, explorer, _ = scene
    old = answer(explorer, "a.png")
    write_scene(folder / "a.png", NEW)
    new = answer(explorer, "a.png")
    outputs = tmp_path / "state" / "outputs"
    dataclasses.replace(new, id=old.id).save(str(outputs))  # whole files, made by the right id, wrong content
    write_scene(folder / "a.png", OLD)
    with caplog.at_level(logging.WARNING, logger="predict.explorer"):
        again = answer(explorer_of(folder, tmp_path / "state", encoder), "a.png")
    assert (again.height, again.width) == (600, 800) and again.id == old.id
    assert any(f"{old.id}.json" in line and "computed again" in line for line in caplog.messages), caplog.messages


def flip_first_byte(path):
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])


def remove_record(path):
    os.unlink(record_path(path))


DAMAGES = {"flipped": flip_first_byte, "without its record": remove_record}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("kind", [".json", ".npz", ".png", "_probmap.tif", "_peaks.geojson", "thumbnail"])
def test_a_stored_file_changed_or_without_record_is_made_again_never_served(scene, tmp_path, encoder, caplog,
                                                                           kind, damage):
    folder, explorer, _ = scene
    client = fastapi_testclient.TestClient(create_app(explorer))
    result = result_answer(answer(explorer, "a.png"))  # the JSON answer, with the URLs the web adds
    urls = {".png": result["map_url"], "_probmap.tif": result["downloads"]["probmap"]["url"],
            "_peaks.geojson": result["downloads"]["peaks"]["url"], "thumbnail": "/api/image?name=a.png&side=64"}
    served = {name: client.get(url).content for name, url in urls.items()}
    outputs = tmp_path / "state" / "outputs"
    path = next(outputs.glob("*_64.jpg")) if kind == "thumbnail" else outputs / (result["result"] + kind)
    DAMAGES[damage](path)
    restarted = fastapi_testclient.TestClient(create_app(explorer_of(folder, tmp_path / "state", encoder)))
    if kind == ".png":
        assert restarted.get(result["map_url"]).status_code == 404  # never served as it is
    with caplog.at_level(logging.WARNING, logger="predict.explorer"):
        again = restarted.post("/api/localise", json={"image": "a.png", "query": QUERY, "steps": STEPS}).json()
        assert again["result"] == result["result"] and again["peaks"] == result["peaks"]
        assert {name: restarted.get(url).content for name, url in urls.items()} == served
    assert any(str(path) in line and ("bytes are not those" in line if damage == "flipped" else "no record" in line)
               for line in caplog.messages), caplog.messages
    assert (again["tiles_encoded"] == 0) and (again["seconds"] > 0) == (kind in (".json", ".npz", ".png"))


def test_only_verified_maps_are_served_from_the_outputs(scene):
    folder, explorer, _ = scene
    client = fastapi_testclient.TestClient(create_app(explorer))
    result = answer(explorer, "a.png")
    assert client.get(f"/outputs/{result.id}.png").status_code == 200
    for name in (f"{result.id}.json", f"{result.id}.npz", f".{result.id}.png.selo", f"{result.id}_probmap.tif"):
        assert client.get(f"/outputs/{name}").status_code in (400, 404), name  # records and the rest: not here
    assert isinstance(Result.load(explorer.config.outputs_dir, result.id), Result)
