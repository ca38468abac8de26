"""SeLo pipelines as data: v1 and v2 are two entries of :data:`PIPELINES`, read by the same code.

A pipeline says how the image is tiled (steps, the half-offset grids, what to do with a step longer than
the image), whether the best tiles are refined by smaller boxes (v2), how the query vector is formed
(averaged with word-shuffled copies in v2) and which filter denoises the map. A variant is a new entry or
:meth:`PipelineSpec.replace`, e.g. v1 with v2's Gaussian filter::

    PIPELINES["v1"].replace(name="v1-gauss", map_filter=MapFilter(gaussian=255))
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from predict.core import tiling
from predict.core.heatmap import MapFilter
from predict.core.notes import warn


@dataclass(frozen=True)
class Refinement:
    """A second stage (v2): keep the best ``keep_fraction`` of the first-stage tiles (``int(f * n) + 1``) and
    score boxes of half-size ``box_half_sizes`` around 9 points of each."""

    keep_fraction: float = 0.15
    box_half_sizes: tuple[int, ...] = (64, 128)


@dataclass(frozen=True)
class PipelineSpec:
    """One SeLo pipeline.

    Attributes:
        name: its name in logs and results (``"v1"``, ``"v2"``).
        steps: tile sides of the first stage, pixels.
        half_offset: each step also tiled from offset ``step - int(step / 2)`` (v1).
        skip_oversized_steps: a step longer than the image's shorter side is skipped with a warning (v1);
            otherwise it is cut as the original did, a strip stretched to a square (v2), with a warning.
        refinement: the second stage, or None.
        shuffled_copies: the query vector is the mean of the query's and of this many word-shuffled
            copies' vectors (v2: 4, "chaotic self-feeding"); 0 for the query alone.
        map_filter: the denoising filter of the uint8 map.
    """

    name: str
    steps: tuple[int, ...]
    half_offset: bool
    skip_oversized_steps: bool
    refinement: Refinement | None
    shuffled_copies: int
    map_filter: MapFilter

    def replace(self, **changes) -> PipelineSpec:
        """A copy with ``changes`` (``steps`` may be given as ``"256_512"``, a list or one integer; anything
        else, e.g. ``256.9`` or ``"256__512"``, is a ValueError: :func:`~predict.core.tiling.parse_steps`)."""
        if "steps" in changes:
            changes["steps"] = tuple(tiling.parse_steps(changes["steps"]))
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Every parameter as plain JSON data (what a result records of the pipeline that made it)."""
        return dataclasses.asdict(self)

    def first_stage_tiles(self, height: int, width: int, name: str = "image",
                          notes: list[str] | None = None) -> list[tiling.Tile]:
        """The first-stage tiles of a ``height`` x ``width`` image, sorted (warnings: see :mod:`~predict.core.notes`).

        >>> len(PIPELINES["v1"].first_stage_tiles(2000, 3000))
        261
        """
        steps = self.steps
        if self.skip_oversized_steps:
            steps = tiling.usable_steps(height, width, steps, name, notes)
        elif min(height, width) < max(steps):
            warn(f"{name}: image {height}x{width} is smaller than the {self.name} tile {max(steps)}; "
                 "stretching strips as the original did", notes)
        return tiling.multiscale_tiles(height, width, steps, self.half_offset)


PIPELINES: dict[str, PipelineSpec] = {
    "v1": PipelineSpec("v1", steps=(256, 512, 768), half_offset=True, skip_oversized_steps=True, refinement=None,
                       shuffled_copies=0, map_filter=MapFilter(median=251)),
    "v2": PipelineSpec("v2", steps=(512,), half_offset=False, skip_oversized_steps=False, refinement=Refinement(),
                       shuffled_copies=4, map_filter=MapFilter(gaussian=255)),
}


def get_pipeline(pipeline: str | PipelineSpec, steps: str | Sequence[int] | None = None) -> PipelineSpec:
    """The :class:`PipelineSpec` of a name in :data:`PIPELINES` (or a spec as is), with ``steps`` if given.

    >>> get_pipeline("v1", "256_512").steps
    (256, 512)
    """
    if isinstance(pipeline, PipelineSpec):
        spec = pipeline
    elif pipeline in PIPELINES:
        spec = PIPELINES[pipeline]
    else:
        raise ValueError(f"unknown pipeline {pipeline!r}: use one of {', '.join(PIPELINES)}")
    return spec if steps is None else spec.replace(steps=steps)
