"""The original's command under its name: ``python predict/generate_selo.py ...`` is ``selo-generate ...``.

    python predict/generate_selo.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml --cache_path cache/X

The command lives in :mod:`predict.cli.generate`; ``main`` and ``build_parser`` are its own.
"""
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the package this file belongs to
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from predict.cli.generate import build_parser, generate, main, run_config  # noqa: E402

__all__ = ["build_parser", "generate", "main", "run_config"]

if __name__ == "__main__":
    sys.exit(main())
