"""``make qgis-screenshot``: QGIS desktop under Xvfb with a demo scene, its SeLo probmap and its peaks
(:file:`desktop_screenshot.py`, run by QGIS), saved as a small PNG (256 colours) for the docs.

    .venv/bin/python qgis_plugin/make_screenshot.py docs/images/qgis-desktop.png

Run with the environment's python: its ``bin`` is the plugin's ``SELO_BIN``; the scene is a synthetic one of
the demo encoder's world (four tennis courts beside a lawn), in UTM; QGIS gets a profile of its own.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from predict.demo.synthetic import generate_scene

PLUGINS = Path(__file__).resolve().parent
SCENE_SEED, SCENE_SIZE = 4, (900, 1200)  # a scene with four tennis courts, a lawn, a lake
QUERY = "four tennis courts next to a green lawn"
SCREEN = "1600x1000x24"
COLOURS = 256  # a PNG of about 150 KB instead of 700


def write_scene(path: Path) -> None:
    height, width = SCENE_SIZE
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.5, 0.5)) as dst:
        dst.write(np.moveaxis(generate_scene(SCENE_SEED, height, width).rgb, -1, 0))


def take(shot: Path, work: Path) -> None:
    """QGIS run under Xvfb until it saves the raw screenshot ``shot``."""
    write_scene(work / "tennis.tif")
    home = work / "home"
    home.mkdir(mode=0o700)
    bin_folder = os.path.dirname(sys.executable)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "QGIS_PLUGINPATH": str(PLUGINS),
           "PYTHONDONTWRITEBYTECODE": "1", "SELO_BIN": bin_folder, "SELO_SCENE": str(work / "tennis.tif"),
           "SELO_QUERY": QUERY, "SELO_OUT": str(work / "maps"), "SELO_SHOT": str(shot),
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_folder)}
    subprocess.run(["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--noversioncheck", "--nologo", "--code",
                    str(PLUGINS / "desktop_screenshot.py")], env=env, check=True, timeout=300)
    if not shot.is_file():
        raise SystemExit(f"{shot}: QGIS saved no screenshot")


def main(out: str) -> None:
    with tempfile.TemporaryDirectory(prefix="selo-qgis-shot-") as work:
        raw = Path(work) / "raw.png"
        take(raw, Path(work))
        image = Image.open(raw).convert("RGB")
        image.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"{out}: QGIS desktop, {QUERY!r} on a demo scene ({os.path.getsize(out) // 1024} KB)")


if __name__ == "__main__":
    main(sys.argv[1])
