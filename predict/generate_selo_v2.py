"""SeLo v2 under the original's script name: ``generate_selo.py`` with ``--pipeline v2`` as the default.

    python predict/generate_selo_v2.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml --cache_path cache/X_v2
"""
import sys

from predict.generate_selo import main

if __name__ == "__main__":
    sys.exit(main(pipeline="v2"))
