"""The explorer page in a real browser: headless Chromium (Debian's) driven by Playwright.

The server runs with uvicorn in a thread on 127.0.0.1 and a free port, over small synthetic scenes (one a
UTM GeoTIFF) and the demo encoder. The tests use the page as an analyst would, at 1280 x 900 and 390 x 844,
and keep screenshots in ``$SELO_ARTIFACTS`` (default ``tests/artifacts/``, ignored by git). Skipped with the
reason when no Chromium is installed (``.ci/run`` installs it).
"""
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import pytest
import rasterio.warp

from predict.demo.synthetic import generate_scene

from helpers import ARTIFACTS
from helpers import DEMO_YAML as YAML

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUERY = "a green football field surrounded by a red track"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_scenes(folder: Path) -> None:
    """geo.tif (UTM 33N, 0.5 m pixels, a football field), site..v2.png, and a larger plain.png."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rgb = generate_scene(5, 1000, 1400).rgb
    with rasterio.open(folder / "geo.tif", "w", driver="GTiff", width=1400, height=1000, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.5, 0.5)) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    cv2.imwrite(str(folder / "site..v2.png"), cv2.cvtColor(generate_scene(7, 900, 900).rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "plain.png"), cv2.cvtColor(generate_scene(6, 1600, 1600).rgb, cv2.COLOR_RGB2BGR))


@contextmanager
def serving(explorer):
    """The explorer's app on 127.0.0.1:<free port> while the block runs."""
    uvicorn = pytest.importorskip("uvicorn")
    from predict.cli.serve import allowed_hosts
    from predict.web.app import create_app

    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(create_app(explorer, allowed_hosts("127.0.0.1")), host="127.0.0.1",
                                             port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the explorer did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from predict.encoders.registry import load_encoder
    from predict.explorer import Explorer, ExplorerConfig

    images = tmp_path_factory.mktemp("scenes")
    make_scenes(images)
    explorer = Explorer(load_encoder(YAML, device="cpu"), ExplorerConfig(images_dir=str(images), preview_side=512))
    with serving(explorer) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield instance
        instance.close()


@contextmanager
def opened(browser, server, width, height):
    """A fresh page (own storage) at ``width`` x ``height``; asserts it loaded nothing from elsewhere and met
    no script error or Content-Security-Policy violation."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    outside, errors = [], []
    page.on("request", lambda request: None if request.url.startswith((server, "blob:", "data:"))
            else outside.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    page.locator("#images button").first.wait_for()
    yield page
    context.close()
    assert not outside, f"the page loaded from elsewhere: {outside}"
    assert not [e for e in errors if "Content Security Policy" in e or "Error" in e], errors


def pick(page, name):
    page.locator(f'#images button[data-name="{name}"]').click()
    ready(page)


def ready(page):
    """Wait until the picked image's tiles are ready (the query box enabled); the status line on failure."""
    try:
        page.wait_for_function("() => !document.querySelector('#query').disabled", timeout=120_000)
    except sync_api.TimeoutError:
        raise AssertionError(f"not ready: {page.locator('#status').inner_text()}") from None


def ask(page, query):
    page.fill("#query", query)
    page.press("#query", "Enter")
    page.wait_for_function(f"() => document.querySelector('#history').innerText.includes({query!r})", timeout=60_000)
    page.locator("#map:not([hidden])").wait_for()


def inside(box, outer):
    return (outer["x"] - 1 <= box["x"] and box["x"] + box["width"] <= outer["x"] + outer["width"] + 1
            and outer["y"] - 1 <= box["y"] and box["y"] + box["height"] <= outer["y"] + outer["height"] + 1)


def test_desktop_map_features_at_1280x900(server, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with opened(browser, server, 1280, 900) as page:
        names = page.locator("#images .name").all_inner_texts()
        assert names == ["geo.tif", "plain.png", "site..v2.png"]  # a name with '..' inside is listed
        pick(page, "geo.tif")
        ask(page, QUERY)
        peaks = page.locator("#peaks button")
        assert page.locator(".marker").count() == peaks.count() >= 1
        assert "Scene score" in page.locator("#score").inner_text()
        assert "scene score" in page.locator("#history").inner_text()
        assert "image=geo.tif" in page.url and "query=a+green+football" in page.url
        view = page.locator("#viewport").bounding_box()
        for marker in page.locator(".marker").all():
            assert inside(marker.bounding_box(), view)
        # scale bar in metres, cursor in lon/lat (UTM 33N at 500 km E: 15 deg E)
        assert page.locator("#scalebar-label").inner_text().endswith("m")
        page.mouse.move(view["x"] + view["width"] / 2, view["y"] + view["height"] / 2)
        cursor = re.fullmatch(r"lon (\S+)°, lat (\S+)° \(x (\d+), y (\d+)\)", page.locator("#cursor").inner_text())
        lon, lat, x, y = map(float, cursor.groups())
        east, north = 500000.0 + 0.5 * (x + 0.5), 5000000.0 - 0.5 * (y + 0.5)  # the pixel's centre
        (true_lon,), (true_lat,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [east], [north])
        assert abs(lon - true_lon) < 1e-5 and abs(lat - true_lat) < 1e-5  # within half a pixel (0.25 m)
        # regions above a threshold
        page.locator("#threshold").fill("0.5")
        page.wait_for_function("() => document.querySelectorAll('#regions polygon').length > 0", timeout=10_000)
        # a second query, then a swipe comparison with the first
        ask(page, "a dark green lake")
        page.select_option("#compare", index=1)
        page.locator("#map-b:not([hidden])").wait_for(timeout=20_000)
        assert page.locator("#swipe-line").is_visible()
        page.screenshot(path=str(ARTIFACTS / "explorer_1280x900.png"))
        # a numbered marker is clickable: it selects its peak and zooms onto it
        page.locator(".marker").first.click()
        assert "scale(4)" in page.get_attribute("#stage", "style")
        page.wait_for_function("() => location.hash.includes('view=4.0000')")  # the URL follows the view
        assert page.locator("#peaks button").first.get_attribute("aria-current") == "true"
        for marker in page.locator(".marker").all():
            assert inside(marker.bounding_box(), view)  # kept inside the view even when zoomed
        page.screenshot(path=str(ARTIFACTS / "explorer_1280x900_zoomed.png"))
        # export of the view and the downloads, saved under names made of the image and the query
        with page.expect_download() as exported:
            page.click("#export")
        assert exported.value.suggested_filename == "geo_a_dark_green_lake_view.png"
        exported.value.save_as(ARTIFACTS / "explorer_export.png")
        png = cv2.imread(str(ARTIFACTS / "explorer_export.png"))
        assert png.shape[:2] == (round(view["height"]), round(view["width"]))
        with page.expect_download(timeout=60_000) as probmap:
            page.click("#download-probmap")
        assert probmap.value.suggested_filename == "geo_a_dark_green_lake_probmap.tif"
        assert "Saved geo_a_dark_green_lake_probmap.tif" in page.locator("#status").inner_text()
        # a reload restores the last map and its view from the URL
        view_in_url = page.url.split("view=")[1]
        page.reload()
        page.locator("#map:not([hidden])").wait_for(timeout=60_000)
        assert page.input_value("#query") == "a dark green lake" and page.url.split("#")[1].startswith("image=geo.tif")
        assert "scale(4)" in page.get_attribute("#stage", "style")
        page.wait_for_function("() => location.hash.includes('view=')")
        assert page.url.split("view=")[1] == view_in_url
        # a new tab on the bare address restores the last map too (kept in the browser's storage)
        again = page.context.new_page()
        again.goto(server + "/")
        again.locator("#map:not([hidden])").wait_for(timeout=60_000)
        assert again.input_value("#query") == "a dark green lake" and "image=geo.tif" in again.url
        again.close()


def test_selecting_an_image_clears_everything_at_once_and_drops_a_late_answer(server, browser):
    with opened(browser, server, 1280, 900) as page:
        pick(page, "geo.tif")
        ask(page, QUERY)
        # the query is sent, then another image picked before its answer can arrive
        dropped_before = page.evaluate("() => Number(document.documentElement.dataset.droppedAnswers || 0)")
        at_once = page.evaluate("""() => {
            document.querySelector('#query').value = 'a dark green lake near a bridge';
            document.querySelector('#query-form').requestSubmit();
            document.querySelector('#images button[data-name="site..v2.png"]').click();
            return {map: document.querySelector('#map').hidden, peaks: document.querySelectorAll('#peaks li').length,
                    markers: document.querySelectorAll('.marker').length, query: document.querySelector('#query').disabled,
                    history: document.querySelector('#history').innerText};
        }""")
        assert at_once == {"map": True, "peaks": 0, "markers": 0, "query": True, "history": ""}
        ready(page)
        page.wait_for_function("(before) => Number(document.documentElement.dataset.droppedAnswers || 0) > before",
                               arg=dropped_before, timeout=60_000)  # the late answer arrived, and was dropped
        assert page.locator("#map").is_hidden() and page.locator("#peaks li").count() == 0
        assert page.locator("#scalebar-label").inner_text().endswith("px")  # not georeferenced
        ask(page, "some white ships on the dark sea")
        assert page.locator("#history li").count() == 1
        page.fill("#query", "zzzz qqqq")
        page.press("#query", "Enter")
        page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
        assert "zzzz, qqqq" in page.locator("#status").inner_text()


def test_narrow_screen_keyboard_focus_and_labels_at_390x844(server, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with opened(browser, server, 390, 844) as page:
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, button')].filter(
            (e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map((e) => e.id)""")
        assert unlabelled == []
        assert page.get_attribute("#status", "aria-live") == "polite"
        # keyboard only: Tab to the first image, Enter to pick it, Tab to the query
        focused = []
        for _ in range(3):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("document.activeElement.dataset.name || document.activeElement.id"))
        assert "geo.tif" in focused
        while page.evaluate("document.activeElement.dataset.name") != "geo.tif":
            page.keyboard.press("Shift+Tab")
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"  # focus visible
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.activeElement.id === 'query'", timeout=120_000)
        page.keyboard.type(QUERY)
        page.keyboard.press("Enter")
        page.locator("#peaks button").first.wait_for(timeout=60_000)
        view = page.locator("#viewport").bounding_box()
        assert view["width"] >= 350 and view["height"] >= 300  # usable, not 0 px wide
        panels = [page.locator(s).bounding_box() for s in ("#images-panel", "main", "#side-panel")]
        assert panels[0]["y"] < panels[1]["y"] < panels[2]["y"]  # stacked
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
        page.focus("#viewport")
        page.keyboard.press("+")
        assert "scale(1.5)" in page.get_attribute("#stage", "style")
        page.keyboard.press("0")
        page.locator("#peaks button").first.focus()
        page.keyboard.press("Enter")
        assert "scale(4)" in page.get_attribute("#stage", "style")
        page.focus("#viewport")
        page.keyboard.press("0")  # the whole map for the screenshot
        assert "scale(1)" in page.get_attribute("#stage", "style")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "explorer_390x844.png"), full_page=True)


def test_queue_position_and_cancel_button(tmp_path, browser):
    from predict.encoders.registry import load_encoder
    from predict.explorer import Explorer, ExplorerConfig

    make_scenes(tmp_path)
    encoder = load_encoder(YAML, device="cpu")
    gate = threading.Event()
    encode_batch = encoder.encode_batch
    encoder.encode_batch = lambda tiles: (gate.wait(60), encode_batch(tiles))[1]
    explorer = Explorer(encoder, ExplorerConfig(images_dir=str(tmp_path), preview_side=512))
    try:
        with serving(explorer) as url, opened(browser, url, 1280, 900) as page:
            page.locator('#images button[data-name="plain.png"]').click()
            page.locator("#cancel:not([hidden])").wait_for(timeout=20_000)
            assert page.locator("#status").inner_text() in ("Queued: position 1 (waiting for the encoder)",
                                                            "encoding plain.png: 0/196 tiles")
            page.wait_for_function("() => document.querySelector('#status').innerText.startsWith('encoding plain.png')")
            page.click("#cancel")
            page.wait_for_function("() => document.querySelector('#status').innerText === 'Cancelled.'")
            assert page.locator("#query").is_disabled()
            gate.set()
            page.wait_for_function("() => document.querySelector('#progress').hidden")
    finally:
        gate.set()
