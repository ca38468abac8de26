"""What may be asked of the explorer: an image by its bare file name, a query, a pipeline and its steps, and
at most so many first-stage tiles. Each check refuses with a domain error (:mod:`predict.errors`):
:class:`BadRequest` for a malformed name, :class:`InvalidRequest` for a value that cannot be accepted."""
from __future__ import annotations

from dataclasses import dataclass

from predict.core.pipelines import PIPELINES, PipelineSpec, get_pipeline
from predict.core.tiling import parse_steps
from predict.encoders.base import EncoderSpecModel
from predict.errors import BadRequest, InvalidRequest

STEP_RANGE = (64, 4096)  # pixels: smaller steps would ask the encoder for tens of thousands of tiles
MAX_STEPS = 6


@dataclass(frozen=True)
class Request:
    """What was asked: a map of ``query`` on ``image`` with ``spec`` (``query`` None: only its tiles encoded)."""

    image: str
    query: str | None
    spec: PipelineSpec


def bare_name(name) -> str:
    """``name`` when it is a bare file name (``..`` inside a name such as ``site..v2.jpg`` is fine);
    :class:`BadRequest` for anything else: not a text, a path, ``.`` or ``..`` alone, a NUL.

    >>> bare_name("site..v2.jpg")
    'site..v2.jpg'
    >>> bare_name("../a.jpg")
    Traceback (most recent call last):
    predict.errors.BadRequest: image '../a.jpg': a bare file name is expected (no path)
    """
    if not isinstance(name, str) or not name:
        raise BadRequest("image: expected a file name as /api/images lists it")
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise BadRequest(f"image {name!r}: a bare file name is expected (no path)")
    return name


def check_query(query, encoder: EncoderSpecModel, max_query: int) -> tuple[str, list[str]]:
    """The query stripped and its words unknown to ``encoder``; :class:`InvalidRequest` when it is not a
    non-empty text of at most ``max_query`` characters or when no word of it is known (the map would mean
    nothing)."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("query: expected a non-empty text")
    if len(query) > max_query:
        raise InvalidRequest(f"query: {len(query)} characters, at most {max_query}")
    query = query.strip()
    try:
        return query, encoder.unknown_words(query)
    except ValueError as error:  # not one word known
        raise InvalidRequest(str(error)) from None


def pipeline_spec(name, steps=None) -> PipelineSpec:
    """The pipeline ``name`` with ``steps`` (``"256_512"``, a list of integers; None, ``""`` or ``[]``: its
    own), read by :func:`~predict.core.tiling.parse_steps`; :class:`InvalidRequest` when the pipeline is
    unknown or the steps are malformed (floats, booleans, other scripts' digits, ``"256__512"``) or out of
    range.

    >>> pipeline_spec("v1", "256_512").steps, pipeline_spec("v2", []) == PIPELINES["v2"]
    ((256, 512), True)
    >>> pipeline_spec("v1", "256.7")
    Traceback (most recent call last):
    predict.errors.InvalidRequest: steps '256.7': expected tile sides in pixels joined by '_' (e.g. 256_512)
    """
    if not isinstance(name, str) or name not in PIPELINES:
        raise InvalidRequest(f"pipeline {name!r}: use one of {', '.join(PIPELINES)}")
    if steps is None or steps == "" or steps == []:
        return PIPELINES[name]
    try:
        sides = parse_steps(steps)
    except ValueError:  # its message names the command line's flag: this one names the request's field
        raise InvalidRequest(f"steps {steps!r}: expected tile sides in pixels joined by '_' (e.g. 256_512)") from None
    low, high = STEP_RANGE
    if len(sides) > MAX_STEPS or not all(low <= s <= high for s in sides):
        raise InvalidRequest(f"steps {sides!r}: at most {MAX_STEPS} steps of {low} to {high} pixels")
    return get_pipeline(name, sides)


def first_stage(request: Request, height: int, width: int, max_tiles: int) -> list:
    """The first-stage tiles of ``request`` on its image (``height`` x ``width``); :class:`InvalidRequest`,
    with the count, above ``max_tiles`` (a bound on one request's encoding)."""
    stage1 = request.spec.first_stage_tiles(height, width, request.image)
    if len(stage1) > max_tiles:
        raise InvalidRequest(f"steps {'_'.join(map(str, request.spec.steps))} on {request.image} ({width} x "
                             f"{height}): {len(stage1)} tiles, more than the {max_tiles} one request may ask "
                             "for; use larger steps")
    return stage1
