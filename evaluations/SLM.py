"""Compatibility with the original evaluator: ``from evaluations.SLM import SLM``.

Every public method of the original, with its signature and results, computed by
:mod:`evaluations.metrics`: ``read_gray_to_prob``, ``generate_mask_by_points``, ``rsu``, ``ras``, ``rda``,
``rmi`` (note its argument order ``rsu, rda, ras``), ``set_visual_options``, ``evaluate``,
``append_metric``, ``get_the_mean_metric``, ``logging_acc``. ``prob`` is the original's float64
``gray / 255.0`` map ``(H, W)``; its attention centres are found on ``uint8(prob * 255)``, as the original.

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

import cv2
import numpy as np

from evaluations import metrics
from evaluations.metrics import EvaluationInputError, compute_score, read_probmap
from evaluations.utils import ORIGINAL_KEYS, block_lines, get_logger


class SLM:
    """The original's evaluator class (same public methods and dict keys)."""

    def __init__(self, logger=None):
        self.logger = logger if logger is not None else get_logger()
        self.all_metrics = self._format_output_dict()
        self.visual_ras = False
        self.src_addmap_path = None

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

    def set_visual_options(self, visual_ras: bool, src_addmap_path: str | None) -> bool:
        """Make :meth:`evaluate` draw its Ras figure on the image ``src_addmap_path`` (see :meth:`ras`)."""
        self.visual_ras = visual_ras
        self.src_addmap_path = src_addmap_path
        return True

    @staticmethod
    def read_gray_to_prob(probmap_path: str) -> np.ndarray:
        """The map file as the original's probability: float64 ``gray / 255.0`` ``(H, W)``."""
        return read_probmap(probmap_path) / 255.0

    @staticmethod
    def generate_mask_by_points(prob: np.ndarray, points_list: list) -> np.ndarray:
        """The annotation mask, float64 0/1 ``(H, W)`` of ``prob``'s shape (one ``cv2.fillPoly``)."""
        return metrics.annotation_mask(np.shape(prob), points_list).astype(np.float64)

    @staticmethod
    def rsu(prob: np.ndarray, mask: np.ndarray) -> np.float64:
        """Rsu of a probability map and a mask, from the original's float64 sums."""
        return metrics.rsu_of_sums(np.sum(np.multiply(prob, mask)), np.sum(prob), np.sum(mask), np.size(mask))

    @staticmethod
    def _centres(prob: np.ndarray) -> list:
        """The attention centres ``(x, y)``: peaks of ``uint8(prob * 255)``, ranked by ``prob`` (>= 0.5)."""
        gray = np.asarray(prob * 255.0, dtype=np.uint8)
        return metrics.rank_centres(metrics.region_centroids(metrics.local_maxima(gray)), prob, 0.5)

    def ras(self, region_lists: list, prob: np.ndarray, visual: bool = True, src_img: str | None = None) -> np.float64:
        """Ras of the polygons ``region_lists`` on ``prob``.

        With ``visual`` and an image path ``src_img``, the annotation circles and the numbered attention
        centres are drawn on that image and written to ``./img_circle.jpg``, as the original.
        """
        circles = [metrics.annotation_circle(polygon) for polygon in region_lists]
        centres = self._centres(prob)
        value = np.float64(metrics.ras(circles, centres))
        if visual and src_img is not None:
            self._draw_ras(src_img, circles, centres)
        return value

    def _draw_ras(self, src_img: str, circles: list, centres: list) -> None:
        """The original's Ras figure: circles (colour 2, width 3), centre k as a circle of radius 6k and its number."""
        image = cv2.imread(src_img)
        if image is None:
            raise EvaluationInputError(f"{src_img}: cannot read the image to draw the Ras figure on")
        self.logger.info("centers_and_radius: %s", circles)
        self.logger.info("prob_centers: %s", centres)
        for cx, cy, radius in circles:
            cv2.circle(image, (cx, cy), radius, 2, 3)
        for index, point in enumerate(centres, start=1):
            cv2.circle(image, point, 6 * index, 1, 4)
            cv2.putText(image, str(index), point, cv2.FONT_HERSHEY_COMPLEX, 6, (0, 0, 0), 25)
        if not cv2.imwrite("./img_circle.jpg", image):  # the original's file, quality 95
            raise OSError("./img_circle.jpg: cannot write the Ras figure")

    def rda(self, region_lists: list, prob: np.ndarray) -> np.float64:
        """Rda of the polygons ``region_lists`` on ``prob``."""
        circles = [metrics.annotation_circle(polygon) for polygon in region_lists]
        return np.float64(metrics.rda(circles, self._centres(prob)))

    @staticmethod
    def rmi(rsu: float, rda: float, ras: float) -> float:
        """Rmi, with the original's argument order ``(rsu, rda, ras)``."""
        return metrics.rmi(rsu, ras, rda)

    def evaluate(self, prob_path: str, region_list: list) -> dict:
        """Rsu, Rda, Ras, Rmi of the probability map file ``prob_path`` and its annotation polygons."""
        gray = read_probmap(prob_path)
        try:
            score = compute_score(gray, region_list)
        except EvaluationInputError as error:
            raise EvaluationInputError(f"{prob_path}: {error}") from None
        if self.visual_ras and self.src_addmap_path is not None:
            self._draw_ras(self.src_addmap_path, score.circles, score.centers)
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
