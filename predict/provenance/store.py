"""Stored files: written atomically with a record (the sha256 of their own bytes, the key of what made
them), read back only verified against both.

Every file a run keeps for a later one (tile vectors, scene files, result records, outputs and their
summaries) is written through :func:`write_stored` (or a library writes it whole and :func:`seal_file`
records it); its record lies beside it (``.<name>.selo``) or in the manifest that lists it (a folder's
summary). It is read back only through :func:`read_stored` or :func:`verify_stored`, so a file changed,
truncated, replaced or left by another producer is never used as it is. A file is either complete or
absent, never half-written (:func:`atomic_writer`).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

from predict.errors import StoredFileError, WriteError
from predict.provenance.digests import canonical_json, file_digest


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file of its own in the same folder, put in
    place by ``os.replace`` when the block ends, removed when it raises.

    The temporary name is unique per writer, so concurrent writers never share one; on any error the
    previous ``path`` (if any) is left as it was. The file gets the mode a plain ``open`` would give it
    (0666 less the umask; ``mkstemp``'s 0600 would hide outputs from a group that shares them). A system
    error (disk full, read-only folder, no permission) is raised as :class:`WriteError`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror or str(exc), path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(exc.errno, exc.strerror or str(exc), path) from None
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path for a library to write ``path``'s file at (GDAL's COG driver), beside it, put in place
    by ``os.replace`` when the block ends, removed when it raises (as :func:`atomic_writer`)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        for leftover in (tmp, tmp + ".aux.xml"):
            with suppress(FileNotFoundError):
                os.unlink(leftover)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(exc.errno, exc.strerror or str(exc), path) from None
        raise


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_writer`: the file is complete or
    as it was before.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_atomically(os.path.join(folder, "a.txt"), "hello")
    ...     open(os.path.join(folder, "a.txt")).read(), os.listdir(folder)
    ('hello', ['a.txt'])
    """
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


RECORD_SUFFIX = ".selo"


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


def write_stored_json(path: str | os.PathLike, data, key: str, *, beside: bool = True) -> dict:
    """:func:`write_stored` of ``data`` as indented JSON (no NaN: JSON has none); returns the record."""
    return write_stored(path, json.dumps(data, indent=1, allow_nan=False) + "\n", key, beside=beside)


def read_stored_json(path: str | os.PathLike, key: str | None, record: dict | None = None):
    """The JSON value of a stored file, read verified (:func:`read_stored`)."""
    return json.loads(read_stored(path, key, record))
