"""``pip install .`` (not editable) into a fresh environment, then the commands from another folder: the
installed package carries its presets, the demo checkpoint and the explorer's page (read through
``importlib.resources``) and needs nothing from the checkout.

Nothing is downloaded: the new environment is made without pip, and a ``.pth`` file puts a folder of links to
this interpreter's libraries on its path (pip, setuptools and the dependencies), every entry of this
project's own installation left out (an editable install's finder would otherwise serve the checkout).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import tomllib

from predict import load_encoder, localise
from predict.demo.synthetic import generate_scene

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # a build and an install: about half a minute
QUERY = "a green football field surrounded by a red track"
OWN_ENTRIES = ("predict", "evaluations", "__editable__", "selo-", "selo.", "__pycache__")
SHIPPED = ["options/demo/demo_encoder.yaml", "options/demo/demo_random.yaml", "options/RSITMD/RSITMD_AMFMN.yaml",
           "options/CLIP/GeoRSCLIP_ViT-B-32.yaml", "checkpoints/demo_encoder.pth", "checkpoints/README.md",
           "vocab/README.md", "web/static/index.html", "web/static/app.js", "web/static/style.css"]


def source_copy(folder: Path) -> Path:
    """The project's files as a clean clone has them: no build output, cache, test data or downloaded weights
    (the build writes ``build/`` and ``*.egg-info`` beside its sources: a copy keeps the checkout as it is)."""
    def left_out(directory, names):
        skipped = {name for name in names if name in (".git", ".venv", "build", "cache", "test_data", "tests",
                                                      "benchmarks", "__pycache__", ".pytest_cache")
                   or name.endswith((".egg-info", ".pyc"))}
        if Path(directory).name == "checkpoints":  # the downloads stay out, as on a fresh clone
            skipped |= {name for name in names if name not in ("README.md", "demo_encoder.pth")}
        return skipped

    shutil.copytree(REPO_ROOT, folder, ignore=left_out, symlinks=True)
    return folder


def dependency_links(folder: Path) -> Path:
    """A folder of links to every entry of this interpreter's site-packages but this project's own
    (``predict``, ``evaluations``, ``selo-*.dist-info``, the editable finder) and the ``.pth`` files."""
    folder.mkdir()
    for site in dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")):
        for entry in Path(site).iterdir():
            if entry.name.startswith(OWN_ENTRIES) or entry.suffix == ".pth" or (folder / entry.name).exists():
                continue
            (folder / entry.name).symlink_to(entry)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(venv, its site-packages, the environment of its commands, a folder outside the checkout)``."""
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "selo_test_dependencies.pth").write_text(f"{dependency_links(root / 'dependencies')}\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", XDG_CACHE_HOME=str(root / "xdg"), MPLCONFIGDIR=str(root / "mpl"),
               PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]))
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--no-cache-dir", "--disable-pip-version-check", "--quiet", str(source_copy(root / "src"))],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv, site, env, elsewhere


def test_the_package_is_installed_with_its_data_and_not_served_from_the_checkout(installed):
    venv, site, env, elsewhere = installed
    code = ("import importlib.metadata, predict, evaluations; print(predict.__file__); print(evaluations.__file__); "
            "print(importlib.metadata.distribution('selo').locate_file(''))")
    done = subprocess.run([venv / "bin" / "python", "-c", code], env=env, cwd=elsewhere,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [Path(line) for line in done.stdout.splitlines()] == [
        site / "predict" / "__init__.py", site / "evaluations" / "__init__.py", site]
    package = site / "predict"
    for name in SHIPPED:
        assert (package / name).is_file(), f"{name} is not package data"
    assert (package / "checkpoints" / "demo_encoder.pth").read_bytes() \
        == (REPO_ROOT / "predict" / "checkpoints" / "demo_encoder.pth").read_bytes()
    def presets(folder):
        return sorted(p.relative_to(folder).as_posix() for p in folder.glob("options/*/*.yaml"))

    assert presets(package) == presets(REPO_ROOT / "predict")
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert sorted(p.name for p in (venv / "bin").glob("selo-*")) == sorted(scripts)


def test_selo_generate_help_from_another_folder(installed):
    venv, _, env, elsewhere = installed
    done = subprocess.run([venv / "bin" / "selo-generate", "--help"], env=env, cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: selo-generate")
    assert "built-in preset by name: " in " ".join(done.stdout.split()) and "RSITMD_AMFMN" in done.stdout


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a PNG's map: no CRS
def test_selo_localise_with_the_demo_preset_from_another_folder(installed):
    venv, _, env, elsewhere = installed
    rgb = generate_scene([4, 7], 800, 960).rgb
    cv2.imwrite(str(elsewhere / "scene.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    done = subprocess.run([venv / "bin" / "selo-localise", "--yaml_path", "demo", "--image", "scene.png",
                           "--query", QUERY, "--out", "out", "--device", "cpu"],
                          env=env, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = elsewhere / "out"
    for name in ("scene_q0_probmap.tif", "scene_q0_overlay.jpg", "scene_q0_peaks.geojson", "summary.json", "log.txt"):
        assert (out / name).is_file(), name
    assert done.stdout.startswith("1 map(s) in out")
    with rasterio.open(out / "scene_q0_probmap.tif") as src:  # the checkout's map: the same code and weights
        assert np.array_equal(src.read(1), localise(elsewhere / "scene.png", QUERY, load_encoder("demo", device="cpu")))


def test_selo_serve_serves_its_page_from_another_folder(installed):
    venv, site, env, elsewhere = installed
    images = elsewhere / "images"
    images.mkdir()
    cv2.imwrite(str(images / "field.png"), generate_scene([5, 1], 300, 400).rgb[:, :, ::-1])
    port = free_port()
    server = subprocess.Popen([venv / "bin" / "selo-serve", "--images", "images", "--port", str(port),
                               "--device", "cpu"], env=env, cwd=elsewhere,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, page = fetch(f"http://127.0.0.1:{port}/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "selo-serve did not answer within 120 s"
                time.sleep(0.2)
        assert status == 200 and page == (site / "predict" / "web" / "static" / "index.html").read_bytes()
        assert fetch(f"http://127.0.0.1:{port}/static/app.js") == (
            200, (site / "predict" / "web" / "static" / "app.js").read_bytes())
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
