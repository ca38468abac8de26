"""The explorer page in a real browser: headless Chromium (Debian's) driven by Playwright.

The server runs with uvicorn in a thread on 127.0.0.1 and a free port, over two small synthetic scenes and the
demo encoder; the test picks a scene, types a query, waits for the map and the peaks, and keeps a screenshot
in ``$SELO_ARTIFACTS`` (default ``tests/artifacts/``). Skipped with the reason when no Chromium is installed
(``.ci/run`` installs it).
"""
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import pytest

from predict import REPO_ROOT
from predict.demo.synthetic import generate_scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("SELO_ARTIFACTS", REPO_ROOT / "tests" / "artifacts"))
QUERY = "a green football field surrounded by a red track"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer on 127.0.0.1:<free port>; stopped after the module's tests."""
    uvicorn = pytest.importorskip("uvicorn")
    from predict.encoders.registry import load_encoder
    from predict.run.explorer import Explorer, ExplorerConfig
    from predict.serve import allowed_hosts
    from predict.web.app import create_app

    images = tmp_path_factory.mktemp("scenes")
    for index, (seed, height, width) in enumerate([(5, 1400, 2000), (7, 1200, 1200)]):  # seed 5 has a football field
        scene = generate_scene(seed, height, width)
        cv2.imwrite(str(images / f"scene_{index}.png"), cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    encoder = load_encoder(REPO_ROOT / "predict/options/demo/demo_encoder.yaml", device="cpu")
    app = create_app(Explorer(encoder, ExplorerConfig(images_dir=str(images))), allowed_hosts("127.0.0.1"))
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the explorer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def test_query_shows_map_and_peaks(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside = []  # every request the page makes must go to the explorer itself
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        page.on("request", lambda request: None if request.url.startswith(server) else outside.append(request.url))
        page.goto(server + "/")
        page.locator("#images li").first.wait_for()
        assert page.locator("#images li").count() == 2
        page.locator("#images li", has_text="scene_0.png").click()
        page.wait_for_function("!document.querySelector('#query').disabled", timeout=120_000)
        assert "tiles ready" in page.locator("#status").inner_text()
        page.fill("#query", QUERY)
        page.press("#query", "Enter")
        page.locator("#map:not([hidden])").wait_for(timeout=60_000)
        page.locator("#peaks li").first.wait_for(timeout=10_000)
        assert page.evaluate("document.querySelector('#map').naturalWidth") > 0
        assert page.locator(".marker").count() == page.locator("#peaks li").count() >= 1
        assert QUERY in page.locator("#history").inner_text()
        assert page.get_attribute("#download-probmap", "href").startswith("/api/download?result=")
        page.fill("#opacity", "0.8")
        assert page.evaluate("getComputedStyle(document.querySelector('#map')).opacity") == "0.8"
        page.screenshot(path=str(ARTIFACTS / "explorer_query.png"))
        # zoom in around the centre: the stage's transform scales; a click on a peak zooms onto it
        page.click("#zoom-in")
        assert "scale(1.5)" in page.get_attribute("#stage", "style")
        page.locator("#peaks li").first.click()
        assert "scale(4)" in page.get_attribute("#stage", "style")
        marker = page.locator(".marker").first.bounding_box()
        view = page.locator("#viewport").bounding_box()
        assert abs(marker["x"] + marker["width"] / 2 - (view["x"] + view["width"] / 2)) < 3
        page.screenshot(path=str(ARTIFACTS / "explorer_zoomed.png"))
        browser.close()
    assert not outside, f"the page loaded from elsewhere: {outside}"
    assert (ARTIFACTS / "explorer_query.png").stat().st_size > 10_000
