"""How every command runs, in one module: its folder prepared and locked, the one line a failure leaves
(exit 2 before any work, 1 when some inputs failed), Ctrl-C ending it within seconds with exit 130 and
everything written so far whole, and library errors translated into the command's flags.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from predict.cli.options import EXIT_CANNOT_START
from predict.errors import ArgumentError, FolderBusyError, first_line
from predict.io.lock import folder_lock
from predict.io.logs import LOGGER_NAME
from predict.io.progress import reporting_progress
from predict.provenance import write_atomically

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
INTERRUPT_GRACE_SECONDS = 10.0  # after a Ctrl-C, how long a run may take to stop before the process ends


def prepare_output_folder(path: str) -> None:
    """Create the output folder ``path`` if needed and check that a file can be written into it: a file in
    its place is a ``NotADirectoryError``, a folder that cannot be created or written a
    :class:`~predict.provenance.store.WriteError`, each one line naming it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path}: output folder is a file")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        pass  # the probe below names the problem
    probe = os.path.join(path, ".write-check")
    write_atomically(probe, b"")
    os.unlink(probe)


def fail_to_start(message: str, logger=None) -> int:
    """Report why a run cannot start (to the log when there is one, else stderr); the exit code 2."""
    if logger is None:
        print(f"error: {message}", file=sys.stderr)
    else:
        logger.error("%s", message)
    return EXIT_CANNOT_START


def one_line(error: BaseException, flags: dict[str, str] | None = None) -> str:
    """The line a command prints for ``error``: its first line, an :class:`~predict.errors.ArgumentError`
    named by the command's flag (``flags``: argument -> flag; ``--<argument>`` when not listed).

    >>> one_line(ArgumentError("images_dir", "/x: no such folder"), {"images_dir": "--images"})
    '--images /x: no such folder'
    """
    if isinstance(error, ArgumentError):
        return f"{(flags or {}).get(error.argument, '--' + error.argument)} {error.problem}"
    return first_line(error)


@contextmanager
def interrupts_end_the_run():
    """Within the block, Ctrl-C ends the command within seconds, whatever it waits on (a command's own
    setting: the process's SIGINT handler, put back when the block ends; none outside the main thread).
    The first SIGINT raises ``KeyboardInterrupt`` in the main thread, as by default (the run stops and logs
    its one line) and arms a watchdog that ends the process with exit 130 :data:`INTERRUPT_GRACE_SECONDS`
    later if it is still there (an interrupt swallowed in Ray's waits, a shutdown that hangs); a second
    SIGINT ends it at once. Every file a run writes is atomic: what a rerun finds is whole."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = threading.Event()

    def on_interrupt(signum, frame):
        if interrupted.is_set():
            end_interrupted()
        interrupted.set()
        threading.Thread(target=lambda: (time.sleep(INTERRUPT_GRACE_SECONDS), end_interrupted()), daemon=True).start()
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def end_interrupted() -> None:
    """End the process at once with exit 130, its log and output flushed (no clean-up that could hang)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.error("interrupted: stopped at once; every file written so far is whole, rerun the same command to resume")
    for handler in logger.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def run_in_folder(folder: str, option: str, run: Callable[[], int], *, create: bool = True,
                  progress: str = "bar") -> int:
    """The frame of a command that writes ``folder`` (named by its flag ``option``): the folder prepared
    (created and probed when ``create``), locked for the run (another run writing it: one line, exit 2),
    Ctrl-C ending the run (:func:`interrupts_end_the_run`) and its progress shown as ``progress``
    (``--progress``, see :mod:`predict.io.progress`); ``run`` returns the exit code."""
    try:
        if create:
            prepare_output_folder(folder)
        with folder_lock(folder, option=option), interrupts_end_the_run(), reporting_progress(progress):
            return run()
    except (OSError, FolderBusyError) as exc:
        return fail_to_start(first_line(exc))


def logged_run(logger: logging.Logger, start: Callable[[], object], work: Callable[[object], int], *,
               interrupted: Callable[[], str], stopped: str, flags: dict[str, str] | None = None) -> int:
    """The run inside the frame: ``start()`` checks everything the run needs and loads it (any error: one
    line, exit 2, nothing done), then ``work(started)`` returns the exit code. A Ctrl-C logs
    ``interrupted()`` (exit 130); a system error mid-run (disk full, read-only) logs it with ``stopped``
    (what was kept; exit 2)."""
    try:
        try:
            started = start()
        except Exception as exc:  # noqa: BLE001 - any reason not to start is one line
            return fail_to_start(one_line(exc, flags), logger)
        return work(started)
    except KeyboardInterrupt:
        logger.error("%s", interrupted())
        return EXIT_INTERRUPTED
    except OSError as exc:
        return fail_to_start(f"{first_line(exc)}; {stopped}", logger)
