"""Code identity: the digest of modules' source and of every project (or plug-in) module they import,
transitively, read from their syntax trees, with the versions of the libraries they import."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import sys
from functools import lru_cache

from predict.provenance.digests import _stat_key, digest_of, file_digest

PROJECT_PACKAGES = ("predict", "evaluations")


def _module_file(name: str) -> str | None:
    """The source file of module ``name`` without importing it (None for built-ins, namespaces, C code)."""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
        origin = spec.origin if spec is not None else None
    return origin if origin and origin.endswith(".py") and os.path.isfile(origin) else None


@lru_cache(maxsize=4096)
def _real(path: str) -> str:
    """``os.path.realpath``, remembered: the code identity asks it of the same few files many times."""
    return os.path.realpath(path)


def _is_package(path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


_parsed: dict[str, tuple[tuple, list]] = {}  # real path -> (stat key, its import statements)


def _import_nodes(path: str) -> list:
    """The import statements of a source file, parsed again only when its stat data changes."""
    stat_key = _stat_key(os.stat(path))
    kept = _parsed.get(path)
    if kept and kept[0] == stat_key:
        return kept[1]
    with open(path, "rb") as f:
        nodes = [node for node in ast.walk(ast.parse(f.read(), path)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    _parsed[path] = (stat_key, nodes)
    return nodes


def _imported_names(path: str, module: str, roots: set[str]) -> set[str]:
    """Names a module's source imports (anywhere in it, functions included), relative imports resolved;
    for ``from X import Y`` also ``X.Y`` when ``X`` is a package of ``roots`` (Y may be a submodule; a
    library is never imported to find out)."""
    package = module if _is_package(path) else module.rpartition(".")[0]
    names = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            base_file = _own_module(base, roots) if base else None
            if base_file and _is_package(base_file):
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in names if name}


def _root_of(name: str) -> str | None:
    """The folder whose modules count as ``name``'s own code: its top-level package's folder, or the folder
    of a top-level module (a plug-in's own folder)."""
    top = name.split(".")[0]
    path = _module_file(top)
    if path is None:
        return None
    return os.path.dirname(path) if _is_package(path) else os.path.dirname(_real(path))


def _own_module(name: str, roots: set[str]) -> str | None:
    """``name``'s source file when it lies under one of ``roots`` (checked on its top-level package first,
    so that a library is never imported to find out)."""
    top = name.split(".")[0]
    top_path = _module_file(top)
    real_top = _real(top_path) if top_path else None
    if real_top is None or not any(real_top.startswith(root + os.sep) for root in roots):
        return None
    path = _module_file(name)
    return _real(path) if path else None


@lru_cache(maxsize=1)
def _project_roots() -> frozenset[str]:
    return frozenset(_real(root) for root in map(_root_of, PROJECT_PACKAGES) if root)


def code_files(module_names, roots=()) -> tuple[dict[str, str], set[str]]:
    """The source files of ``module_names`` and of every module they import, transitively, that lies in
    the project or in ``roots`` (a plug-in's folders): ``({module: real path}, {top-level libraries})``."""
    roots = set(_project_roots()) | {os.path.realpath(root) for root in roots}
    files: dict[str, str] = {}
    libraries: set[str] = set()
    named = set(module_names)
    todo = list(module_names)
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _own_module(name, roots)
        if path is None and name in named:  # asked for by name: its own source counts wherever it lies
            path = _module_file(name)
        if path is None:
            top = name.split(".")[0]
            if top not in sys.builtin_module_names and top not in sys.stdlib_module_names:
                libraries.add(top)
            continue
        files[name] = _real(path)
        todo.extend(_imported_names(path, name, roots))
    own_tops = {name.split(".")[0] for name in files}
    return files, libraries - own_tops


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    """``{top-level import name: [distribution names]}`` from each installed distribution's
    ``top_level.txt``, or else the first parts of the paths its ``RECORD`` lists (read as text: the
    standard library's ``packages_distributions`` builds a path object per file, seconds for a large
    environment)."""
    names: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        text = dist.read_text("top_level.txt")
        if text is None:
            record = dist.read_text("RECORD") or ""
            tops = {line.split(",")[0].split("/")[0] for line in record.splitlines()}
            text = "\n".join(top[:-3] if top.endswith(".py") else top for top in tops
                             if not top.endswith((".dist-info", ".data", ".pth")) and top and top != "..")
        for top in text.split():
            names.setdefault(top, []).append(dist.metadata["Name"])
    return names


@lru_cache(maxsize=None)
def _library_versions(libraries: frozenset[str]) -> dict[str, str]:
    """Installed distribution versions of top-level import names (``cv2`` -> opencv-python-headless ...),
    as this process found them."""
    versions = {}
    for name in sorted(libraries):
        for dist in sorted(_distributions().get(name, [])):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return versions


def code_digest(*module_names: str, roots=()) -> str:
    """Digest of the source of ``module_names`` and every project (or ``roots``) module they import,
    transitively, with the versions of the libraries they import. Files are named by module, so another
    checkout of the same code agrees.

    >>> code_digest("predict.core.tiling") == code_digest("predict.core.tiling") != code_digest("predict.core.stretch")
    True
    """
    files, libraries = code_files(module_names, roots)
    return digest_of({name: file_digest(path) for name, path in files.items()}, _library_versions(frozenset(libraries)))
