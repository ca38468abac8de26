"""Out-of-tree encoders for the pipeline tests, loaded by ``model.name: toy_encoders:<Class>`` from a yaml
(this folder is on pytest's ``pythonpath``, and on PYTHONPATH for subprocess runs: ``helpers.subprocess_env``)."""
import time

import numpy as np

from predict.model_encoder import EncoderSpecModel


class PositionScorer(EncoderSpecModel):
    """The position-based scorer of ../shared/reference/pipeline/README.md.

    On the position-coded image (R = column ramp, G = row ramp) the mean R and G of a tile decode its
    centre; the score is ``offset + sum_k amp_k * exp(-d_k^2 / (2 sigma_k^2))`` for the targets of the
    yaml's ``scorer`` entry. Optional ``scorer.delay`` sleeps per ``image_encoder`` call (for kill tests).
    """

    name = "position_scorer"

    def __init__(self, options, device=None):
        super().__init__(options, device)
        self.params = options["scorer"]

    def image_encoder(self, tiles):
        time.sleep(float(self.params.get("delay", 0)))
        tiles = np.asarray(tiles, dtype=np.float64)
        return np.stack([tiles[..., 0].mean(axis=(1, 2)), tiles[..., 1].mean(axis=(1, 2))], axis=1).astype(np.float32)

    def text_encoder(self, text):
        return np.ones(1, dtype=np.float32)

    def cosine_sim(self, image_vectors, text_vector):
        p = self.params
        vectors = np.asarray(image_vectors, dtype=np.float64)
        x = vectors[:, 0] / 255 * (p["width"] - 1)
        y = vectors[:, 1] / 255 * (p["height"] - 1)
        score = np.full(len(vectors), float(p.get("offset", 0.0)))
        for t in p["targets"]:
            score += t["amp"] * np.exp(-((x - t["x"]) ** 2 + (y - t["y"]) ** 2) / (2 * t["sigma"] ** 2))
        return score


class RednessEncoder(EncoderSpecModel):
    """Scores a tile by how red it is, whatever the text: enough to localise a red object in tests."""

    name = "redness"

    def image_encoder(self, tiles):
        tiles = np.asarray(tiles, dtype=np.float32) / 255
        redness = tiles[..., 0] - 0.5 * (tiles[..., 1] + tiles[..., 2])
        return np.stack([redness.mean(axis=(1, 2)), np.ones(len(tiles), np.float32)], axis=1)

    def text_encoder(self, text):
        return np.array([1.0, 0.0], dtype=np.float32)

    def cosine_sim(self, image_vectors, text_vector):
        return np.asarray(image_vectors, dtype=np.float64)[:, 0]


class NoDataZeroEncoder(RednessEncoder):
    """RednessEncoder through the default (original's) ``cosine_sim``, with a zero vector for black no-data
    tiles, which that similarity turns into NaN."""

    name = "nodata_zero"
    cosine_sim = EncoderSpecModel.cosine_sim

    def image_encoder(self, tiles):
        vectors = super().image_encoder(tiles)
        vectors[np.asarray(tiles).reshape(len(vectors), -1).max(axis=1) == 0] = 0
        return vectors
