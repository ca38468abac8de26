"""The encoder contract and loader under the original's module name, and the original's self-check.

    from predict.model_encoder import EncoderSpecModel, load_encoder
    python predict/model_encoder.py --yaml_path predict/options/RSITMD/RSITMD_AMFMN.yaml [--image_path X] [--text T]

The code lives in :mod:`predict.encoders` (contract in ``base``, registry and yaml in ``registry``,
adapters beside them, the networks in :mod:`predict.layers`); the self-check is ``selo-check-encoder``
(:func:`predict.encoders.selfcheck.main`).
"""
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the package this file belongs to
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from predict.encoders.base import EncoderError, EncoderSpecModel, check_tiles, l2_normalize  # noqa: E402
from predict.encoders.registry import (  # noqa: E402
    ENCODER_REGISTRY,
    import_encoder_class,
    load_encoder,
    read_options,
    register_encoder,
    resolve_path,
)
from predict.encoders.selfcheck import main, self_check  # noqa: E402

__all__ = ["ENCODER_REGISTRY", "EncoderError", "EncoderSpecModel", "check_tiles", "import_encoder_class",
           "l2_normalize", "load_encoder", "main", "read_options", "register_encoder", "resolve_path", "self_check"]

if __name__ == "__main__":
    sys.exit(main())
