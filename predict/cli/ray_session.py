"""The Ray of the archive's commands (``selo-index``, ``selo-search``): started, quieted and stopped here, so
that the library's functions leave Ray's process-wide settings as they find them."""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager

import ray
import ray.data

from predict.io.checks import EXIT_INTERRUPTED
from predict.io.logs import LOGGER_NAME


CONNECT_SECONDS = 5.0  # how long a cluster's address may take to answer before the command stops


def check_address(address: str | None) -> None:
    """A one-line ``ConnectionError`` when nothing answers at ``address`` (``host:port``: the cluster's GCS)
    within :data:`CONNECT_SECONDS`: ``ray.init`` would retry for minutes. ``auto``, ``ray://`` addresses and
    no address are left to Ray."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ConnectionError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                              "start one (ray start --head) or leave --address out for a local Ray") from None


@contextmanager
def ray_session(address: str | None = None):
    """Ray for one command: joins the cluster at ``address`` (see :func:`check_address`), else starts a
    local Ray of its own on 127.0.0.1 (no dashboard, no usage statistics) that stops when the block ends,
    never the cluster a stale ``/tmp/ray/ray_current_cluster`` names (a ``ray start`` that died would have
    every later command retry it for minutes); Ray Data quiet (:func:`quiet_ray_data`). A Ray this process
    already joined (a test's cluster) is used as it is and left running."""
    if ray.is_initialized():
        quiet_ray_data()
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        quiet_ray_data()
        yield
    finally:
        ray.shutdown()


def quiet_ray_data() -> None:
    """Ray Data without its progress bars and per-dataset log lines (the commands print their own); Ray's
    distributed progress bars no longer replace ``builtins.print`` in this process when a worker reports."""
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextmanager
def interrupts_end_the_run():
    """Within the block, Ctrl-C ends the command within seconds, whatever it waits on (a command's own
    setting: the process's SIGINT handler, put back when the block ends; none outside the main thread).
    The first SIGINT raises ``KeyboardInterrupt`` in the main thread, as by default (the run stops, logs its
    one line, Ray shuts down) and arms a watchdog that ends the process with exit 130
    :data:`INTERRUPT_GRACE_SECONDS` later if it is still there (an interrupt swallowed in Ray's waits, a
    shutdown that hangs); a second SIGINT ends it at once. Every file the run writes is atomic: what a rerun
    finds is whole."""
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


INTERRUPT_GRACE_SECONDS = 10.0


def end_interrupted() -> None:
    """End the process at once with exit 130, its log and output flushed (no clean-up that could hang)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.error("interrupted: stopped at once; every file written so far is whole, rerun the same command to resume")
    for handler in logger.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)
