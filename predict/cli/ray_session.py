"""The Ray of the archive's commands (``selo-index``, ``selo-search``): started, quieted and stopped here, so
that the library's functions leave Ray's process-wide settings as they find them."""
from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager

import ray
import ray.data

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
