"""Checks of a command line before any work starts: one line naming the argument or path and the problem,
exit code 2; and the one line a Ctrl-C leaves."""
from __future__ import annotations

import argparse
import os
import sys

from predict.core.tiling import parse_steps
from predict.io.atomic import write_atomically
from predict.io.results import MetricsStore

EXIT_CANNOT_START = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_CANNOT_START, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    >>> positive_int("16")
    16
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def tile_steps(text: str) -> tuple[int, ...]:
    """argparse type: tile sides joined by ``_``, each a positive integer.

    >>> tile_steps("256_512")
    (256, 512)
    """
    try:
        return tuple(parse_steps(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers joined by '_' (e.g. 256_512_768), got {text!r}") from None


def require_folder(path: str, what: str) -> None:
    """A one-line ``FileNotFoundError`` unless ``path`` is an existing folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: {what} not found" + (" (it is a file)" if os.path.isfile(path) else ""))


def prepare_output_folder(path: str) -> None:
    """Create the output folder ``path`` if needed and check that a file can be written into it: a file in
    its place is a ``NotADirectoryError``, a folder that cannot be created or written a
    :class:`~predict.io.atomic.WriteError`, each one line naming it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path}: output folder is a file")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        pass  # the probe below names the problem
    probe = os.path.join(path, ".write-check")
    write_atomically(probe, b"")
    os.unlink(probe)


def interrupted_line(cache_path: str) -> str:
    """What a Ctrl-C leaves: the samples saved in ``metrics.json`` and how to resume."""
    saved = len(MetricsStore(cache_path).samples)
    return (f"interrupted: {saved} sample(s) saved in {os.path.join(cache_path, 'metrics.json')}; "
            "rerun the same command to resume")


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail_to_start(message: str, logger=None) -> int:
    """Report why a run cannot start (to the log when there is one, else stderr); the exit code 2."""
    if logger is None:
        print(f"error: {message}", file=sys.stderr)
    else:
        logger.error("%s", message)
    return EXIT_CANNOT_START
