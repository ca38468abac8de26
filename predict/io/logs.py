"""log.txt of a run, in the original's line format, with warnings shown above the progress bar."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from tqdm import tqdm

from evaluations.utils import LOG_FORMAT, configure_logger

LOGGER_NAME = "selo"


class TqdmHandler(logging.Handler):
    """Writes log records above the progress bar instead of through it."""

    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stderr)  # where the bar is, and where errors belong


class LogFileHandler(logging.FileHandler):
    """log.txt; when it cannot be written (disk full...) says so once, in one line, instead of a traceback
    per record."""

    failed = False

    def handleError(self, record):
        if not self.failed:
            self.failed = True
            tqdm.write(f"WARNING: {self.baseFilename}: cannot write the log; warnings and errors still go to the terminal",
                       file=sys.stderr)


def setup_logger(cache_path: str, console_level: int = logging.WARNING) -> logging.Logger:
    """The run's logger: every line to ``<cache>/log.txt`` (appended, so a resumed run keeps its history),
    warnings and errors (``console_level`` and above) to the terminal above the progress bar."""
    to_file = LogFileHandler(os.path.join(cache_path, "log.txt"), encoding="utf-8")
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    console = TqdmHandler(level=console_level)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    return configure_logger(LOGGER_NAME, [to_file, console])


@contextmanager
def notes_logged(logger: logging.Logger):
    """A list for the warnings of the block (see :mod:`predict.core.notes`), logged as warning lines of
    ``logger`` when the block ends, however it ends."""
    notes: list[str] = []
    try:
        yield notes
    finally:
        for message in notes:
            logger.warning("%s", message)
