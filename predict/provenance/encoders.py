"""Encoder identity: what determines an encoder's tile vectors (class, code, every file of a plug-in,
tile size, precision, options with the files they name by content), and an image's content key."""
from __future__ import annotations

import json
import os
import weakref

from predict.core import tiling
from predict.provenance.code import PROJECT_PACKAGES, _is_package, _module_file, _root_of, code_digest
from predict.provenance.digests import canonical_json, dataset_digest, digest_of, file_digest, short
from predict.resources import project_root

# Option keys left out of the options' identity: the batch and the int8 floor (a gate) change no vector; the
# runtime and precision asked for are in the identity as they run (encoder_identity's "runtime", "precision":
# an fp16 asked for on a CPU runs fp32, an "auto" runs one runtime).
EXECUTION_ONLY = {"_yaml_path": None,
                  "model": {"batch_size": None, "runtime": None, "precision": None, "int8_min_cosine": None}}
TILE_CODE = (tiling.__name__,)  # cuts and resizes the tiles the encoder sees
# chooses and runs the image network (torch, or an exported model): named, not imported (it is a layer above)
RUNTIME_CODE = ("predict.encoders.runtimes",)


def _candidates(path: str, yaml_dir: str | None) -> list[str]:
    """Where a path an option names can be, exactly as the encoder resolves it: as is when absolute; else
    against the yaml's folder, then the folder holding the package (the yaml reader's order:
    :func:`predict.encoders.registry.resolve_path`). Never the current folder: a folder named like a
    preset where a command happens to run is no input of the encoder."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return [path]
    bases = [yaml_dir, str(project_root())]
    return list(dict.fromkeys(os.path.join(base, path) for base in bases if base))


RUN_FOLDER_MARKS = (".lock", ".write.lock")  # a folder holding one is written by runs: outputs, no input


def _folder_files(root: str, *, recursive: bool = True) -> dict[str, str]:
    """``{relative name: real path}`` of the files under ``root`` (only those directly in it when not
    ``recursive``): compiled caches (``__pycache__``, ``.pyc``), hidden entries and the folders runs write
    into (:data:`RUN_FOLDER_MARKS`) left out, since none of them is an input."""
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if recursive and d != "__pycache__" and not d.startswith(".")
                         and not any(os.path.exists(os.path.join(folder, d, mark)) for mark in RUN_FOLDER_MARKS))
        for name in sorted(names):
            full = os.path.join(folder, name)
            if not name.startswith(".") and not name.endswith(".pyc") and os.path.isfile(full):
                files[os.path.relpath(full, root)] = full
    return files


def path_digest(path: str) -> str:
    """``sha256:<hex>`` of a file, or of a folder's files (relative names and contents, recursively; see
    :func:`_folder_files` for what is left out)."""
    if os.path.isdir(path):
        return f"sha256:{digest_of({name: file_digest(full) for name, full in _folder_files(path).items()})}"
    return f"sha256:{file_digest(path)}"


def _strip(node, drop):
    if not isinstance(node, dict):
        return node
    return {key: _strip(value, (drop or {}).get(key)) for key, value in node.items()
            if not (drop and key in drop and drop[key] is None)}


def vector_options(options: dict) -> dict:
    """``options`` without :data:`EXECUTION_ONLY` keys, every string that names an existing file or folder
    (see :func:`_candidates`) replaced by its content digest (a list of them where several places hold one).

    >>> vector_options({"model": {"name": "demo", "batch_size": 8}, "_yaml_path": "/x/a.yaml"})
    {'model': {'name': 'demo'}}
    """
    yaml_dir = os.path.dirname(options["_yaml_path"]) if isinstance(options.get("_yaml_path"), str) else None

    def by_content(node):
        if isinstance(node, dict):
            return {key: by_content(value) for key, value in node.items()}
        if isinstance(node, list):
            return [by_content(value) for value in node]
        if isinstance(node, str) and node.strip() and "\n" not in node:
            found = [path_digest(p) for p in _candidates(node, yaml_dir) if os.path.exists(p)]
            if found:
                return found[0] if len(set(found)) == 1 else found
        return node

    return json.loads(canonical_json(by_content(_strip(options, EXECUTION_ONLY))))


LIBRARY_FOLDERS = ("site-packages", "dist-packages")


def encoder_roots(cls: type) -> set[str]:
    """The folders whose modules count as a plug-in's own code: those of the packages (or top-level
    modules' folders) of the classes of its MRO outside the project; a single module installed among the
    libraries counts alone (its folder is every library's)."""
    roots = set()
    for klass in cls.__mro__[:-1]:
        root = _root_of(klass.__module__)
        if root and klass.__module__.split(".")[0] not in PROJECT_PACKAGES \
                and os.path.basename(root) not in LIBRARY_FOLDERS:
            roots.add(root)
    return roots


def plugin_files_digest(cls: type) -> str | None:
    """Digest of every file of the plug-in that defines ``cls``, code and data: the whole folder of its
    package, or for a top-level module the files directly in its folder (not below: such a folder is often
    a workspace of data and outputs; a plug-in with data in subfolders is a package). What its import
    statements name is not enough: a module loaded with ``importlib`` or weights found through
    ``__file__`` are its inputs too. None for a class of the project. See :func:`_folder_files`.
    """
    entries = {}
    for klass in cls.__mro__[:-1]:
        top = klass.__module__.split(".")[0]
        root = _root_of(klass.__module__)
        if top in PROJECT_PACKAGES or root is None or top in entries:
            continue
        if os.path.basename(root) in LIBRARY_FOLDERS:  # a lone module among the libraries: its own file
            entries[top] = {os.path.basename(path): file_digest(path) for path in filter(None, [_module_file(top)])}
        else:
            package = _is_package(_module_file(top) or "")
            entries[top] = {name: file_digest(full) for name, full in _folder_files(root, recursive=package).items()}
    return digest_of(entries) if entries else None


_identities: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _network_identity(encoder) -> dict:
    """Every field of :func:`encoder_identity` but the runtime and precision."""
    cls = type(encoder)
    modules = [klass.__module__ for klass in cls.__mro__[:-1] if klass.__module__ != "builtins"]
    return {"class": f"{cls.__module__}:{cls.__qualname__}",
            "code": code_digest(*modules, *TILE_CODE, *RUNTIME_CODE, roots=encoder_roots(cls)),
            "plugin_files": plugin_files_digest(cls), "tile_size": getattr(encoder, "tile_size", None),
            "options": vector_options(getattr(encoder, "options", None) or {})}


def network_key(encoder) -> str:
    """Digest of what determines ``encoder``'s image network in fp32 (its class, code, plug-in files, tile
    size and options, precision and runtime left out): the key of its exported ONNX model."""
    return digest_of(_network_identity(encoder))


def runtime_identity(encoder) -> dict:
    """What runs ``encoder``'s image network: ``{"runtime": "torch"}``, or the choice
    :func:`predict.encoders.runtimes.attach_runtime` made (runtime, precision, the exported model's key, the
    calibration of an int8 model and the cosines it measured)."""
    choice = getattr(encoder, "runtime_choice", None)
    return dict(choice) if isinstance(choice, dict) else {"runtime": "torch"}


def encoder_identity(encoder) -> dict:
    """What determines ``encoder``'s tile vectors (JSON-ready): ``class``, ``code`` (digest of its classes'
    modules and everything they import from the project or the plug-in's folder, the tile cutting and the
    runtimes' code, :data:`RUNTIME_CODE`),
    ``plugin_files`` (every file of a plug-in's folder or package: :func:`plugin_files_digest`),
    ``tile_size``, ``precision``, ``runtime`` (:func:`runtime_identity`) and ``options`` (see
    :func:`vector_options`).

    Taken once per encoder object, when first asked (``load_encoder`` asks as it builds one, once its runtime
    is chosen): the code that runs is the code imported then, and the weights those read then.
    """
    try:
        return _identities[encoder]
    except (KeyError, TypeError):
        pass
    identity = {**_network_identity(encoder), "precision": getattr(encoder, "precision", None),
                "runtime": runtime_identity(encoder)}
    identity = json.loads(canonical_json(identity))
    try:
        _identities[encoder] = identity
    except TypeError:  # not weak-referenceable: taken again on each call
        pass
    return identity


def vectors_key(encoder) -> str:
    """``<name>-<16 hex>``: the key space of ``encoder``'s tile vectors (in their file names)."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(getattr(encoder, "name", "encoder")))
    return f"{name}-{short(digest_of(encoder_identity(encoder)))}"


def image_key(path: str | os.PathLike, decoder: str = "predict.io.images", *, sidecars=(), **choices) -> str:
    """Content key of the image file at ``path`` as module ``decoder`` reads it with ``choices`` (bands,
    stretch...): the bytes of the file and of the ``sidecars`` the decoder reads with it
    (:func:`dataset_digest`), the decoding code and the choices."""
    return digest_of(dataset_digest(path, sidecars), code_digest(decoder), choices)
