"""What identifies an encoder's tile vectors: the parts that change them, and the store's key.

:func:`encoder_identity` is a dict (recorded in ``metrics.json`` and compared part by part), and
:func:`identity_digest` its short digest (in file names):

- ``class``: ``module:QualName`` of the encoder;
- ``source``: digest of the code that computes the vectors. For a built-in encoder the package version and
  every source file of ``predict/encoders`` and ``predict/layers``; for a plug-in the files of the classes
  of its MRO (its own module and the base class);
- ``tile_size`` and ``precision`` (the one actually run, after a CPU's fp16 -> fp32 fallback);
- ``options``: the yaml without what only steers execution (``model.batch_size``, the yaml's own path),
  every file or folder it names replaced by a digest of its content, so a copied yaml or a moved
  checkpoint keeps its vectors and a retrained one does not. Unknown keys (a plug-in's own) are kept.

Weight digests (sha256) are memoised in ``$XDG_CACHE_HOME/selo/digests.json`` (``~/.cache`` by default),
keyed by the file's real path, size and mtime, so a large checkpoint is hashed once, not on every run.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import inspect
import json
import os
from pathlib import Path

from predict.io.atomic import write_atomically

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # predict/
EXECUTION_ONLY = {"_yaml_path": None, "model": {"batch_size": None}}  # option keys that do not change vectors
CHUNK = 1 << 22  # 4 MiB


def digest_memo_path() -> Path:
    """The memo of file digests: ``$XDG_CACHE_HOME/selo/digests.json`` (``~/.cache/selo/...``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "selo" / "digests.json"


def _read_memo(path: Path) -> dict:
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def content_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (4 MiB chunks), memoised by (real path, size, mtime_ns).

    A memo that cannot be written (read-only home) only costs the hashing again next time.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    memo_key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = digest_memo_path()
    memo = _read_memo(memo_path)
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    memo = _read_memo(memo_path)  # re-read: another process may have added entries meanwhile
    memo[memo_key] = digest.hexdigest()
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(memo_path, json.dumps(memo, indent=0, sort_keys=True))
    except OSError:
        pass  # the memo only saves hashing again; an unwritable cache folder costs time, not correctness
    return memo[memo_key]


def path_digest(path: str) -> str:
    """``sha256:<hex>`` of a file, or of a folder's files (names and contents, not recursive)."""
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for name in sorted(os.listdir(path)):
            if os.path.isfile(os.path.join(path, name)):
                digest.update(f"{name}\0{content_digest(os.path.join(path, name))}\0".encode())
        return f"sha256:{digest.hexdigest()}"
    return f"sha256:{content_digest(path)}"


def vector_options(options: dict) -> dict:
    """``options`` without :data:`EXECUTION_ONLY` keys, every existing file/folder path as its content digest.

    >>> vector_options({"model": {"name": "demo", "batch_size": 8}, "_yaml_path": "/x/a.yaml"})
    {'model': {'name': 'demo'}}
    """
    def strip(node, drop):
        if not isinstance(node, dict):
            return node
        return {key: strip(value, (drop or {}).get(key)) for key, value in node.items()
                if not (drop and key in drop and drop[key] is None)}

    def by_content(node):
        if isinstance(node, dict):
            return {key: by_content(value) for key, value in node.items()}
        if isinstance(node, list):
            return [by_content(value) for value in node]
        if isinstance(node, str) and os.path.isabs(os.path.expanduser(node)) and os.path.exists(node):
            return path_digest(node)
        return node

    return by_content(strip(copy.deepcopy(options), EXECUTION_ONLY))


def _files_digest(paths) -> str:
    """sha256 over the names and bytes of small files (source code: read directly, not memoised); a name is
    relative to the package, or the bare file name, so that another checkout of the same code agrees."""
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        inside = Path(path).is_relative_to(PACKAGE_DIR)
        name = str(Path(path).relative_to(PACKAGE_DIR)) if inside else os.path.basename(path)
        with open(path, "rb") as f:
            digest.update(f"{name}\0".encode() + f.read() + b"\0")
    return digest.hexdigest()


def source_digest(cls: type) -> str:
    """Digest of the code behind ``cls``'s vectors (see the module docstring)."""
    files = []
    builtin = cls.__module__.split(".")[0] == "predict"
    for klass in cls.__mro__[:-1]:  # all but object
        try:
            files.append(os.path.realpath(inspect.getsourcefile(klass)))
        except TypeError:  # defined in a built-in or interactively: nothing to hash
            pass
    version = ""
    if builtin:
        files += [str(p) for folder in ("encoders", "layers") for p in (PACKAGE_DIR / folder).glob("*.py")]
        try:
            version = importlib.metadata.version("selo")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return f"{version}:{_files_digest(files)}" if version else _files_digest(files)


def encoder_identity(encoder) -> dict:
    """The parts that determine ``encoder``'s tile vectors (see the module docstring); JSON-ready."""
    cls = type(encoder)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "source": source_digest(cls),
            "tile_size": getattr(encoder, "tile_size", None), "precision": getattr(encoder, "precision", None),
            "options": json.loads(json.dumps(vector_options(getattr(encoder, "options", None) or {}),
                                             sort_keys=True, default=str))}


def identity_digest(identity: dict) -> str:
    """16 hex digits of sha256 over ``identity``'s canonical JSON.

    >>> identity_digest({"a": 1}) == identity_digest({"a": 1}) != identity_digest({"a": 2})
    True
    """
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
