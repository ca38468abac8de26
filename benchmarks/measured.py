"""A command run from a benchmark, with its wall time and its own peak resident memory.

Linux carries the resident high-water mark of the memory a process is spawned from across ``exec``: the
``ru_maxrss`` that ``wait4`` gives for a child of a large benchmark process is at least that process's own
peak (a parent holding 3 GB made ``python -c pass`` report 2887 MB, where ``/usr/bin/time`` said 11 MB; the
AMFMN runs of ``bench_runtimes.py``, started after its in-process encoder comparisons, all reported 5154 MB).
So the command is started by a small launcher, a fresh interpreter whose child starts from its few
megabytes, and the launcher hands back the child's own ``ru_maxrss``.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as peak:
    peak.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Finished:
    """A command's run: ``wall`` seconds, ``peak_mb`` (its own ``ru_maxrss``, MB), ``cpu`` seconds (user and
    system), ``returncode`` and its ``stdout`` when it was piped (else None)."""

    wall: float
    peak_mb: float
    cpu: float
    returncode: int
    stdout: str | None


def run_measured(command: list[str], **popen) -> Finished:
    """Run ``command`` (``popen``: ``subprocess.Popen``'s keywords: ``cwd``, ``env``, ``stdout``...) through the
    launcher and wait for it."""
    with tempfile.NamedTemporaryFile("r", suffix=".maxrss") as peak:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, peak.name, *command], **popen)
        stdout = proc.stdout.read() if proc.stdout is not None else None
        returncode = proc.wait()
        wall = time.perf_counter() - start
        kilobytes, cpu = peak.read().split() or ("nan", "nan")  # nothing written: the launcher was killed
    return Finished(wall, float(kilobytes) / 1024, float(cpu), returncode, stdout)
