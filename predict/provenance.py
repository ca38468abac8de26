"""Provenance: the one place where every stored thing's content key is derived, and checked before reuse.

Tile vectors, maps, metrics records, ``selo-localise`` outputs, explorer results and archive entries are
each keyed by what produced them: the content of their inputs, their parameters, and the code that ran.
Nothing else in the project invents a signature; every consumer asks this module.

- :func:`file_digest`: sha256 of a file's bytes, the project's one hash of content. Memoised as git's
  index does: a memo entry holds only while the file's device, inode, size, mtime_ns and ctime_ns are all
  unchanged (a rewrite that restores the mtime with ``touch -r`` or ``os.utime`` still moves the ctime),
  and a file changed within :data:`RACY_NS` of its hashing is not memoised (timestamps are coarser than
  the writes that can follow a hash). The same rule in the process and on disk (``digests.sqlite``).
- :func:`digest_of`: sha256 of the canonical JSON of any parts; every key is built from it.
- :func:`code_digest`: the source of modules and of every project or plug-in module they import,
  transitively (read from their syntax trees, so the key does not depend on what else a process loaded),
  with the versions of the libraries they import.
- :func:`encoder_identity` / :func:`vectors_key`: what determines an encoder's tile vectors: class, code
  (its modules and the tile cutting), libraries, tile size, precision, and its options with every file or
  folder they name (relative paths resolved as the yaml reader resolves them) replaced by its content.
- :func:`image_key`, :func:`array_key`: an image's content as a given decoder reads it; for a raster read
  through GDAL, :func:`dataset_digest` counts the sidecars GDAL reads with it (external mask, world file,
  ``.aux.xml``).
- :func:`run_settings`, :func:`sample_identity`, :func:`seal`, :func:`reuse_problem`: the testset run's
  records: what a sample's numbers depend on, a digest over each record, and why one cannot be reused.
- :func:`write_stored`, :func:`seal_file`, :func:`read_stored`, :func:`verify_stored`: every other stored
  file is written with a record (the sha256 of its own bytes, the key of what produced it) and read back
  only verified against both (:class:`StoredFileError`: one line naming the file and the reason).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
import weakref
from functools import lru_cache
from pathlib import Path

import numpy as np

from evaluations.errors import SampleError
from predict.io.atomic import write_atomically
from predict.resources import project_root

PROJECT_PACKAGES = ("predict", "evaluations")
CHUNK = 1 << 22  # 4 MiB
RACY_NS = 2_000_000_000  # a file changed this recently before its hashing is not memoised (see above)
SHORT = 16  # hex digits of the digests shown in names and records
EXECUTION_ONLY = {"_yaml_path": None, "model": {"batch_size": None}}  # option keys that do not change vectors
TILE_CODE = ("predict.core.tiling",)  # cuts and resizes the tiles the encoder sees
# A result is keyed by the code that ran: the module that runs the computation and every project module it
# imports, transitively, not a list of the modules believed to matter (a module it calls would be missed).
MAP_CODE = ("predict.run.engine",)  # the testset run: scores, maps, filters, JPEGs and their evaluation
EVALUATION_CODE = ("predict.run.evaluate",)  # a written map's evaluation, as selo-generate and selo-evaluate run it
NOT_COMPUTED = "not computed yet"


# ---- content digests ---------------------------------------------------------------------------------------

def digest_memo_path() -> Path:
    """The on-disk memo of file digests: ``$XDG_CACHE_HOME/selo/digests.sqlite`` (``~/.cache/...``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "selo" / "digests.sqlite"


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


_memo: dict[str, tuple[tuple, str]] = {}  # real path -> (stat key, sha256): the in-process memo
_memo_lock = threading.Lock()


def _disk_memo(path: Path) -> sqlite3.Connection | None:
    """The memo database (created on first use); None where it cannot be opened (read-only home): the memo
    only saves hashing again, so an unwritable cache costs time, never correctness."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10)
        db.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, "
                   "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT)")
        return db
    except (sqlite3.Error, OSError):  # a file where the folder should be, no home, no permission
        return None


def _disk_lookup(real: str, stat_key: tuple) -> str | None:
    db = _disk_memo(digest_memo_path())
    if db is None:
        return None
    try:
        with db:
            row = db.execute("SELECT dev, ino, size, mtime_ns, ctime_ns, sha256 FROM digests WHERE path = ?",
                             (real,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return row[5] if row and tuple(row[:5]) == stat_key else None


def _disk_store(real: str, stat_key: tuple, digest: str) -> None:
    db = _disk_memo(digest_memo_path())
    if db is None:
        return
    try:
        with db:
            db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)", (real, *stat_key, digest))
    except sqlite3.Error:
        pass  # see _disk_memo
    finally:
        db.close()


DISK_MEMO_BYTES = 1 << 20  # smaller files (source code) are hashed again in each process: cheaper than the memo


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of the bytes of the file at ``path``, memoised while its stat data is unchanged.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     name = os.path.join(folder, "a.txt")
    ...     _ = Path(name).write_text("abc")
    ...     file_digest(name)[:16]
    'ba7816bf8f01cfea'
    """
    real = os.path.realpath(path)
    before = os.stat(real)
    if not stat.S_ISREG(before.st_mode):  # a FIFO would block, /dev/zero never end, a folder not open
        raise SampleError(f"{os.fspath(path)}: not a regular file; its content cannot be keyed")
    stat_key = _stat_key(before)
    with _memo_lock:
        kept = _memo.get(real)
    if kept and kept[0] == stat_key:
        return kept[1]
    large = before.st_size >= DISK_MEMO_BYTES
    if large and (digest := _disk_lookup(real, stat_key)) is not None:
        with _memo_lock:
            _memo[real] = (stat_key, digest)
        return digest
    started = time.time_ns()
    sha = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
    digest = sha.hexdigest()
    # memoised only when the file did not change while it was read, nor just before (racy timestamps)
    if _stat_key(os.stat(real)) == stat_key and max(before.st_mtime_ns, before.st_ctime_ns) < started - RACY_NS:
        with _memo_lock:
            _memo[real] = (stat_key, digest)
        if large:
            _disk_store(real, stat_key, digest)
    return digest


def read_unchanged(path: str | os.PathLike, read, tries: int = 2):
    """``read()`` (a decoder of the file at ``path``) such that the file's digest after it equals its digest
    before it: the bytes decoded are the bytes a key taken now names, never a rewrite that landed between
    decoding and keying. Returns ``read()``'s value; a :class:`~evaluations.errors.SampleError` naming the
    file when it changed during each of ``tries`` reads (being written: read it again once complete)."""
    for _ in range(tries):
        before = file_digest(path)
        value = read()
        if file_digest(path) == before:
            return value
    raise SampleError(f"{os.fspath(path)}: the file changed while it was read ({tries} tries); "
                      "read it again once it is complete")


def dataset_digest(path: str | os.PathLike, sidecars=()) -> str:
    """Digest of an image file with the ``sidecars`` its reader reads beside it (GDAL's: an external mask
    ``scene.tif.msk``, a world file ``scene.pgw``, an ``.aux.xml``...), each named by what follows the
    image's stem, so a copy of the folder elsewhere, or under another stem, agrees; the file's own digest
    when there is none."""
    if not sidecars:
        return file_digest(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    named = {}
    for sidecar in sidecars:
        name = os.path.basename(sidecar)
        named[name[len(stem):] if name.startswith(stem) else name] = file_digest(sidecar)
    return digest_of(file_digest(path), named)


def canonical_json(value) -> str:
    """JSON with sorted keys and no spaces: the form every digest is taken over (non-JSON values by str)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest_of(*parts) -> str:
    """sha256 (hex) of the canonical JSON of ``parts``.

    >>> digest_of({"a": 1, "b": 2}) == digest_of({"b": 2, "a": 1}) != digest_of({"a": 1})
    True
    """
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def short(digest: str) -> str:
    """The first :data:`SHORT` hex digits of a digest, for file names and records."""
    return digest[:SHORT]


def array_key(array: np.ndarray) -> str:
    """Content key of an array: its dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    sha = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    sha.update(array.data)
    return sha.hexdigest()


# ---- stored files: written with their record, read back only verified ---------------------------------------
#
# Every file a run keeps for a later one (tile vectors, scene files, result records, outputs and their
# summaries) is written with a record: the sha256 of its own bytes and the key of what produced it. The
# record lies beside the file (``.<name>.selo``) or in the manifest that lists the file (a folder's
# summary); the file is read back only through :func:`read_stored` or :func:`verify_stored`, which check
# both, so a file changed, truncated, replaced or left by another producer is never used as it is.

RECORD_SUFFIX = ".selo"


class StoredFileError(ValueError):
    """A stored file that cannot be used as it is; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path, self.reason = os.fspath(path), reason


def record_path(path: str | os.PathLike) -> str:
    """Where the record of a stored file lies beside it: ``<folder>/.<name>.selo``.

    >>> record_path("/cache/a.npz")
    '/cache/.a.npz.selo'
    """
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, f".{name}{RECORD_SUFFIX}")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _record(digest: str, size: int, key: str) -> dict:
    return {"sha256": digest, "bytes": size, "key": key}


def write_stored(path: str | os.PathLike, data: bytes | str, key: str, *, beside: bool = True) -> dict:
    """Write ``data`` (text as UTF-8) to ``path`` atomically as a stored file produced by ``key``; returns its record, also
    written beside it unless ``beside`` is False (a manifest then keeps it). The old record goes first:
    a crash between the two writes leaves a file without a record, which is not used.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "a.bin")
    ...     _ = write_stored(path, b"abc", "k1")
    ...     read_stored(path, "k1"), stored_problem(path, "k2")
    (b'abc', 'made by k1, not by what asks for it now (k2)')
    """
    path = os.fspath(path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    if beside:
        _remove(record_path(path))
    write_atomically(path, data)
    record = _record(hashlib.sha256(data).hexdigest(), len(data), key)
    if beside:
        write_atomically(record_path(path), canonical_json(record))
    return record


def seal_file(path: str | os.PathLike, key: str, *, beside: bool = True) -> dict:
    """The record of a file a library wrote whole at ``path`` (a GeoTIFF, a Parquet file), produced by
    ``key``: written beside it unless ``beside`` is False; returned."""
    path = os.fspath(path)
    record = _record(file_digest(path), os.stat(path).st_size, key)
    if beside:
        write_atomically(record_path(path), canonical_json(record))
    return record


def remove_stored(path: str | os.PathLike) -> None:
    """Remove a stored file and its record (either may be missing)."""
    _remove(os.fspath(path))
    _remove(record_path(path))


def _beside(path: str) -> dict:
    try:
        with open(record_path(path), encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise StoredFileError(path, "no record of what made it (written by an older version, or not "
                                    "finished)") from None
    except (OSError, ValueError) as exc:
        raise StoredFileError(path, f"its record {os.path.basename(record_path(path))} is unreadable ({exc})") from None
    if not isinstance(record, dict) or not {"sha256", "key"} <= set(record):
        raise StoredFileError(path, f"its record {os.path.basename(record_path(path))} is not a record")
    return record


def _check_key(path: str, record: dict, key: str | None) -> None:
    if key is not None and record["key"] != key:
        raise StoredFileError(path, f"made by {record['key']}, not by what asks for it now ({key})")


def read_stored(path: str | os.PathLike, key: str | None, record: dict | None = None) -> bytes:
    """The bytes of the stored file at ``path``, verified: its ``record`` (given from a manifest, else the
    one beside it) names ``key`` (None: any producer, for a manifest that is its own root) and the sha256
    of these very bytes, so what is checked is what is used. :class:`StoredFileError` otherwise."""
    path = os.fspath(path)
    record = _beside(path) if record is None else record
    _check_key(path, record, key)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise StoredFileError(path, "missing") from None
    except OSError as exc:
        raise StoredFileError(path, f"unreadable ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise StoredFileError(path, f"its bytes are not those written ({len(data)} bytes now, "
                                    f"{record.get('bytes', '?')} written): changed, truncated or replaced")
    return data


def verify_stored(path: str | os.PathLike, key: str | None, record: dict | None = None) -> dict:
    """Check a stored file that a library will read by path (a GeoTIFF served or reopened) as
    :func:`read_stored` does, through the stat-guarded :func:`file_digest`; returns its record."""
    path = os.fspath(path)
    record = _beside(path) if record is None else record
    _check_key(path, record, key)
    try:
        digest = file_digest(path)
    except FileNotFoundError:
        raise StoredFileError(path, "missing") from None
    except OSError as exc:
        raise StoredFileError(path, f"unreadable ({exc.strerror or exc})") from None
    if digest != record["sha256"]:
        raise StoredFileError(path, "its bytes are not those written: changed, truncated or replaced")
    return record


def stored_problem(path: str | os.PathLike, key: str | None, record: dict | None = None) -> str | None:
    """Why the stored file at ``path`` cannot be used for ``key`` (None when it can)."""
    try:
        verify_stored(path, key, record)
    except StoredFileError as error:
        return error.reason
    return None


# ---- code --------------------------------------------------------------------------------------------------

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


# ---- encoders ----------------------------------------------------------------------------------------------

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


def encoder_identity(encoder) -> dict:
    """What determines ``encoder``'s tile vectors (JSON-ready): ``class``, ``code`` (digest of its classes'
    modules and everything they import from the project or the plug-in's folder, and the tile cutting),
    ``plugin_files`` (every file of a plug-in's folder or package: :func:`plugin_files_digest`),
    ``tile_size``, ``precision`` and ``options`` (see :func:`vector_options`).

    Taken once per encoder object, when first asked (``load_encoder`` asks as it builds one): the code that
    runs is the code imported then, and the weights those read then.
    """
    try:
        return _identities[encoder]
    except (KeyError, TypeError):
        pass
    cls = type(encoder)
    modules = [klass.__module__ for klass in cls.__mro__[:-1] if klass.__module__ != "builtins"]
    identity = {"class": f"{cls.__module__}:{cls.__qualname__}",
                "code": code_digest(*modules, *TILE_CODE, roots=encoder_roots(cls)),
                "plugin_files": plugin_files_digest(cls),
                "tile_size": getattr(encoder, "tile_size", None), "precision": getattr(encoder, "precision", None),
                "options": vector_options(getattr(encoder, "options", None) or {})}
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


# ---- the testset run's records ----------------------------------------------------------------------------

def run_settings(pipeline, seed: int, encoder) -> dict:
    """What every sample of a run shares: ``{"pipeline", "seed", "encoder"}`` (JSON-ready); the seed only
    for a pipeline that shuffles the query (v2)."""
    return json.loads(canonical_json({"pipeline": pipeline.as_dict(), "seed": seed if pipeline.shuffled_copies else None,
                                      "encoder": encoder_identity(encoder)}))


def settings_differences(recorded, current, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two settings dicts.

    >>> settings_differences({"pipeline": {"steps": [256]}, "seed": 0}, {"pipeline": {"steps": [512]}, "seed": 0})
    ['pipeline.steps']
    """
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return [] if recorded == current else [prefix.rstrip(".") or "settings"]
    names = []
    for key in sorted(set(recorded) | set(current), key=str):
        names += settings_differences(recorded.get(key), current.get(key), f"{prefix}{key}.")
    return names


class SettingsMismatchError(RuntimeError):
    """A run's settings differ from those of the results already in its folder; the message is one line."""


def check_settings(cache_path: str, recorded: dict | None, current: dict) -> None:
    """Raise :class:`SettingsMismatchError` naming the differences when the folder holds results of other
    run settings (nothing when it holds none)."""
    if recorded is not None and (differences := settings_differences(recorded, current)):
        raise SettingsMismatchError(f"{cache_path}: holds results of other run settings ({', '.join(differences)} "
                                    "differ); rerun with --overwrite to replace them, or use another --cache_path")


def polygons_digest(polygons) -> str:
    """Short digest of the polygons' canonical JSON."""
    return short(digest_of(polygons))


@lru_cache(maxsize=None)
def _code_version(modules: tuple[str, ...]) -> str:
    return short(code_digest(*modules))


def maps_version() -> str:
    """Short digest of the code of the testset run that makes a sample's maps and numbers (:data:`MAP_CODE`)."""
    return _code_version(MAP_CODE)


def evaluation_version() -> str:
    """Short digest of the code that evaluates a written map (:data:`EVALUATION_CODE`): the indicators and
    how the run reads and checks the map for them."""
    return _code_version(EVALUATION_CODE)


def sample_identity(settings_digest: str | None, caption: str, polygons, image: str | None) -> dict:
    """What a sample's numbers depend on beyond the run settings: ``{"settings", "caption", "polygons",
    "image", "maps", "evaluation"}`` (the last two: the code versions)."""
    return {"settings": settings_digest, "caption": caption, "polygons": polygons_digest(polygons), "image": image,
            "maps": maps_version(), "evaluation": evaluation_version()}


SAMPLE_KEYS = ("caption", "polygons", "image")  # what makes a sample the same sample, whatever its name or place


def same_sample(identity: dict | None, current: dict, keys=SAMPLE_KEYS) -> bool:
    """Whether a recorded identity is of the sample ``current`` describes, on ``keys`` (by default caption,
    polygons and image content; the image only where both know it).

    >>> same_sample({"caption": "a", "polygons": "p1", "image": "i"}, {"caption": "a", "polygons": "p2", "image": None},
    ...             keys=("caption", "image"))
    True
    """
    if not isinstance(identity, dict):
        return False
    keys = [key for key in keys if key != "image" or (identity.get("image") and current.get("image"))]
    return all(identity.get(key) == current.get(key) for key in keys)


def seal(record: dict) -> str:
    """Short digest over a record's values and identity (all but its ``seal``): a record whose seal no
    longer matches was changed outside the program, and is recomputed."""
    return short(digest_of({key: value for key, value in record.items() if key != "seal"}))


def seal_problem(record: dict) -> str | None:
    """Why a stored record's seal does not hold (None when it does)."""
    if "seal" not in record:
        return "no seal recorded with its result"
    if record["seal"] != seal(record):
        return "its record in metrics.json was changed after it was written (seal mismatch)"
    return None


def map_digests(paths: dict[str, str]) -> dict[str, str]:
    """``{kind: short digest}`` of the map files ``{kind: path}``."""
    return {kind: short(file_digest(path)) for kind, path in paths.items()}


def maps_problem(recorded, paths: dict[str, str]) -> str | None:
    """Why the map files ``{kind: path}`` are not those recorded (None when they are): missing, or of
    other content (truncated, rewritten, another sample's)."""
    if not isinstance(recorded, dict):
        return "no map digests recorded with its result"
    for kind, path in paths.items():
        name = os.path.basename(path)
        try:
            digest = short(file_digest(path))
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            return f"{name} is unreadable ({exc})"
        if recorded.get(kind) != digest:
            return f"{name} is not the map recorded with its result (changed, truncated or replaced)"
    return None


def reuse_problem(record: dict | None, identity: dict, map_paths: dict[str, str]) -> str | None:
    """Why a recorded result cannot be reused for ``identity`` (None when it can): not computed, another
    identity (named part by part), or maps that are not the recorded ones."""
    if record is None:
        return NOT_COMPUTED
    recorded = record.get("identity")
    if not isinstance(recorded, dict):
        return "no provenance recorded with its result"
    changed = [key for key in identity if recorded.get(key) != identity[key]]
    if changed:
        names = {"settings": "run settings", "maps": "map code", "evaluation": "evaluation code"}
        return f"{', '.join(names.get(key, key) for key in changed)} changed"
    return maps_problem(record.get("maps"), map_paths)


def log_mean_coverage(logger: logging.Logger, store, anno_path: str) -> None:
    """Say which samples the mean covers, and which results the folder keeps without counting them."""
    logger.info("Mean over %d sample(s) of %s", len(store.mean_over), anno_path)
    if others := store.not_counted:
        logger.warning("%s: %d result(s) of samples not in %s kept but not counted in the mean (idx %s)",
                       store.json_path, len(others), anno_path, ", ".join(map(str, others)))
