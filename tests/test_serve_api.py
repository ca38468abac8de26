"""The explorer's JSON API through FastAPI's TestClient: listing, localising, encoding in the background
(202 with progress), vectors reused after a restart, exact downloads named after image and query, and every
refusal of the safety rules (400 for a path or a name not listed, 422 for a malformed query, pipeline or
steps). The job queue is in ``test_serve_jobs.py``, provenance and hostile input in ``test_serve_hardening.py``."""
import time

import cv2
import numpy as np
import pytest
import tifffile

from predict import localise
from predict.core import preview as preview_module
from predict.core.pipelines import PIPELINES, get_pipeline
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder

fastapi_testclient = pytest.importorskip("fastapi.testclient")
from predict.cli import serve  # noqa: E402
from predict.explorer import Explorer, ExplorerConfig  # noqa: E402
from predict.web.app import create_app  # noqa: E402

from helpers import DEMO_YAML as YAML  # noqa: E402

QUERY = "a green football field surrounded by a red track"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A folder with two scenes and things that must not be served: a text file, a hidden image, a subfolder
    with an image, a link to an image outside."""
    folder = tmp_path_factory.mktemp("scenes")
    for name, seed, height, width in [("field.png", 5, 1000, 1400), ("lake.jpg", 6, 900, 900)]:
        cv2.imwrite(str(folder / name), cv2.cvtColor(generate_scene(seed, height, width).rgb, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    cv2.imwrite(str(folder / ".hidden.png"), np.zeros((300, 300, 3), np.uint8))
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "inner.png"), np.zeros((300, 300, 3), np.uint8))
    outside = tmp_path_factory.mktemp("outside")
    cv2.imwrite(str(outside / "secret.png"), np.zeros((300, 300, 3), np.uint8))
    (folder / "link.png").symlink_to(outside / "secret.png")
    return folder


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(YAML, device="cpu")


def make_client(scenes, encoder, tmp_path):
    config = ExplorerConfig(images_dir=str(scenes), cache_dir=str(tmp_path / "vectors"),
                            outputs_dir=str(tmp_path / "outputs"), preview_side=512)
    return fastapi_testclient.TestClient(create_app(Explorer(encoder, config)))


def until_done(client, url, body, timeout=120):
    """POST until the answer is not 202; returns (the 202 answers seen, the last response)."""
    waits = []
    deadline = time.monotonic() + timeout
    while True:
        response = client.post(url, json=body)
        if response.status_code != 202:
            return waits, response
        waits.append(response.json())
        assert time.monotonic() < deadline, "encoding never finished"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def served(scenes, encoder, tmp_path_factory):
    """A client whose first query on field.png has been answered: (client, folder, first waits, first answer)."""
    folder = tmp_path_factory.mktemp("state")
    client = make_client(scenes, encoder, folder)
    waits, response = until_done(client, "/api/localise", {"image": "field.png", "query": QUERY})
    assert response.status_code == 200, response.text
    return client, folder, waits, response.json()


def test_images_lists_only_the_folders_own_images(served, scenes):
    client, _, _, _ = served
    images = client.get("/api/images").json()["images"]
    assert [(i["name"], i["height"], i["width"]) for i in images] == [("field.png", 1000, 1400), ("lake.jpg", 900, 900)]
    assert {i["name"]: i["cached"] for i in images} == {"field.png": True, "lake.jpg": False}
    assert [i["bytes"] for i in images] == [(scenes / name).stat().st_size for name in ("field.png", "lake.jpg")]


def test_first_query_encodes_in_the_background_then_answers(served, encoder):
    client, _, waits, answer = served
    assert waits and waits[0]["status"] in ("queued", "encoding") and waits[0]["image"] == "field.png"
    total = waits[0]["total"]
    assert total == len(set(encoder_tiles(answer))) and all(0 <= w["done"] <= total for w in waits)
    assert answer["tiles_encoded"] == total
    assert answer["query"] == QUERY and answer["pipeline"] == "v1" and answer["steps"] == [256, 512, 768]
    png = client.get(answer["map_url"])
    assert png.headers["content-type"] == "image/png"
    map_bgr = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert map_bgr.shape == (round(1000 * 512 / 1400), 512, 3)  # the preview: longer side 512
    assert answer["peaks"] and [p["rank"] for p in answer["peaks"]] == list(range(1, len(answer["peaks"]) + 1))
    assert all(0 <= p["x"] < 1400 and 0 <= p["y"] < 1000 and 0.5 <= p["probability"] <= 1 for p in answer["peaks"])


def encoder_tiles(answer):
    return get_pipeline(answer["pipeline"], answer["steps"]).first_stage_tiles(answer["height"], answer["width"])


def test_second_query_encodes_nothing_and_is_answered_at_once(served):
    client, _, _, _ = served
    response = client.post("/api/localise", json={"image": "field.png", "query": "a gray parking lot with rows of cars",
                                                  "pipeline": "v1", "steps": "256_512_768"})
    assert response.status_code == 200
    assert response.json()["tiles_encoded"] == 0
    assert response.json()["map_url"] != served[3]["map_url"]


def test_steps_as_list_or_string_give_the_same_result(served):
    client, _, _, answer = served
    as_list = client.post("/api/localise", json={"image": "field.png", "query": QUERY, "steps": [256, 512, 768]})
    assert as_list.status_code == 200 and as_list.json()["result"] == answer["result"]


def test_v2_and_other_steps_encode_only_their_new_tiles(served):
    client, _, _, _ = served
    waits, response = until_done(client, "/api/localise", {"image": "field.png", "query": QUERY, "pipeline": "v2",
                                                           "steps": [512]})
    answer = response.json()
    assert response.status_code == 200 and answer["pipeline"] == "v2"
    # v2's 512 grid is a subset of v1's tiles: nothing to wait for; its refinement boxes are new tiles
    assert not waits and answer["tiles_encoded"] > 0
    again = client.post("/api/localise", json={"image": "field.png", "query": QUERY, "pipeline": "v2"}).json()
    assert again["tiles_encoded"] == 0


def test_downloads_are_the_exact_full_resolution_map(served, scenes, encoder):
    client, _, _, answer = served
    tif = client.get(answer["downloads"]["probmap"]["url"])
    assert tif.status_code == 200
    stem = "field_a_green_football_field_surrounded_by_a_r"  # the image's stem and the query's first 40 characters
    assert answer["downloads"]["probmap"]["filename"] == stem + "_probmap.tif"
    assert f'filename="{stem}_probmap.tif"' in tif.headers["content-disposition"]
    probmap = tifffile.imread(__import__("io").BytesIO(tif.content))
    expected = localise(scenes / "field.png", QUERY, encoder)
    np.testing.assert_array_equal(np.squeeze(probmap), expected)
    peaks = client.get(answer["downloads"]["peaks"]["url"]).json()
    assert peaks["type"] == "FeatureCollection" and peaks["features"]
    assert client.get(f"/api/download?result={answer['result']}&kind=probmap").status_code == 200  # written once


def test_restart_reuses_the_vectors_on_disk(served, scenes):
    _, folder, _, _ = served
    fresh_encoder = load_encoder(YAML, device="cpu")
    client = make_client(scenes, fresh_encoder, folder)
    assert {i["name"]: i["cached"] for i in client.get("/api/images").json()["images"]}["field.png"]
    response = client.post("/api/localise", json={"image": "field.png", "query": "two tennis courts"})
    assert response.status_code == 200 and response.json()["tiles_encoded"] == 0


@pytest.mark.parametrize("image", ["../field.png", "/etc/passwd", "sub/inner.png", "sub\\inner.png", "..",
                                   "missing.png", "notes.txt", ".hidden.png", "link.png", "", 7, None])
def test_refuses_any_image_but_the_listed_ones(served, image):
    client, _, _, _ = served
    for url, body in [("/api/localise", {"image": image, "query": QUERY}), ("/api/encode", {"image": image})]:
        response = client.post(url, json=body)
        assert response.status_code == (400 if isinstance(image, str) and image else 422), (url, image, response.text)
        assert "\n" not in response.json()["detail"]
    if isinstance(image, str):
        assert client.get("/api/image", params={"name": image, "side": 64}).status_code == 400


@pytest.mark.parametrize("change, word", [({"query": ""}, "query"), ({"query": "   "}, "query"),
                                          ({"query": "x" * 301}, "at most 300"), ({"query": 5}, "query"),
                                          ({"pipeline": "v3"}, "pipeline"), ({"steps": "abc"}, "steps"),
                                          ({"steps": [8]}, "steps"), ({"steps": "256_0"}, "steps"),
                                          ({"steps": [256] * 7}, "steps"), ({"steps": 256}, "steps")])
def test_refuses_bad_queries_pipelines_and_steps(served, change, word):
    client, _, _, _ = served
    response = client.post("/api/localise", json={"image": "field.png", "query": QUERY, **change})
    assert response.status_code == 422 and word in response.json()["detail"]


def test_serves_only_its_own_outputs(served):
    client, _, _, answer = served
    for url in ["/outputs/..%2F..%2Fetc%2Fpasswd", "/outputs/%2Fetc%2Fpasswd", "/outputs/%2E%2E", "/outputs/.hidden",
                "/outputs/a%5Cb.png"]:
        assert client.get(url).status_code == 400, url
    assert client.get("/outputs/nothing.png").status_code == 404
    assert client.get("/api/download", params={"result": "0" * 20, "kind": "probmap"}).status_code == 404
    assert client.get("/api/download", params={"result": answer["result"], "kind": "../x"}).status_code == 400
    assert client.get("/api/image", params={"name": "field.png", "side": 100000}).status_code == 422
    assert client.post("/api/localise", content=b"not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/docs").status_code == 404  # FastAPI's docs pages would load scripts from a CDN


def test_page_and_its_files_are_served_from_the_app(served):
    client, _, _, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "SeLo explorer" in page.text
    for path in ["/static/app.js", "/static/style.css"]:
        assert client.get(path).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no external resource
    thumb = client.get("/api/image", params={"name": "field.png", "side": 160})
    image = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (round(1000 * 160 / 1400), 160, 3)


def test_cli_binds_to_loopback_by_default_and_answers_only_loopback_names(scenes, encoder, tmp_path):
    args = serve.build_parser().parse_args(["--images", "x"])
    assert args.host == "127.0.0.1" and args.port == 8000
    assert serve.is_loopback(args.host) and not serve.is_loopback("0.0.0.0")
    app = create_app(Explorer(encoder, ExplorerConfig(images_dir=str(scenes), outputs_dir=str(tmp_path))),
                     serve.allowed_hosts(args.host))
    for host, status in [("127.0.0.1:8000", 200), ("localhost:8000", 200), ("evil.example:8000", 400)]:
        client = fastapi_testclient.TestClient(app, base_url=f"http://{host}")
        assert client.get("/static/style.css").status_code == status, host


def test_preview_at_full_scale_is_the_exact_map():
    from predict.core.heatmap import mean_tile_scores, probability_map
    from predict.core.tiling import effective_box
    rng = np.random.default_rng(0)
    spec = PIPELINES["v1"]
    tiles = spec.first_stage_tiles(900, 1300)
    cells = mean_tile_scores([effective_box(t, 900, 1300) for t in tiles], rng.random(len(tiles)), 900, 1300)
    exact = probability_map(cells, spec.map_filter)
    np.testing.assert_array_equal(preview_module.preview_map(cells, spec.map_filter, 1.0), exact)
    # at a quarter of the size, the preview is close to the exact map shrunk
    small = preview_module.preview_map(cells, spec.map_filter, 0.25)
    shrunk = cv2.resize(exact, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.mean(np.abs(small.astype(int) - shrunk)) < 8


def test_a_corrupt_image_is_named_and_the_others_still_work(tmp_path, encoder):
    folder = tmp_path / "scenes"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cv2.imwrite(str(folder / "fine.png"), cv2.cvtColor(generate_scene(5, 800, 900).rgb, cv2.COLOR_RGB2BGR))
    client = make_client(folder, encoder, tmp_path)
    listing = {i["name"]: i for i in client.get("/api/images").json()["images"]}
    assert "broken.jpg" in listing["broken.jpg"]["error"] and listing["fine.png"]["width"] == 900
    refused = client.post("/api/localise", json={"image": "broken.jpg", "query": QUERY})
    assert refused.status_code == 422 and "broken.jpg" in refused.json()["detail"]
    _, fine = until_done(client, "/api/localise", {"image": "fine.png", "query": QUERY})
    assert fine.status_code == 200


def test_geotiff_with_nodata_peaks_in_lonlat_map_transparent_on_nodata(tmp_path, encoder):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from predict.io.raster import read_raster
    from predict.localisation.maps import mostly_valid, probability_map_of, score_tiles
    from predict.localisation.vectors import TileVectorStore

    folder = tmp_path / "geo"
    folder.mkdir()
    rgb = generate_scene(5, 1000, 1400).rgb.copy()
    rgb[:, :400] = 0  # a nodata border on the left, as a footprint edge
    with rasterio.open(folder / "scene.tif", "w", driver="GTiff", width=1400, height=1000, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.5, 0.5), nodata=0) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    client = make_client(folder, encoder, tmp_path)
    waits, response = until_done(client, "/api/localise", {"image": "scene.tif", "query": QUERY})
    answer = response.json()
    raster = read_raster(folder / "scene.tif")
    valid_tiles = mostly_valid(PIPELINES["v1"].first_stage_tiles(1000, 1400), raster.valid)
    assert waits[0]["total"] == answer["tiles_encoded"] == len(valid_tiles)  # nodata tiles are not encoded
    png = cv2.imdecode(np.frombuffer(client.get(answer["map_url"]).content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.shape[2] == 4 and png[:, :100, 3].max() == 0 and png[:, -100:, 3].min() == 255
    for peak in answer["peaks"]:
        assert peak["x"] >= 400 and 14.9 < peak["lon"] < 15.1 and 45.1 < peak["lat"] < 45.2  # UTM 33N, 500 km E
    with rasterio.open(__import__("io").BytesIO(client.get(answer["downloads"]["probmap"]["url"]).content)) as src:
        assert src.crs.to_epsg() == 32633 and src.transform == from_origin(500000.0, 5000000.0, 0.5, 0.5)
        tiles, scores = score_tiles(raster.loaded(), QUERY, encoder, PIPELINES["v1"], TileVectorStore(encoder),
                                    valid=raster.valid)
        # as selo-localise writes it: pixels of the left-out nodata tiles get the minimum, nodata pixels 0
        expected = probability_map_of(tiles, scores, 1000, 1400, PIPELINES["v1"], fill_uncovered=True).pixels
        expected[~raster.valid] = 0
        np.testing.assert_array_equal(src.read(1), expected)

