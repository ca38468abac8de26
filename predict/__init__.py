"""SeLo: Semantic Localization for remote-sensing images.

    from predict import load_encoder, localise
    encoder = load_encoder("predict/options/demo/demo_encoder.yaml", device="cpu")
    probmap = localise("scene.jpg", "a red track around a green football field", encoder)  # uint8 (H, W)

Subpackages: ``core`` (pure array functions and the pipelines table), ``encoders`` (the contract, registry,
loading and adapters), ``layers`` (the networks), ``run`` (``localise()``, the tile-vector store, the run
over a testset), ``io`` (files in and out), ``demo`` (synthetic data and the demo encoder's training).
The names are imported on first use, so ``import predict`` stays light.
"""
import sys
import types
from importlib import import_module
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_EXPORTS = {
    "load_encoder": "predict.encoders.registry",
    "register_encoder": "predict.encoders.registry",
    "EncoderSpecModel": "predict.encoders.base",
    "localise": "predict.run.localise",
    "TileVectorStore": "predict.run.vectors",
    "PIPELINES": "predict.core.pipelines",
    "PipelineSpec": "predict.core.pipelines",
    "MapFilter": "predict.core.heatmap",
}
__all__ = ["REPO_ROOT", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'predict' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``predict.localise`` the library function when the script ``predict/localise.py`` is imported
    (the import system would set the attribute to the script's module; it stays in ``sys.modules``)."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
