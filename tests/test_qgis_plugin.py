"""The QGIS plugin (``qgis_plugin/selo``) without a desktop: ``qgis_process`` lists its algorithms, shows
their help and runs them on small scenes, whose outputs equal those of the commands run directly; a missing
or wrong ``SELO_BIN`` is one line; ``make qgis-plugin`` builds a zip QGIS takes. The plugin's command runner
(plain Python) turns ``--progress json`` into progress and Cancel into Ctrl-C, tested here without QGIS.

The QGIS tests need Debian's ``qgis`` and ``python3-qgis`` (``.ci/run`` installs them): they call
``qgis_process.bin`` (or ``$QGIS_PROCESS``), as 3.22's ``qgis_process`` wrapper fails every call.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from selo.commands import CommandError, ProgressLines, find_command, run_command
from selo.outputs import distinct_queries

from predict.cli.localise import main as localise_main
from predict.demo.synthetic import generate_scene

from helpers import REPO_ROOT, subprocess_env

QGIS_PROCESS = os.environ.get("QGIS_PROCESS") or shutil.which("qgis_process.bin")
needs_qgis = pytest.mark.skipif(not QGIS_PROCESS, reason="qgis_process.bin not found: apt-get install qgis "
                                                         "python3-qgis (.ci/run does), or set QGIS_PROCESS")
QGIS_PYTHON = os.environ.get("QGIS_PYTHON", "/usr/bin/python3")  # the Python QGIS runs (python3-qgis)
SELO_BIN = Path(sys.executable).parent  # this environment's commands (selo-localise...), with the code under test
PLUGINS = REPO_ROOT / "qgis_plugin"
CRS = "EPSG:32633"
QUERIES = ["a playground with a green football field and a red track.", "a small dark lake surrounded by green woods."]


def write_scene(path: Path, seed: int, height: int = 500, width: int = 600) -> Path:
    """A small UTM GeoTIFF scene of the demo encoder's world."""
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=CRS,
                       transform=from_origin(500000.0, 5000000.0, 0.5, 0.5)) as dst:
        dst.write(np.moveaxis(generate_scene(seed, height, width).rgb, -1, 0))
    return path


