"""Compatibility with the original evaluator: ``from evaluations.SLM import SLM``.

``SLM().evaluate(probmap_path, region_list=points)`` returns the original's dict
(``"↑ Rsu [0 ~ 1]"``, ``"↑ Rda [0 ~ 1]"``, ``"↓ Ras [0 ~ 1]"``, ``"↑ Rmi [0 ~ 1]"``) with the original's
numbers and logs its block; ``append_metric`` / ``get_the_mean_metric`` average over calls.

Bad input behaves as in the original where it gave numbers: NaN (with numpy's RuntimeWarning, plus one
warning naming the file). Where the original crashed (missing or unreadable file: TypeError; zero-radius
circle with no centre on it: ZeroDivisionError; no polygon and no centre: IndexError; non-finite vertex:
ValueError) this class raises :class:`~evaluations.metrics.EvaluationInputError` with a one-line reason.
For errors instead of NaN use :func:`evaluations.metrics.evaluate_gray`.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from evaluations.metrics import EvaluationInputError, compute_score, read_probmap
from evaluations.utils import ORIGINAL_KEYS, block_lines, get_logger


class SLM:
    """The original's evaluator class (same public methods and dict keys)."""

    def __init__(self, logger=None):
        self.logger = logger if logger is not None else get_logger()
        self.all_metrics = self._format_output_dict()

    @staticmethod
    def _format_output_dict(*params) -> dict:
        """The original's result dict; with no argument, empty lists to collect results in."""
        if len(params) not in (0, 4):
            raise NotImplementedError("_format_output_dict takes 0 or 4 values (Rsu, Rda, Ras, Rmi)")
        values = params if params else [[] for _ in ORIGINAL_KEYS]
        return dict(zip(ORIGINAL_KEYS.values(), values))

    def logging_acc(self, metrics_dict: dict, prob_path: str | None = None, ave: bool = False) -> None:
        """Log one map's block (``ave=False``) or the average block."""
        for line in block_lines(metrics_dict, None if ave else prob_path):
            self.logger.info(line)

    def evaluate(self, prob_path: str, region_list: list) -> dict:
        """Rsu, Rda, Ras, Rmi of the probability map file ``prob_path`` and its annotation polygons."""
        gray = read_probmap(prob_path)
        try:
            score = compute_score(gray, region_list)
        except EvaluationInputError as error:
            raise EvaluationInputError(f"{prob_path}: {error}") from None
        values = score.as_dict()
        undefined = [name for name, value in values.items() if math.isnan(value)]
        if undefined:
            warnings.warn(f"{prob_path}: {', '.join(undefined)} undefined (NaN) for these polygons, as in the "
                          "original evaluator", RuntimeWarning, stacklevel=2)
        metrics = self._format_output_dict(*(np.float64(values[name]) for name in ORIGINAL_KEYS))
        self.logging_acc(metrics, prob_path)
        return metrics

    def append_metric(self, metric: dict) -> None:
        """Collect one :meth:`evaluate` result for :meth:`get_the_mean_metric`."""
        for key in metric:
            self.all_metrics[key].append(metric[key])

    def get_the_mean_metric(self) -> dict:
        """Mean of every collected indicator (NaN propagates, as in the original), logged as the average block."""
        mean_metric = {key: np.mean(values) for key, values in self.all_metrics.items()}
        self.logging_acc(mean_metric, ave=True)
        return mean_metric
