"""The explorer trusted by construction and hardened: results and thumbnails keyed by content (an image
rewritten with the same size and mtime gets a new map and thumbnail; a download of a result whose image
changed is refused), typed requests (422, never 500), names with ``..`` inside served, honest confidence
(scene score, unknown words), strict headers and Origin checks, the OpenAPI schema served locally, and the
command line refusing a missing folder and a zero preview side. Each case named in issues 20 and 24 failed
on the code before (a 500, a 400 for a good name, the old map, a map of the new image under the old id)."""
import os

import cv2
import numpy as np
import pytest
import tifffile

from predict.core.pipelines import PIPELINES
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder

fastapi_testclient = pytest.importorskip("fastapi.testclient")
from predict.cli import serve  # noqa: E402
from predict.explorer import Explorer, ExplorerConfig  # noqa: E402
from predict.web.app import create_app  # noqa: E402

from helpers import DEMO_YAML as YAML  # noqa: E402

QUERY = "a green football field surrounded by a red track"


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(YAML, device="cpu")


@pytest.fixture
def scene(tmp_path, encoder):
    """(folder, client): scenes/scene.tif (seed 5, 600 x 800) served with state under ``tmp_path/state``."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene(folder / "scene.tif", 5)
    return folder, client_of(folder, encoder, tmp_path / "state")


def write_scene(path, seed, height=600, width=800):
    """An uncompressed TIFF: its size depends on the image's size only, so two scenes have the same bytes count."""
    tifffile.imwrite(path, generate_scene(seed, height, width).rgb, photometric="rgb")


def client_of(folder, encoder, state, **config):
    explorer = Explorer(encoder, ExplorerConfig(images_dir=str(folder), cache_dir=str(state / "vectors"),
                                                outputs_dir=str(state / "outputs"), preview_side=256, **config))
    return fastapi_testclient.TestClient(create_app(explorer))


def answered(client, url, body):
    """POST until the answer is not 202; the last response."""
    for _ in range(600):
        response = client.post(url, json=body)
        if response.status_code != 202:
            return response
        __import__("time").sleep(0.05)
    raise AssertionError("no answer")


def rewrite_keeping_size_and_times(path, seed):
    """Replace the image's bytes by another scene's, then restore the old mtime (as ``touch -r`` would)."""
    before = os.stat(path)
    write_scene(path, seed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_w2_w3_a_rewritten_image_gets_its_own_map_and_thumbnail(scene, tmp_path, encoder):
    folder, client = scene
    old = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    old_thumb = client.get("/api/image", params={"name": "scene.tif", "side": 64}).content
    rewrite_keeping_size_and_times(folder / "scene.tif", 8)
    new = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    # every tile encoded again: the content changed, not the size or the times
    assert new["result"] != old["result"] and new["tiles_encoded"] == len(PIPELINES["v1"].first_stage_tiles(600, 800))
    fresh = answered(client_of(folder, encoder, tmp_path / "fresh"), "/api/localise",
                     {"image": "scene.tif", "query": QUERY}).json()
    assert fresh["result"] == new["result"] and fresh["peaks"] == new["peaks"]
    assert client.get(new["map_url"]).content == client.get(fresh["map_url"]).content
    thumb = client.get("/api/image", params={"name": "scene.tif", "side": 64}).content
    assert thumb != old_thumb
    shown = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR).astype(int)
    off = [np.abs(shown - cv2.resize(generate_scene(seed, 600, 800).rgb[:, :, ::-1], (64, 48),
                                     interpolation=cv2.INTER_AREA)).mean() for seed in (8, 5)]
    assert off[0] < 5 < 3 * off[0] < off[1]  # the new scene's (JPEG-close), far from the old one's


def test_w4_download_of_a_result_whose_image_changed_is_refused(scene):
    folder, client = scene
    old = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    assert client.get(old["downloads"]["peaks"]["url"]).status_code == 200  # written once, then kept
    rewrite_keeping_size_and_times(folder / "scene.tif", 8)
    for kind in ("probmap", "peaks"):  # neither the one written before nor a new one
        refused = client.get(old["downloads"][kind]["url"])
        assert refused.status_code == 409 and "scene.tif" in refused.json()["detail"]
        assert "run the query again" in refused.json()["detail"]
    (folder / "scene.tif").unlink()
    assert client.get(old["downloads"]["probmap"]["url"]).status_code == 409


def test_results_stay_downloadable_after_many_later_queries_and_a_restart(scene, tmp_path, encoder):
    folder, client = scene
    first = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    for k in range(66):  # more than the 64 results kept in memory
        words = ["two", "three", "four", "five", "six", "some", "many"]
        query = f"{words[k % 7]} tennis courts near {words[k // 7 % 7]} white ships"
        assert client.post("/api/localise", json={"image": "scene.tif", "query": query}).status_code == 200
    restarted = client_of(folder, encoder, tmp_path / "state")
    assert restarted.get(first["downloads"]["peaks"]["url"]).status_code == 200
    again = restarted.post("/api/localise", json={"image": "scene.tif", "query": QUERY}).json()
    assert again["result"] == first["result"] and again["tiles_encoded"] == 0


@pytest.mark.parametrize("change", [{"pipeline": ["v1"]}, {"pipeline": {"name": "v1"}}, {"steps": 256.7},
                                    {"steps": "256.7"}, {"steps": "२५६"}, {"steps": "256__512"}, {"steps": [256.0]},
                                    {"steps": [True]}, {"steps": {"a": 1}}, {"query": ["a", "b"]}, {"image": {"x": 1}},
                                    {"unexpected": 1}])
