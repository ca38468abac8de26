"""Atomic file writing: a file is either complete or absent, never half-written."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, no permission); ``str()`` is one line
    naming the file and the system's reason."""

    def __str__(self) -> str:
        return f"{self.filename}: cannot write ({self.strerror})"


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
