"""The official SeLo indicators: ``from evaluations import evaluate`` (the original's class: ``evaluations.SLM``)."""
from __future__ import annotations

import os

import numpy as np

from evaluations.metrics import EvaluationInputError, evaluate_gray, read_probmap

__all__ = ["EvaluationInputError", "evaluate"]


def evaluate(probmap: np.ndarray | str | os.PathLike, polygons: list) -> dict:
    """Rsu, Ras, Rda, Rmi of a probability map and its annotation polygons.

    Args:
        probmap: uint8 gray ``(H, W)`` (what ``localise`` returns) or the path of a map file (read as gray).
        polygons: one list of ``[x, y]`` pixel vertices per annotated region (x = column, y = row).

    Returns:
        ``{"Rsu", "Ras", "Rda", "Rmi"}`` as floats (the original evaluator's numbers), ``"centers"``: the
        attention centres ``(x, y)`` best first, ``"circles"``: one annotation circle ``(cx, cy, r)`` per polygon.

    Raises:
        EvaluationInputError: one line naming the map (and polygon) and the problem.

    >>> gray = np.zeros((1200, 1200), np.uint8); gray[400:800, 400:800] = 255
    >>> result = evaluate(gray, [[[400, 400], [800, 400], [800, 800], [400, 800]]])
    >>> result["circles"], result["centers"], result["Rda"]  # the original's even 50x50 box filters shift a peak
    ([(600, 600, 424)], [(602, 602)], 1.0)
    """
    if isinstance(probmap, (str, os.PathLike)):
        name = os.fspath(probmap)
        gray = read_probmap(name)
    else:
        name, gray = "probmap", probmap
    score = evaluate_gray(gray, polygons, name)
    return {**score.as_dict(), "centers": score.centers, "circles": score.circles}