def test_malformed_fields_are_422_with_one_line_never_500(scene, change):
    _, client = scene
    response = client.post("/api/localise", json={"image": "scene.tif", "query": QUERY, **change})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and next(iter(change)) in detail


@pytest.mark.parametrize("pipeline, steps", [(["v1"], None), ({"name": "v1"}, None), ("v1", 256.7), ("v1", "२५६"),
                                             ("v1", "256__512"), ("v1", [256.0])])
def test_python_api_refuses_the_same_with_an_invalid_request(pipeline, steps):
    from predict.explorer import InvalidRequest

    with pytest.raises(InvalidRequest):  # not a TypeError from hashing a list
        Explorer.pipeline(pipeline, steps)


def test_names_with_dots_inside_are_listed_and_served(tmp_path, encoder):
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene(folder / "site..v2.tif", 5)
    write_scene(folder / "plain.tif", 6)
    client = client_of(folder, encoder, tmp_path / "state")
    listing = client.get("/api/images")
    assert listing.status_code == 200 and [i["name"] for i in listing.json()["images"]] == ["plain.tif", "site..v2.tif"]
    assert client.get("/api/image", params={"name": "site..v2.tif", "side": 64}).status_code == 200
    assert answered(client, "/api/localise", {"image": "site..v2.tif", "query": QUERY}).status_code == 200
    for bad in ("..", "../plain.tif", "x/../plain.tif"):
        assert client.post("/api/encode", json={"image": bad}).status_code == 400


def test_scene_score_with_each_answer_and_unknown_words_flagged_or_refused(scene, encoder):
    from predict.core.heatmap import scene_score
    from predict.io.raster import read_raster
    from predict.localisation.maps import score_tiles, tile_cells
    from predict.localisation.vectors import TileVectorStore

    folder, client = scene
    answer = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    raster = read_raster(folder / "scene.tif")
    tiles, scores = score_tiles(raster.loaded(), QUERY, encoder, PIPELINES["v1"], TileVectorStore(encoder))
    assert answer["scene_score"] == pytest.approx(scene_score(tile_cells(tiles, scores, 600, 800)), rel=1e-12)
    assert answer["unknown_words"] == []
    flagged = client.post("/api/localise", json={"image": "scene.tif", "query": "a zzzz football field"})
    assert flagged.status_code == 200 and flagged.json()["unknown_words"] == ["zzzz"]
    for query in ("zzzz qqqq", "🚀", "\u200b", "?!.,"):
        refused = client.post("/api/localise", json={"image": "scene.tif", "query": query})
        assert refused.status_code == 422 and "no word the demo encoder knows" in refused.json()["detail"], query
    assert "zzzz, qqqq" in client.post("/api/localise", json={"image": "scene.tif", "query": "zzzz qqqq"}).json()["detail"]


def test_strict_headers_origin_checked_and_schema_served_locally(scene):
    folder, client = scene
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    body = {"image": "scene.tif"}
    evil = client.post("/api/encode", json=body, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "evil.example" in evil.json()["detail"]
    assert "content-security-policy" in evil.headers
    cross = client.post("/api/encode", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert client.delete("/api/jobs/0123456789abcdef", headers={"Origin": "http://evil.example"}).status_code == 403
    own = client.post("/api/encode", json=body, headers={"Origin": "http://testserver"})
    assert own.status_code == 202 and own.json()["image"] == "scene.tif"  # accepted: queued (nothing encoded yet)
    schema = client.get("/api/openapi.json").json()
    assert {"/api/localise", "/api/encode", "/api/jobs/{job_id}", "/api/download"} <= set(schema["paths"])
    steps = schema["components"]["schemas"]["LocaliseRequest"]["properties"]["steps"]
    assert "^[0-9]+(_[0-9]+)*$" in str(steps)
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404  # they load a CDN


def test_cli_refuses_a_missing_folder_and_a_zero_preview_side(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert serve.main(["--images", str(missing)]) == 2
    assert not missing.exists()  # not created
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonexistent" in err[0] and "no such folder" in err[0]
    assert serve.main(["--images", str(tmp_path), "--preview_side", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--preview_side 0" in err[0]


def test_a_world_file_edited_beside_an_image_is_a_new_image(scene, tmp_path, encoder):
    """Georeferencing from a sidecar (a world file) is part of the image: an edit to it gives a new result whose
    map and peaks are placed by the new file, as a fresh server's, without a restart."""
    import rasterio

    folder, client = scene
    world = folder / "scene.tfw"
    world.write_text("2.0\n0.0\n0.0\n-2.0\n310001.0\n5000001.0\n")
    (folder / "scene.tif.aux.xml").write_text("<PAMDataset><SRS>EPSG:32632</SRS></PAMDataset>")
    old = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    world.write_text("2.0\n0.0\n0.0\n-2.0\n320001.0\n5000001.0\n")  # 10 km east
    new = answered(client, "/api/localise", {"image": "scene.tif", "query": QUERY}).json()
    fresh = answered(client_of(folder, encoder, tmp_path / "fresh"), "/api/localise",
                     {"image": "scene.tif", "query": QUERY}).json()
    assert new["result"] != old["result"] and new["result"] == fresh["result"]
    assert new["peaks"] == fresh["peaks"] != old["peaks"]
    probmap = tmp_path / "probmap.tif"
    probmap.write_bytes(client.get(new["downloads"]["probmap"]["url"]).content)
    with rasterio.open(probmap) as src:
        assert src.transform.c == 320000.0 and src.crs.to_epsg() == 32632
