"""Atomic file writing: a file is either complete or absent, never half-written."""
from __future__ import annotations

import os
import tempfile


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, no permission); ``str()`` is one line
    naming the file and the system's reason."""

    def __str__(self) -> str:
        return f"{self.filename}: cannot write ({self.strerror})"


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file of its own in the same folder and ``os.replace``.

    The temporary name is unique per writer, so concurrent writers never share one; on any error it is
    removed and the previous ``path`` (if any) is left as it was. A system error (disk full, read-only
    folder, no permission) is raised as :class:`WriteError`.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> write_atomically(os.path.join(folder, "a.txt"), "hello")
    >>> open(os.path.join(folder, "a.txt")).read(), os.listdir(folder)
    ('hello', ['a.txt'])
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror or str(exc), path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(exc.errno, exc.strerror or str(exc), path) from None
        raise
