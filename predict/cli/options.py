"""The commands' options, in one module: argparse types (one line each when a value is refused, exit 2), the
options several commands share, and the checks of paths a command line names.

Values are parsed by the library's own parsers (:func:`~predict.core.tiling.parse_steps`,
:meth:`~predict.core.stretch.Stretch.parse`), so a rule is written once.
"""
from __future__ import annotations

import argparse
import os

from predict.core.stretch import Stretch
from predict.core.tiling import parse_steps
from predict.encoders.base import PRECISIONS, RUNTIMES
from predict.io.progress import PROGRESS_STYLES
from predict.resources import yaml_help

EXIT_CANNOT_START = 2


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_CANNOT_START, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    >>> positive_int("16")
    16
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def tile_steps(text: str) -> tuple[int, ...]:
    """argparse type: tile sides joined by ``_``, each a positive integer.

    >>> tile_steps("256_512")
    (256, 512)
    """
    try:
        return tuple(parse_steps(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers joined by '_' (e.g. 256_512_768), got {text!r}") from None


def parse_bands(text: str) -> tuple[int, ...]:
    """``"4,3,2"`` -> ``(4, 3, 2)`` (1-based band numbers: one, gray, or three, red, green and blue).

    >>> parse_bands("4,3,2")
    (4, 3, 2)
    """
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers joined by ',', e.g. 4,3,2, got {text!r}") from None
    if len(bands) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected one band (gray) or three (red, green, blue), got {text!r}")
    return bands


def parse_stretch(text: str) -> Stretch | None:
    """``"2,98"`` -> one range for all bands; ``"2,98,per-band"`` -> a range per band; ``"none"`` -> None
    (scaled from the data type's range)."""
    if text.lower() in ("none", "off"):
        return None
    try:
        return Stretch.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_quantile(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a quantile in [0, 1), e.g. 0.95, got {text!r}")
    return value


def add_yaml_argument(parser: argparse.ArgumentParser, default: str | None = None, *, required: bool = True,
                      purpose: str = "") -> None:
    """``--yaml_path``: an encoder's yaml or a built-in preset's name (required unless it has a ``default``
    or ``required`` is False; ``purpose`` opens its help)."""
    parser.add_argument("--yaml_path", default=default, required=required and default is None,
                        help=f"{purpose}{yaml_help(default)}")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--precision``: what runs the encoder's image network (the yaml's
    ``model.runtime`` and ``model.precision`` by default; :mod:`predict.encoders.runtimes`)."""
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="what runs the image encoder: auto (default: the fastest exact one here), torch, "
                             "onnxruntime, openvino (overrides the yaml's model.runtime)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="fp32, fp16 (CUDA), bf16, or int8 with --runtime onnxruntime/openvino (calibrated on "
                             "the images at hand; overrides the yaml's model.precision)")


def runtime_options(args: argparse.Namespace) -> dict:
    """The ``load_encoder`` keywords of :func:`add_runtime_arguments`' flags."""
    return {"runtime": args.runtime, "precision": args.precision}


def add_address_argument(parser: argparse.ArgumentParser) -> None:
    """The archive commands' ``--address``: the Ray cluster to join."""
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="join this Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a local Ray for this command")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress``: how the run's progress shows (see :mod:`predict.io.progress`)."""
    parser.add_argument("--progress", choices=PROGRESS_STYLES, default="bar",
                        help="bar: progress bars on the terminal (default); json: one JSON line per step on stderr, "
                             "for a program that runs the command (e.g. the QGIS plugin); none: no progress")


def add_band_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bands`` and ``--stretch``: how a scene's bands become the pipeline's 8-bit RGB."""
    parser.add_argument("--bands", type=parse_bands, default=None,
                        help="1-based bands, one (gray) or three (R,G,B), e.g. 4,3,2 (default: the file's RGB)")
    parser.add_argument("--stretch", type=parse_stretch, default=Stretch(),
                        help="percentiles LOW,HIGH of the stretch of 12/16-bit and float data, one range for all "
                             "bands (default 2,98); LOW,HIGH,per-band for a range per band (colours shift); none "
                             "for the data type's range. 8-bit data are never stretched")


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """``--query`` (repeatable) and ``--queries`` (a file of one query per line)."""
    parser.add_argument("--query", action="append", default=[], help="a text query; repeat for more")
    parser.add_argument("--queries", help="a text file of queries, one per line (blank lines skipped)")


def read_queries(args: argparse.Namespace) -> list[str]:
    """``--query`` values, then the lines of ``--queries``, in that order."""
    queries = list(args.query)
    if args.queries:
        with open(args.queries, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first query
            queries += [line.strip() for line in f if line.strip()]
    if not queries:
        raise ValueError("no query: give --query TEXT or --queries FILE")
    return queries


def require_folder(path: str, what: str) -> None:
    """A one-line ``FileNotFoundError`` unless ``path`` is an existing folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: {what} not found" + (" (it is a file)" if os.path.isfile(path) else ""))
