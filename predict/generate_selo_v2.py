"""SeLo v2 under the original's script name: ``generate_selo.py`` with ``--pipeline v2`` as the default.

    python predict/generate_selo_v2.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml --cache_path cache/X_v2

It accepts the original v2 script's arguments (``--yaml_path``, ``--cache_path``, ``--src_data_path``,
``--src_anno_path``) with their meaning, and every option of ``generate_selo.py``; the command is
``selo-generate-v2`` (:func:`predict.cli.generate.main_v2`).
"""
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the package this file belongs to
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from predict.cli.generate import main_v2 as main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
