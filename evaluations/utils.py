"""Logging as the original evaluator does it: a logger to the terminal (and a file), per-map blocks."""
from __future__ import annotations

import logging
import math
import os

from evaluations.metrics import ORIGINAL_ORDER

# Short indicator names -> the keys of the original's result dicts, in the original's order:
# {"Rsu": "↑ Rsu [0 ~ 1]", "Rda": "↑ Rda [0 ~ 1]", "Ras": "↓ Ras [0 ~ 1]", "Rmi": "↑ Rmi [0 ~ 1]"}.
ORIGINAL_KEYS = {name: f"{'↓' if name == 'Ras' else '↑'} {name} [0 ~ 1]" for name in ORIGINAL_ORDER}


LOG_FORMAT = "%(asctime)s %(message)s"  # the original's log lines


def configure_logger(name: str, handlers: list[logging.Handler]) -> logging.Logger:
    """Logger ``name`` at INFO, not propagating, with exactly ``handlers`` (earlier ones closed)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in handlers:
        logger.addHandler(handler)
    return logger


def get_logger(save_path: str | None = None, name: str = "SLM") -> logging.Logger:
    """The original evaluator's logger ``name``: INFO to the terminal and, if given, appended to ``save_path``.

    Calling it again keeps the handlers it already has (so evaluating many maps logs each line once).
    """
    logger = logging.getLogger(name)
    handlers = list(logger.handlers)
    if not any(type(handler) is logging.StreamHandler for handler in handlers):
        handlers.append(logging.StreamHandler())
    if save_path is not None:
        path = os.path.abspath(save_path)
        if not any(getattr(handler, "baseFilename", None) == path for handler in handlers):
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        if handler.formatter is None:
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.handlers = []  # the kept ones are handed back, not closed
    return configure_logger(name, handlers)


def block_lines(labelled_values: dict, probmap_path: str | None) -> list[str]:
    """The original's log block: ``Eval <path>`` (the Average banner for ``None``), then one
    ``++++     <label>:<value:.4f>   ++++`` line per item (``None`` shown as nan)."""
    lines = ["+++++++++++++++Average++++++++++++++" if probmap_path is None else f"Eval {probmap_path}",
             "+++++++ Calc the SLM METRICS +++++++"]
    for label, value in labelled_values.items():
        lines.append(f"++++     {label}:{math.nan if value is None else value:.4f}   ++++")
    lines.append("++++++++++++++++++++++++++++++++++++\n")
    return lines


def log_metric_block(logger: logging.Logger, values: dict, probmap_path: str | None) -> None:
    """Log :func:`metric_block_lines`: a map's block, or the mean block for ``probmap_path=None``."""
    for line in metric_block_lines(values, probmap_path):
        logger.info(line)


def metric_block_lines(values: dict, probmap_path: str | None) -> list[str]:
    """:func:`block_lines` of a dict holding at least ``"Rsu", "Rda", "Ras", "Rmi"`` (other keys ignored),
    under the original's labels."""
    return block_lines({label: values[name] for name, label in ORIGINAL_KEYS.items()}, probmap_path)
