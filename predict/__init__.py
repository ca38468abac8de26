"""SeLo: Semantic Localization for remote-sensing images.

    from predict import load_encoder, localise
    encoder = load_encoder("demo", device="cpu")  # a built-in preset by name, or the path of an encoder yaml
    probmap = localise("scene.jpg", "a red track around a green football field", encoder)  # uint8 (H, W)

Subpackages: ``core`` (pure array functions and the pipelines table), ``encoders`` (the contract, registry,
loading and adapters), ``layers`` (the networks), ``run`` (``localise()``, the tile-vector store, the run
over a testset), ``io`` (files in and out), ``demo`` (synthetic data and the demo encoder's training),
``cli`` (the commands), ``web`` (the explorer's page and API); ``resources`` (the packaged presets,
checkpoint, vocabularies and page). The names are imported on first use, so ``import predict`` stays light.
"""
from importlib import import_module

_EXPORTS = {
    "load_encoder": "predict.encoders.registry",
    "register_encoder": "predict.encoders.registry",
    "EncoderSpecModel": "predict.encoders.base",
    "localise": "predict.localisation.maps",
    "TileVectorStore": "predict.localisation.vectors",
    "PIPELINES": "predict.core.pipelines",
    "PipelineSpec": "predict.core.pipelines",
    "MapFilter": "predict.core.heatmap",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'predict' has no attribute {name!r}")
