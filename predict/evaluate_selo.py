"""The original's evaluation under its name: ``python predict/evaluate_selo.py ...`` is ``selo-evaluate ...``.

    python predict/evaluate_selo.py --cache_path cache/X --src_anno_path test_data/annotations/anno.json [--report]

The command lives in :mod:`predict.cli.evaluate`; ``main`` and ``parse_args`` are its own.
"""
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the package this file belongs to
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from predict.cli.evaluate import evaluate, main, parse_args  # noqa: E402

__all__ = ["evaluate", "main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
