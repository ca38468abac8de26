"""The files the package ships, read through :mod:`importlib.resources`, and the built-in presets by name.

Package data of ``predict`` (``pyproject.toml``): the encoder presets ``options/<folder>/<name>.yaml``, the
demo checkpoint ``checkpoints/demo_encoder.pth``, the vocabularies ``vocab/*.json`` (the RSITMD one is a
download, see ``vocab/README.md``) and the explorer's page ``web/static/``. They are found beside the code
wherever the package lives (a checkout, or ``site-packages`` after ``pip install .``), never through the
current folder.

**Preset names.** Wherever an encoder yaml is taken (``--yaml_path`` of every command, ``load_encoder``), a
built-in preset may be named instead of a path. A preset ``options/<folder>/<stem>.yaml`` answers to
``<folder>/<stem>`` and to ``<stem>``, and a stem ending in ``_encoder`` also to the stem without it:
``demo`` (= ``demo_encoder`` = ``demo/demo_encoder``), ``demo_random``, ``RSITMD_AMFMN``,
``GeoRSCLIP_ViT-B-32``... A file that exists at the given path wins over a preset of the same name.

Relative paths inside a yaml (checkpoints, vocabularies) resolve against the yaml's folder, then against
:func:`project_root`, the folder holding the ``predict`` package: a preset's
``predict/checkpoints/demo_encoder.pth`` is the package's own file, in a checkout or installed.
"""
from __future__ import annotations

import atexit
import os
from contextlib import ExitStack
from functools import lru_cache
from importlib.resources import as_file, files
from pathlib import Path

PACKAGE = "predict"
PRESET_FOLDER = "options"
_extracted = ExitStack()  # package data copied out of an archive (a zipped package), removed at exit
atexit.register(_extracted.close)


def package_path(*parts: str) -> Path:
    """The file or folder ``parts`` of the ``predict`` package on the file system.

    >>> package_path("web", "static", "index.html").is_file()
    True
    """
    resource = files(PACKAGE).joinpath(*parts)
    if isinstance(resource, Path):
        return resource
    return _extracted.enter_context(as_file(resource))  # a package inside an archive: a temporary copy


def project_root() -> Path:
    """The folder holding the ``predict`` package (the checkout's root, or ``site-packages`` once
    installed): relative paths a yaml names are tried there after the yaml's own folder."""
    return package_path().resolve().parent


@lru_cache(maxsize=1)
def _preset_files() -> tuple[tuple[str, Path], ...]:
    """``(folder/stem, path)`` of every packaged preset, sorted."""
    found = [(f"{folder.name}/{item.name[:-len('.yaml')]}", package_path(PRESET_FOLDER, folder.name, item.name))
             for folder in files(PACKAGE).joinpath(PRESET_FOLDER).iterdir() if folder.is_dir()
             for item in folder.iterdir() if item.is_file() and item.name.endswith(".yaml")]
    return tuple(sorted(found, key=lambda entry: entry[0].lower()))


def preset_aliases(qualified: str) -> list[str]:
    """The names a preset ``folder/stem`` answers to, the short one first.

    >>> preset_aliases("demo/demo_encoder"), preset_aliases("RSITMD/RSITMD_AMFMN")
    (['demo', 'demo_encoder', 'demo/demo_encoder'], ['RSITMD_AMFMN', 'RSITMD/RSITMD_AMFMN'])
    """
    stem = qualified.rsplit("/", 1)[-1]
    short = [stem[:-len("_encoder")]] if stem.endswith("_encoder") and stem != "_encoder" else []
    return [*short, stem, qualified]


@lru_cache(maxsize=1)
def presets() -> dict[str, Path]:
    """Every name a packaged preset answers to -> its yaml (see the module's docstring); a name two presets
    would share is left to the ``folder/stem`` form."""
    names: dict[str, list[Path]] = {}
    for qualified, path in _preset_files():
        for name in preset_aliases(qualified):
            names.setdefault(name, []).append(path)
    return {name: paths[0] for name, paths in names.items() if len(paths) == 1}


def preset_names() -> list[str]:
    """The short name of each packaged preset, in the order of their files (``demo``, ``demo_random``...).

    >>> "demo" in preset_names() and "RSITMD_AMFMN" in preset_names()
    True
    """
    table = presets()
    return [next(name for name in preset_aliases(qualified) if table.get(name) == path)
            for qualified, path in _preset_files()]


def find_yaml(yaml_path: str | os.PathLike) -> Path:
    """The encoder yaml ``yaml_path`` stands for: an existing file as given, else the preset of that name,
    else the path as given (its reader reports it missing, see :func:`missing_yaml_message`).

    >>> find_yaml("demo") == package_path("options", "demo", "demo_encoder.yaml")
    True
    """
    path = Path(os.path.expanduser(str(yaml_path)))
    if path.is_file():
        return path
    return presets().get(str(yaml_path), path)


def looks_like_name(text: str) -> bool:
    """Whether ``text`` reads as a preset name rather than a path: no folder separator, no yaml suffix.

    >>> looks_like_name("demo"), looks_like_name("my/encoder.yaml"), looks_like_name("x.yml")
    (True, False, False)
    """
    return not any(sep in text for sep in ("/", os.sep)) and not text.lower().endswith((".yaml", ".yml"))


def missing_yaml_message(yaml_path: str | os.PathLike) -> str:
    """One line for a yaml that is neither a file nor a preset; the presets listed when it reads as a name."""
    text = str(yaml_path)
    if looks_like_name(text):
        return (f"{text}: encoder yaml not found, nor a built-in preset of that name "
                f"(presets: {', '.join(preset_names())})")
    return f"{text}: encoder yaml not found"


def yaml_help(default: str | None = None) -> str:
    """The ``--yaml_path`` help of the commands: what it takes and the preset names."""
    text = (f"encoder yaml (model.name picks the encoder), or a built-in preset by name: {', '.join(preset_names())}"
            " (a file of that name wins)")
    return text + (f" (default {default})" if default else "")
