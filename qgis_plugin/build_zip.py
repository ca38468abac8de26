"""``make qgis-plugin``: the plugin as QGIS's "Install from ZIP" takes it, ``selo/`` at the top of the zip
(without compiled files).

    python3 qgis_plugin/build_zip.py dist/selo-qgis.zip
"""
import os
import sys
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "selo"


def build(zip_path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(zip_path)), exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                archive.write(path, path.relative_to(PLUGIN.parent).as_posix())


if __name__ == "__main__":
    build(sys.argv[1])
