"""SeLo v2 under the original's script name: ``generate_selo.py`` with ``--pipeline v2`` as the default.

    python predict/generate_selo_v2.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml --cache_path cache/X_v2

It accepts the original v2 script's arguments (``--yaml_path``, ``--cache_path``, ``--src_data_path``,
``--src_anno_path``) with their meaning, and every option of ``generate_selo.py``.
"""
import sys

from predict import generate_selo


def main(argv=None) -> int:
    """``generate_selo.main`` with the v2 pipeline by default (the ``selo-generate-v2`` command)."""
    return generate_selo.main(argv, pipeline="v2")


if __name__ == "__main__":
    sys.exit(main())
