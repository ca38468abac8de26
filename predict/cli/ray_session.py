"""The Ray of the archive's commands (``selo-index``, ``selo-search``): started, quieted and stopped here, so
that the library's functions leave Ray's process-wide settings as they find them."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import ray
import ray.data


@contextmanager
def ray_session(address: str | None = None):
    """Ray for one command: joins the cluster at ``address``, else starts a local Ray on 127.0.0.1 (no
    dashboard, no usage statistics) that stops when the block ends; Ray Data quiet (:func:`quiet_ray_data`).
    A Ray this process already joined (a test's cluster) is used as it is and left running."""
    if ray.is_initialized():
        quiet_ray_data()
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
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
