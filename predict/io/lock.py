"""One writer per cache folder: an advisory ``fcntl.flock`` on ``<folder>/.lock`` held for the whole run.

The operating system releases the lock when its holder exits, killed or not, so a crashed run never leaves
the folder locked. The holder's pid is written into the file for the message a second run prints.
Taking the lock again in the same process (the CLI early, :func:`~predict.testset.engine.run_testset` later)
is a no-op.
"""
from __future__ import annotations

import contextlib
import fcntl
import os

from predict.errors import FolderBusyError

LOCK_NAME = ".lock"

_held: dict[str, int] = {}  # real folder path -> nesting depth, for the locks this process holds


def _holder_pid(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, option: str = "--cache_path"):
    """Hold the write lock of ``folder`` (created if needed) for the ``with`` block; ``option`` is the
    command-line option the busy message suggests changing.

    Raises:
        FolderBusyError: another process holds it.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with folder_lock(folder):
    ...         with folder_lock(folder):  # re-entrant within a process
    ...             pass
    """
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(f"{folder}: another run (pid {_holder_pid(fd)}) is writing this folder; "
                                  f"wait for it to finish or use another {option}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike):
    """Hold an exclusive ``flock`` on the file ``path`` (created if needed) for the ``with`` block, waiting
    for another holder (in this process or another) to let go: for short read-merge-write steps on files
    that several runs share, such as a folder of tile vectors.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with exclusive_lock(os.path.join(folder, ".write.lock")):
    ...         pass
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
