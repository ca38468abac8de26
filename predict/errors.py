"""The project's errors, in one module: each ``str()`` is one line naming the file, sample, run, key or
argument, and the problem. Library errors speak of the arguments a Python caller passed
(:class:`ArgumentError`); the commands translate them into their flags (:mod:`predict.cli.runner`).

This module imports nothing of the project but :mod:`evaluations.errors` (whose :class:`SampleError` the
original's evaluator raises too), so every layer may raise and catch these.
"""
from __future__ import annotations

import os

from evaluations.errors import SampleError

__all__ = ["SampleError", "ArgumentError", "EncoderError", "WriteError", "StoredFileError", "SettingsMismatchError",
           "FolderBusyError", "CompareError", "ExplorerError", "BadRequest", "InvalidRequest", "NotFound",
           "ImageChanged", "JobFailed", "first_line"]


class ArgumentError(ValueError):
    """A bad value of argument ``argument`` of a library call; ``str()`` is ``"<argument> <value>: <problem>"``.

    >>> str(ArgumentError("preview_side", "7: expected 64 to 8192 pixels"))
    'preview_side 7: expected 64 to 8192 pixels'
    """

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument} {problem}")
        self.argument, self.problem = argument, problem


class EncoderError(RuntimeError):
    """A problem with an encoder's yaml, checkpoint or vocabulary; the message is one clear line."""


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, no permission); ``str()`` is one line
    naming the file and the system's reason."""

    def __str__(self) -> str:
        return f"{self.filename}: cannot write ({self.strerror})"


class StoredFileError(ValueError):
    """A stored file that cannot be used as it is; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path, self.reason = os.fspath(path), reason


class SettingsMismatchError(RuntimeError):
    """A run's settings differ from those of the results already in its folder; the message is one line."""


class FolderBusyError(RuntimeError):
    """Another live process is writing the folder; the message names the folder and its pid."""


class CompareError(Exception):
    """Runs that cannot be read or compared; ``str()`` is one line naming the run and the problem."""


# What the explorer refuses, and why, as domain errors: no HTTP here (predict.web alone turns each class into its
# HTTP answer).

class ExplorerError(ValueError):
    """A request the explorer refuses, or a job of it that failed."""


class BadRequest(ExplorerError):
    """A malformed request: a path where a bare image name is expected, a name the folder does not list, a
    hidden output's name, a thumbnail side or download kind outside those offered."""


class InvalidRequest(ExplorerError):
    """A well-formed request whose value cannot be accepted: an unknown pipeline, steps malformed or out of
    range, more tiles than one request may ask for, a query with no word the encoder knows, an image that
    cannot be read (and a job whose input turned out bad, e.g. an image all nodata)."""


class NotFound(ExplorerError):
    """An unknown job, result or output (or a stored one that changed since it was made)."""


class ImageChanged(ExplorerError):
    """The image is no longer the one a result was made of (changed or gone), or changed while being read."""


class JobFailed(ExplorerError):
    """A job that failed for a reason of the explorer's own, not of its request: the message names the
    image and the error."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none.

    >>> first_line(ValueError("a.png: truncated\\ndetails")), first_line(KeyboardInterrupt())
    ('a.png: truncated', 'KeyboardInterrupt')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