def command_env(**extra) -> dict:
    """The environment of a command or ``qgis_process``: the code under test on ``PYTHONPATH``, no
    virtualenv's ``bin`` on ``PATH`` (it crashes ``qgis_process``: QGIS's Python would take its packages),
    Ray on loopback without usage statistics, no compiled files left in the plugin."""
    env = subprocess_env()
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != SELO_BIN)
    env.pop("VIRTUAL_ENV", None)
    env.pop("SELO_BIN", None)
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "PYTHONDONTWRITEBYTECODE": "1", **extra}


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_band(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def points(path) -> list[tuple]:
    """The peaks (or hits) of a GeoJSON file: geometry and properties, in the file's order."""
    return [(json.dumps(f["geometry"]), json.dumps(f["properties"], sort_keys=True)) for f in read_json(path)["features"]]


class QgisProcess:
    """``qgis_process.bin`` with a profile of its own (a temporary ``HOME``: 3.22 has no ``--profile``) where
    the plugin is enabled (``QGIS_PLUGINPATH`` makes it found, ``plugins enable`` loaded)."""

    def __init__(self, home: Path, plugin_path: Path = PLUGINS):
        self.env = command_env(HOME=str(home), XDG_RUNTIME_DIR=str(home), QGIS_PLUGINPATH=str(plugin_path),
                               QT_QPA_PLATFORM="offscreen")
        enabled = self("plugins", "enable", "selo")
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr

    def __call__(self, *arguments, **env) -> subprocess.CompletedProcess:
        return subprocess.run([QGIS_PROCESS, *arguments], env={**self.env, **env}, capture_output=True, text=True,
                              timeout=600)

    def run(self, algorithm: str, parameters: dict, **env) -> dict:
        """The algorithm run with ``parameters`` (``SELO_BIN`` this environment's ``bin`` unless ``env`` says
        otherwise); ``qgis_process --json``'s answer (``results``, ``log``)."""
        done = self("run", algorithm, "--json", "--", *[f"{name}={value}" for name, value in parameters.items()],
                    **{"SELO_BIN": str(SELO_BIN), **env})
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def profile_ini(self) -> Path:
        return next(Path(self.env["HOME"]).rglob("QGIS3.ini"))


@pytest.fixture(scope="module")
def qgis(tmp_path_factory):
    if not QGIS_PROCESS:
        pytest.skip("qgis_process.bin not found")
    return QgisProcess(tmp_path_factory.mktemp("qgis-home"))


def run_command_directly(command: str, *arguments) -> subprocess.CompletedProcess:
    done = subprocess.run([str(SELO_BIN / command), *map(str, arguments), "--progress", "json"], env=command_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def progress_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith('{"event": "progress"')]


# The plugin's own styling (selo.layers) applied by QGIS's Python to a run's outputs: what each layer shows
LAYER_REPORT = """
import json, os, sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
from selo.layers import open_layer
from selo.outputs import layer_name, localise_outputs
report = []
for output in localise_outputs(sys.argv[1], [sys.argv[2]], sys.argv[3:]):
    layer = open_layer(output, layer_name(output, False))
    labelled = output.kind in ("peaks", "regions") and layer.labelsEnabled()
    report.append({"name": layer.name(), "crs": layer.crs().authid(), "renderer": layer.renderer().type(),
                   "label": layer.labeling().settings().fieldName if labelled else None,
                   "about": layer.metadata().abstract().splitlines()})
print(json.dumps(report), flush=True)
os._exit(0)  # QGIS 3.22's teardown may crash outside a desktop
"""


def styled_layers(folder: Path, image: Path, queries: list[str]) -> list[dict]:
    """The layers of a run's outputs as the plugin styles them, described by QGIS's Python."""
    done = subprocess.run([QGIS_PYTHON, "-c", LAYER_REPORT, str(folder), str(image), *queries], capture_output=True,
                          text=True, timeout=120, env=command_env(PYTHONPATH=str(PLUGINS), QT_QPA_PLATFORM="offscreen"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---- qgis_process ------------------------------------------------------------------------------------------

@needs_qgis
def test_qgis_process_lists_the_providers_algorithms(qgis):
    listed = qgis("list")
    assert listed.returncode == 0, listed.stderr
    lines = [line.strip() for line in listed.stdout.splitlines()]
    assert "SeLo" in lines
    assert {"selo:localise\tLocalise", "selo:index\tIndex", "selo:search\tSearch"} <= set(lines)


@needs_qgis
@pytest.mark.parametrize("algorithm, parameters", [
    ("selo:localise", ["INPUT", "QUERIES", "ENCODER", "PIPELINE", "STEPS", "BANDS", "MASK", "REGIONS", "OUTPUT_FOLDER",
                       "PROBMAPS", "PEAKS", "MASKS"]),
    ("selo:index", ["INPUT", "ENCODER", "PIPELINE", "ARCHIVE", "INDEX"]),
    ("selo:search", ["ARCHIVE", "QUERIES", "TOP", "OUTPUT_FOLDER", "HITS", "PROBMAPS"])])
def test_qgis_process_shows_each_algorithms_help(qgis, algorithm, parameters):
    shown = qgis("help", algorithm)
    assert shown.returncode == 0, shown.stderr
    assert "SELO_BIN" in shown.stdout or algorithm != "selo:localise"
    for name in parameters:
        assert f"\n{name}: " in shown.stdout, name


@needs_qgis
def test_localise_in_qgis_writes_what_selo_localise_writes(qgis, tmp_path):
    scene = write_scene(tmp_path / "scene.tif", seed=3)
    in_qgis, direct = tmp_path / "in-qgis", tmp_path / "direct"
    answer = qgis.run("selo:localise", {"INPUT": scene, "QUERIES": "\n".join(QUERIES), "ENCODER": "demo", "PIPELINE": 0,
                                        "STEPS": "256_512", "MASK": 0.95, "REGIONS": 0.9, "OUTPUT_FOLDER": in_qgis})
    done = run_command_directly("selo-localise", "--yaml_path", "demo", "--image", scene, "--out", direct,
                                "--step", "256_512", "--mask", "0.95", "--regions", "0.9",
                                *[f"--query={query}" for query in QUERIES])
    results = answer["results"]
    assert [Path(p).name for p in results["PROBMAPS"]] == ["scene_q0_probmap.tif", "scene_q1_probmap.tif"]
    assert [Path(p).name for p in results["PEAKS"]] == ["scene_q0_peaks.geojson", "scene_q1_peaks.geojson"]
    assert len(results["MASKS"]) == len(results["REGIONS"]) == 2
    for probmap, peaks, mask, regions in zip(results["PROBMAPS"], results["PEAKS"], results["MASKS"], results["REGIONS"]):
        np.testing.assert_array_equal(read_band(probmap), read_band(direct / Path(probmap).name))
        np.testing.assert_array_equal(read_band(mask), read_band(direct / Path(mask).name))
        assert points(peaks) == points(direct / Path(peaks).name) and points(peaks)
        assert read_json(regions)["features"] == read_json(direct / Path(regions).name)["features"]
        with rasterio.open(probmap) as made, rasterio.open(scene) as source:  # the scene's grid, not reprojected
            assert (made.crs, made.transform, made.shape) == (source.crs, source.transform, source.shape)
    assert [r["query"] for r in read_json(in_qgis / "summary.json")["results"]] == QUERIES
    # the progress lines became progress, not log lines; the command's own lines are in the log
    assert not any('"event"' in line for lines in answer["log"].values() for line in lines)
    assert any(line.startswith("2 map(s) in") for line in answer["log"]["info"])
    stages = progress_lines(done.stderr)
    assert stages[-1] == {"event": "progress", "stage": "queries", "done": 2, "total": 2, "unit": "query", "depth": 0}
    assert {"stage": "tiles", "depth": 1} in [{"stage": s["stage"], "depth": s["depth"]} for s in stages]
    layers = styled_layers(in_qgis, scene, QUERIES[:1])
    assert [(layer["name"], layer["renderer"], layer["crs"]) for layer in layers] == [
        (f"SeLo: {QUERIES[0]}", "singlebandpseudocolor", CRS), (f"SeLo: {QUERIES[0]} (mask)", "paletted", CRS),
        (f"SeLo: {QUERIES[0]} (regions)", "singleSymbol", "EPSG:4326"),  # GeoJSON: WGS84 by RFC 7946
        (f"SeLo: {QUERIES[0]} (peaks)", "singleSymbol", "EPSG:4326")]
    assert layers[-1]["label"] == "concat('#', \"rank\", '  ', format_number(\"score\", 2))"
    for layer in layers:
        assert {f"query: {QUERIES[0]}", f"image: {scene}", "encoder: demo", "pipeline: v1"} <= set(layer["about"])


@needs_qgis
@pytest.mark.slow  # two local Rays: selo:index and selo:search
def test_search_in_qgis_ranks_and_maps_the_scenes_as_selo_localise(qgis, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    images = [str(write_scene(scenes / f"scene{seed}.tif", seed=seed + 10, height=420, width=560)) for seed in range(3)]
    archive, in_qgis, local = tmp_path / "archive", tmp_path / "in-qgis", tmp_path / "localise"
    indexed = qgis.run("selo:index", {"INPUT": scenes, "ENCODER": "demo", "STEPS": "256", "ARCHIVE": archive})
    assert len(read_json(indexed["results"]["INDEX"])["scenes"]) == 3
    results = qgis.run("selo:search", {"ARCHIVE": archive, "QUERIES": QUERIES[0], "TOP": 2,
                                       "OUTPUT_FOLDER": in_qgis})["results"]
    # selo-localise on every scene: its scene scores rank the scenes, its maps and peaks are the search's
    assert localise_main(["--yaml_path", "demo", "--step", "256", "--out", str(local), "--query", QUERIES[0],
                          "--progress", "none", *[f"--image={image}" for image in images]]) == 0
    localised = {entry["image"]: entry for entry in read_json(local / "summary.json")["results"]}
    expected = sorted(images, key=lambda image: -localised[image]["scene_score"])[:2]
    assert [Path(p).name for p in results["HITS"]] == ["hits_q0.geojson"]
    hits = read_json(results["HITS"][0])["features"]
    assert [(hit["properties"]["scene"], hit["properties"]["rank"]) for hit in hits] == [(expected[0], 1), (expected[1], 2)]
    best = read_json(local / localised[expected[0]]["files"]["peaks"])["features"][0]
    assert hits[0]["geometry"] == best["geometry"]
    assert [Path(p).name for p in results["PROBMAPS"]] == [localised[image]["files"]["probmap"] for image in expected]
    for image, probmap, peaks in zip(expected, results["PROBMAPS"], results["PEAKS"]):
        np.testing.assert_array_equal(read_band(probmap), read_band(local / localised[image]["files"]["probmap"]))
        assert [feature["geometry"] for feature in read_json(peaks)["features"]] == \
            [feature["geometry"] for feature in read_json(local / localised[image]["files"]["peaks"])["features"]]


@needs_qgis
def test_an_unset_or_wrong_selo_bin_is_one_line(qgis, tmp_path):
    scene = write_scene(tmp_path / "scene.tif", seed=1)
    parameters = [f"INPUT={scene}", f"QUERIES={QUERIES[0]}", f"OUTPUT_FOLDER={tmp_path / 'out'}"]
    unset = qgis("run", "selo:localise", "--", *parameters)
    assert unset.returncode != 0 and "SELO_BIN is not set: set SELO_BIN (Processing > Options > Providers > SeLo" \
        in unset.stderr
    wrong = qgis("run", "selo:localise", "--", *parameters, SELO_BIN=str(tmp_path / "nowhere"))
    assert wrong.returncode != 0 and f"SELO_BIN={tmp_path / 'nowhere'}: no such folder or file" in wrong.stderr
    # the provider's setting, as Processing stores it, is read when the environment variable is not set
    with open(qgis.profile_ini(), "a", encoding="utf-8") as ini:
        ini.write(f"\n[Processing]\nConfiguration\\SELO_BIN={tmp_path}\n")
    empty = qgis("run", "selo:localise", "--", *parameters)
    assert empty.returncode != 0 and f"SELO_BIN={tmp_path}: no selo-localise command in {tmp_path}" in empty.stderr
    assert not (tmp_path / "out").exists()
    # a command that refuses its arguments: its one line is the algorithm's error
    refused = qgis("run", "selo:localise", "--", *parameters, "STEPS=256_x", SELO_BIN=str(SELO_BIN))
    assert refused.returncode != 0
    assert "selo-localise: error: argument --step: expected positive integers joined by '_'" in refused.stderr


@needs_qgis
def test_make_qgis_plugin_builds_a_zip_qgis_installs(tmp_path):
    zip_path = tmp_path / "selo-qgis.zip"
    subprocess.run(["make", "-s", "qgis-plugin", f"QGIS_ZIP={zip_path}", f"PYTHON={sys.executable}"], cwd=REPO_ROOT,
                   check=True, timeout=60)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert all(name.startswith("selo/") for name in names) and "selo/metadata.txt" in names
        assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
        assert "def classFactory(iface)" in archive.read("selo/__init__.py").decode()
        metadata = archive.read("selo/metadata.txt").decode().splitlines()
        assert {"hasProcessingProvider=yes", "qgisMinimumVersion=3.22"} <= set(metadata)
        archive.extractall(tmp_path / "plugins")  # what Install from ZIP does, into the profile's plugin folder
    installed = QgisProcess(tmp_path / "home", plugin_path=tmp_path / "plugins")
    assert "selo:localise\tLocalise" in installed("list").stdout


# ---- the command runner, without QGIS -----------------------------------------------------------------------

class Feedback:
    """What the runner calls of a ``QgsProcessingFeedback``, recorded; Cancel pressed at the first progress
    line of ``cancel_at`` when given."""

    def __init__(self, cancel_at: str | None = None):
        self.cancel_at = cancel_at
        self.canceled = False
        self.progress: list[float] = []
        self.log: list[tuple[str, str]] = []

    def isCanceled(self):  # noqa: N802 - QGIS's names
        return self.canceled

    def setProgress(self, percent):  # noqa: N802
        self.progress.append(percent)

    def setProgressText(self, text):  # noqa: N802
        self.canceled = self.canceled or (self.cancel_at is not None and text.startswith(f"SeLo: {self.cancel_at}"))

    def pushInfo(self, text):  # noqa: N802
        self.log.append(("info", text))

    def pushWarning(self, text):  # noqa: N802
        self.log.append(("warning", text))

    def reportError(self, text, fatalError=False):  # noqa: N802
        self.log.append(("error", text))


def test_progress_lines_make_one_percentage():
    progress = ProgressLines()
    line = {"event": "progress", "unit": "x"}
    assert progress.read({**line, "stage": "queries", "done": 0, "total": 4, "depth": 0}) == 0
    assert progress.read({**line, "stage": "tiles", "done": 5, "total": 10, "depth": 1}) == 12.5
    assert progress.read({**line, "stage": "queries", "done": 1, "total": 4, "depth": 0}) == 25
    assert progress.read({**line, "stage": "queries", "done": 4, "total": 4, "depth": 0}) == 100


def test_commands_are_found_in_the_bin_folder_or_beside_its_python(tmp_path):
    assert find_command("selo-localise", str(SELO_BIN)) == str(SELO_BIN / "selo-localise")
    assert find_command("selo-search", sys.executable) == str(SELO_BIN / "selo-search")
    with pytest.raises(CommandError, match=f"^SELO_BIN={tmp_path}: no selo-index command in {tmp_path} "):
        find_command("selo-index", str(tmp_path))
    with pytest.raises(CommandError, match="^SELO_BIN is not set: "):
        find_command("selo-index", "")


def test_queries_are_numbered_as_the_commands_number_them():
    assert distinct_queries(" a river\n\na lake \na river\n") == ["a river", "a lake"]


def test_cancel_stops_the_command_as_ctrl_c_and_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", command_env()["PYTHONPATH"])  # the command imports the code under test
    scene = write_scene(tmp_path / "scene.tif", seed=5, height=900, width=1200)
    argv = [str(SELO_BIN / "selo-localise"), "--yaml_path", "demo", "--image", str(scene), "--out", str(tmp_path / "out"),
            *[f"--query=a small dark lake number {k}" for k in range(30)]]
    cancelled = Feedback(cancel_at="queries 2/")
    with pytest.raises(CommandError, match="^selo-localise cancelled: the outputs written so far are whole"):
        run_command(argv, cancelled)
    kept = read_json(tmp_path / "out" / "summary.json")["results"]
    assert 2 <= len(kept) < 30  # stopped mid-run, at a query's end: the summary lists whole sets only
    for entry in kept:
        assert all((tmp_path / "out" / name).is_file() for name in entry["files"].values())
    resumed = Feedback()
    assert run_command(argv, resumed) == 0
    assert len(read_json(tmp_path / "out" / "summary.json")["results"]) == 30
    assert resumed.progress[-1] == 100 and ("info", "30 map(s) in " + str(tmp_path / "out") + " (0 tiles encoded)") \
        in resumed.log  # the tile vectors of the cancelled run were kept: none encoded again


def test_progress_json_is_one_line_per_step_on_stderr(tmp_path, capsys):
    scene = write_scene(tmp_path / "scene.tif", seed=2)
    assert localise_main(["--yaml_path", "demo", "--image", str(scene), "--out", str(tmp_path / "out"),
                          "--query", QUERIES[0], "--query", QUERIES[1], "--progress", "json"]) == 0
    err = capsys.readouterr().err
    lines = progress_lines(err)
    assert [(line["stage"], line["done"]) for line in lines if line["depth"] == 0] == [("queries", 0), ("queries", 1),
                                                                                      ("queries", 2)]
    tiles = [line for line in lines if line["stage"] == "tiles"]
    assert tiles[0]["done"] == 0 and tiles[-1]["done"] == tiles[-1]["total"] > 0 and tiles[-1]["depth"] == 1
    assert "\r" not in err  # no bar drawn


@needs_qgis
@pytest.mark.slow  # QGIS desktop started under Xvfb
@pytest.mark.skipif(not shutil.which("xvfb-run"), reason="xvfb-run not found: apt-get install xvfb (.ci/run does)")
def test_the_desktop_shows_the_scene_its_styled_probmap_and_its_peaks(tmp_path, capfd, monkeypatch):
    from make_screenshot import main as screenshot  # qgis_plugin/make_screenshot.py

    monkeypatch.setenv("PYTHONPATH", command_env()["PYTHONPATH"])  # QGIS runs the code under test's commands
    shot = tmp_path / "qgis-desktop.png"
    screenshot(str(shot))
    assert "layers: ['SeLo: four tennis courts next to a green lawn', " \
           "'SeLo: four tennis courts next to a green lawn (peaks)', 'tennis.tif']" in capfd.readouterr().out
    with Image.open(shot) as image:
        assert image.size == (1600, 1000) and shot.stat().st_size < 300_000
        canvas = np.asarray(image.convert("RGB"))[150:900, 500:1550].reshape(-1, 3).astype(int)
    # the probmap over the scene: the ramp's reds where the courts are and its blues elsewhere (JET at 65 %)
    reddish = (canvas[:, 0] > 150) & (canvas[:, 2] < 90)
    bluish = (canvas[:, 2] > 120) & (canvas[:, 0] < 60)
    assert reddish.mean() > 0.05 and bluish.mean() > 0.05
