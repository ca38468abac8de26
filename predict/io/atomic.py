"""Atomic file writing: a file is either complete or absent, never half-written."""
from __future__ import annotations

import os
import tempfile


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file of its own in the same folder and ``os.replace``.

    The temporary name is unique per writer, so concurrent writers never share one; on any error it is
    removed and the previous ``path`` (if any) is left as it was.

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
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
