"""Content digests: the sha256 of a file's bytes (memoised as git's index does), of canonical JSON, of an
array; and a decoder's read checked against the file it read (:func:`read_unchanged`)."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import numpy as np

from evaluations.errors import SampleError

CHUNK = 1 << 22  # 4 MiB
RACY_NS = 2_000_000_000  # a file changed this recently before its hashing is not memoised (see file_digest)
SHORT = 16  # hex digits of the digests shown in names and records


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

