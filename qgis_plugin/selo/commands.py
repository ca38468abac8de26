"""The SeLo commands run from QGIS: found through the ``SELO_BIN`` setting, run in a subprocess with
``--progress json``, their progress lines turned into the feedback's progress, their other lines into its
log, Cancel sent to them as Ctrl-C.

Plain Python (no QGIS import): ``feedback`` is anything with a ``QgsProcessingFeedback``'s ``isCanceled``,
``setProgress``, ``setProgressText``, ``pushInfo``, ``pushWarning`` and ``reportError``.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

SETTING = "SELO_BIN"  # Processing/Configuration/SELO_BIN; an environment variable of that name overrides it
SETTING_HELP = (f"set {SETTING} (Processing > Options > Providers > SeLo, or the environment variable {SETTING}) "
                "to the bin folder of the Python environment where selo is installed, or to its python")
EXIT_SOME_FAILED = 1  # the commands' exit codes (predict/cli/runner.py)
EXIT_INTERRUPTED = 130
STOP_SECONDS = 30.0  # after Cancel, how long a command may take to stop (it ends itself within about 10 s)
POLL_SECONDS = 0.2  # how often Cancel is checked while a command runs


class CommandError(Exception):
    """A command that could not be found or run, or that failed: one line saying why."""


def selo_bin(configured: str | None) -> str:
    """Where the commands are: the environment variable ``SELO_BIN`` when set, else the provider's setting."""
    return os.environ.get(SETTING) or (configured or "")


def find_command(name: str, location: str) -> str:
    """The path of command ``name`` in ``location`` (an environment's ``bin`` folder, or its python: the
    folder it is in); a one-line :class:`CommandError` when unset, missing or without the command."""
    if not location:
        raise CommandError(f"{SETTING} is not set: {SETTING_HELP}")
    folder = os.path.dirname(location) if os.path.isfile(location) else location
    if not os.path.isdir(folder):
        raise CommandError(f"{SETTING}={location}: no such folder or file; {SETTING_HELP}")
    for candidate in (name, name + ".exe"):  # a Windows environment's Scripts folder holds selo-localise.exe
        path = os.path.join(folder, candidate)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CommandError(f"{SETTING}={location}: no {name} command in {folder} (is selo installed in that "
                       f"environment?); {SETTING_HELP}")


class ProgressLines:
    """The commands' progress lines (``predict.io.progress``) as one percentage: the stage at depth 0, with
    the fraction done of the stage open within it."""

    def __init__(self):
        self.stages: dict[int, tuple[int, int]] = {}  # depth -> (done, total)

    def read(self, line: dict) -> float:
        """The percentage after ``line``."""
        depth = int(line["depth"])
        self.stages = {d: stage for d, stage in self.stages.items() if d < depth}
        self.stages[depth] = (int(line["done"]), max(1, int(line["total"])))
        done, total = self.stages[0] if 0 in self.stages else (0, 1)
        inner = self.stages.get(1)
        within = inner[0] / inner[1] if inner and done < total else 0.0
        return min(100.0, 100.0 * (done + within) / total)


def progress_line(text: str) -> dict | None:
    """The progress line ``text`` is, decoded; None for any other line."""
    if not text.startswith('{"event": "progress"'):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_lines(stream, name: str, lines: queue.Queue) -> None:
    """Each line of ``stream`` into ``lines`` as ``(name, text)``, then ``(name, None)`` when it ends."""
    for text in iter(stream.readline, ""):
        lines.put((name, text.rstrip("\n")))
    lines.put((name, None))


def report_line(name: str, text: str, feedback, progress: ProgressLines) -> None:
    """A command's line to the feedback: progress, a warning, an error or information."""
    line = progress_line(text) if name == "stderr" else None
    if line is not None:
        feedback.setProgress(progress.read(line))
        if line["depth"] == 0:
            feedback.setProgressText(f"SeLo: {line['stage']} {line['done']}/{line['total']}")
    elif text.startswith("WARNING: "):
        feedback.pushWarning(text.removeprefix("WARNING: "))
    elif text.startswith(("ERROR: ", "error: ")) or ": error:" in text:
        feedback.reportError(text.removeprefix("ERROR: ").removeprefix("error: "))
    elif text.strip():
        feedback.pushInfo(text)


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C for ``process``: SIGINT (a Windows process, which has none, is terminated)."""
    if os.name == "nt":
        process.terminate()
    else:
        process.send_signal(signal.SIGINT)


def run_command(argv: list[str], feedback) -> int:
    """Run ``argv`` (a command and its arguments, ``--progress json`` added), reporting to ``feedback``
    until it ends; Cancel interrupts it as Ctrl-C does (killed if still there :data:`STOP_SECONDS` later).
    Returns its exit code; a :class:`CommandError` when it cannot start, stops before any work (exit 2:
    its error line) or is cancelled."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONHOME"}  # QGIS's, not the command's
    feedback.pushInfo("running: " + subprocess.list2cmdline(argv))
    try:
        process = subprocess.Popen([*argv, "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", env=env)
    except OSError as exc:
        raise CommandError(f"{argv[0]}: cannot run it ({exc.strerror or exc})") from None
    with process:  # its pipes closed when it ends
        code, errors = follow(process, feedback)
    name = os.path.basename(argv[0])
    if code == EXIT_INTERRUPTED:
        raise CommandError(f"{name} cancelled: the outputs written so far are whole; run it again to resume")
    if code not in (0, EXIT_SOME_FAILED):
        raise CommandError(errors[-1] if errors else f"{name} failed with exit code {code}")
    return code


def follow(process: subprocess.Popen, feedback) -> tuple[int, list[str]]:
    """Report ``process``'s lines to ``feedback`` until it ends, interrupting it on Cancel; its exit code and
    its error lines."""
    lines: queue.Queue = queue.Queue()
    for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
        threading.Thread(target=read_lines, args=(stream, name, lines), daemon=True).start()
    progress, errors, open_streams, interrupted_at, killed = ProgressLines(), [], 2, None, False
    while open_streams:
        if feedback.isCanceled() and interrupted_at is None:
            feedback.pushInfo("cancelling: the command stops as on Ctrl-C")
            interrupt(process)
            interrupted_at = time.monotonic()
        if interrupted_at is not None and not killed and time.monotonic() - interrupted_at > STOP_SECONDS:
            process.kill()
            killed = True
        try:
            name, text = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if text is None:
            open_streams -= 1
            continue
        if name == "stderr" and progress_line(text) is None and text.strip():
            errors.append(text.removeprefix("ERROR: ").removeprefix("error: "))
        report_line(name, text, feedback, progress)
    return process.wait(), errors
