"""Logging as the original evaluator does it: a logger to the terminal (and a file), per-map blocks."""
from __future__ import annotations

import logging
import math
import os

# Short indicator names -> the keys of the original's result dicts, in the original's order.
ORIGINAL_KEYS = {"Rsu": "↑ Rsu [0 ~ 1]", "Rda": "↑ Rda [0 ~ 1]", "Ras": "↓ Ras [0 ~ 1]", "Rmi": "↑ Rmi [0 ~ 1]"}


def get_logger(save_path: str | None = None, name: str = "SLM") -> logging.Logger:
    """Logger ``name`` at INFO, to the terminal and, if given, appended to ``save_path``.

    Calling it again adds no duplicate handler (so evaluating many maps logs each line once).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(message)s")
    if not any(type(handler) is logging.StreamHandler for handler in logger.handlers):
        console = logging.StreamHandler()
        console.setFormatter(formatter)
        logger.addHandler(console)
    if save_path is not None:
        path = os.path.abspath(save_path)
        if not any(getattr(handler, "baseFilename", None) == path for handler in logger.handlers):
            to_file = logging.FileHandler(path, encoding="utf-8")
            to_file.setFormatter(formatter)
            logger.addHandler(to_file)
    return logger


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
