"""The encoder registry, yaml reading and ``load_encoder``.

An encoder is picked by the yaml's ``model.name``: a registered name (``AMFMN``, ``LW_MCR``, ``demo``,
``open_clip``) or ``package.module:Class`` for a class that lives outside this repository (imported from
PYTHONPATH). Either way the class is constructed as ``Class(options, device)``, ``options`` being the
whole parsed yaml with its paths already resolved.
"""
from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path
from typing import Callable

import yaml

from predict.encoders.base import PRECISIONS, RUNTIMES, EncoderError, EncoderSpecModel
from predict.provenance import encoder_identity
from predict.resources import find_yaml, missing_yaml_message, project_root

# Built-in encoders by name -> "module:Class", imported only when asked for (keeps torch-free imports cheap).
ENCODER_REGISTRY: dict[str, str] = {
    "AMFMN": "predict.encoders.retrieval:AMFMNEncoder",
    "LW_MCR": "predict.encoders.retrieval:LWMCREncoder",
    "demo": "predict.encoders.demo:DemoEncoder",
    "open_clip": "predict.encoders.clip:OpenCLIPEncoder",
}

# Yaml keys holding file paths, resolved against the yaml's folder, then the folder holding the package
# (the checkout's root, or site-packages when installed: a preset's predict/checkpoints/... is the package's).
PATH_KEYS = (("optim", "resume"), ("dataset", "vocab_path"), ("model", "weights"), ("model", "seq2vec", "dir_st"))


def register_encoder(name: str, target: str) -> None:
    """Register ``target`` ("module:Class") under ``name`` for the yaml's ``model.name``."""
    ENCODER_REGISTRY[name] = target


def import_encoder_class(name: str) -> Callable:
    """The class behind a registered name or a ``package.module:Class`` path."""
    target = ENCODER_REGISTRY.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(ENCODER_REGISTRY))
        raise EncoderError(f"unknown encoder {name!r}: use one of {known} or 'package.module:Class'")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EncoderError(f"cannot import encoder module {module_name!r} (is it on PYTHONPATH?): {exc}") from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise EncoderError(f"module {module_name!r} has no encoder class {class_name!r}") from None


def resolve_path(path: str | None, base_dir: Path) -> str | None:
    """An absolute path as is; a relative one against ``base_dir`` if it exists there, else against
    :func:`~predict.resources.project_root` (the folder holding the ``predict`` package).

    When it exists in neither place, the first candidate whose folder exists is returned so that errors
    name it (a preset's ``predict/checkpoints/x.pt`` -> the package's folder), else the ``base_dir`` one.
    """
    if not path:
        return path
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return str(p)
    candidates = [base / p for base in (base_dir, project_root())]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    for candidate in candidates:
        if candidate.parent.is_dir():
            return str(candidate.resolve())
    return str(candidates[0].resolve())


def path_entries(options: dict):
    """``(keys, node)`` for each of ``PATH_KEYS`` present in ``options``: ``node[keys[-1]]`` is the path."""
    for keys in PATH_KEYS:
        node = options
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            yield keys, node


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_options(options: dict, where: str) -> None:
    """The keys the pipeline itself reads have the right type: ``model.name`` a non-empty string,
    ``model.batch_size`` a positive integer, ``model.precision`` one of :data:`PRECISIONS`, ``model.runtime``
    one of :data:`RUNTIMES`, the paths of
    ``PATH_KEYS`` strings. A bad one is an :class:`EncoderError` naming ``where`` and the key.

    >>> check_options({"model": {"name": "demo", "batch_size": "abc"}}, "x.yaml")
    Traceback (most recent call last):
    ...
    predict.errors.EncoderError: x.yaml: model.batch_size must be a positive integer, got 'abc'
    """
    model = options["model"]
    if not isinstance(model["name"], str) or not model["name"].strip():
        raise EncoderError(f"{where}: model.name must be an encoder name or 'package.module:Class', "
                           f"got {model['name']!r}")
    if "batch_size" in model and not _is_positive_int(model["batch_size"]):
        raise EncoderError(f"{where}: model.batch_size must be a positive integer, got {model['batch_size']!r}")
    if "precision" in model and model["precision"] not in PRECISIONS:
        raise EncoderError(f"{where}: model.precision {model['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if "runtime" in model and model["runtime"] not in RUNTIMES:
        raise EncoderError(f"{where}: model.runtime {model['runtime']!r} is not one of {', '.join(RUNTIMES)}")
    for keys, node in path_entries(options):
        if node[keys[-1]] is not None and not isinstance(node[keys[-1]], str):
            raise EncoderError(f"{where}: {'.'.join(keys)} must be a file path, got {node[keys[-1]]!r}")


def read_options(yaml_path: str | os.PathLike) -> dict:
    """Parse an encoder yaml (a path, or a built-in preset's name: :func:`~predict.resources.find_yaml`),
    check the keys the pipeline reads (:func:`check_options`) and resolve the paths it holds (see
    ``PATH_KEYS``)."""
    given, yaml_path = yaml_path, find_yaml(yaml_path)
    if not yaml_path.is_file():
        raise EncoderError(missing_yaml_message(Path(given)))
    try:
        with open(yaml_path, encoding="utf-8") as f:
            options = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise EncoderError(f"{yaml_path}: not valid yaml ({str(exc).splitlines()[0]})") from None
    if not isinstance(options, dict) or not isinstance(options.get("model"), dict) or "name" not in options["model"]:
        raise EncoderError(f"{yaml_path}: missing key 'model.name' (the encoder to build)")
    check_options(options, str(yaml_path))
    base = yaml_path.resolve().parent
    for keys, node in path_entries(options):
        if isinstance(node[keys[-1]], str):
            node[keys[-1]] = resolve_path(node[keys[-1]], base)
    options["_yaml_path"] = str(yaml_path.resolve())
    return options


class TrackedOptions(dict):
    """A yaml mapping (and its nested mappings) that remembers which keys the code looked up: ``read`` (found)
    and ``missing`` (asked for, absent), so that a misspelt key is caught instead of silently defaulted."""

    def __init__(self, mapping: dict, where: str = ""):
        super().__init__({key: TrackedOptions(value, f"{where}{key}.") if isinstance(value, dict) else value
                          for key, value in mapping.items()})
        self.where, self.read, self.missing = where, set(), set()

    def _look_up(self, key) -> None:
        (self.read if dict.__contains__(self, key) else self.missing).add(key)

    def __getitem__(self, key):
        self._look_up(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._look_up(key)
        return super().__contains__(key)

    def get(self, key, default=None):
        self._look_up(key)
        return super().get(key, default)

    def setdefault(self, key, default=None):
        self._look_up(key)
        return super().setdefault(key, default)

    def misspelt(self) -> list[tuple[str, str]]:
        """``(written, meant)`` full key names: each key the code asked for and did not find that a key it
        never read resembles (``model.precison`` for ``model.precision``)."""
        found = []
        unread = [key for key in self if isinstance(key, str) and key not in self.read]
        for key in sorted(k for k in self.missing if isinstance(k, str)):
            found += [(self.where + close, self.where + key) for close in difflib.get_close_matches(key, unread, 1, 0.8)]
        for value in dict.values(self):
            if isinstance(value, TrackedOptions):
                found += value.misspelt()
        return found


for dumper in (yaml.SafeDumper, yaml.Dumper):  # an encoder's options dump as the yaml mapping they were read from
    yaml.add_representer(TrackedOptions, yaml.representer.SafeRepresenter.represent_dict, Dumper=dumper)


def check_spelling(options: TrackedOptions, where: str) -> None:
    """One :class:`EncoderError` line naming the yaml and a key the encoder did not read because it is
    misspelt (after the encoder was built from ``options``).

    >>> options = TrackedOptions({"model": {"name": "demo", "precison": "bf16"}})
    >>> options["model"].get("precision", "fp32")
    'fp32'
    >>> check_spelling(options, "x.yaml")
    Traceback (most recent call last):
    predict.errors.EncoderError: x.yaml: unknown key 'model.precison' (did you mean 'model.precision'? it was not read)
    """
    for written, meant in options.misspelt():
        raise EncoderError(f"{where}: unknown key {written!r} (did you mean {meant!r}? it was not read)")


def load_encoder(yaml_path: str | os.PathLike, device: str | None = None,
                 checkpoint: str | None = None, batch_size: int | None = None, *, runtime: str | None = None,
                 precision: str | None = None, sample=None, runtime_choice: dict | None = None) -> EncoderSpecModel:
    """Build the encoder a yaml describes, with its weights loaded and its runtime chosen.

    Args:
        yaml_path: the encoder yaml (``model.name``, ``optim.resume``, ``dataset.vocab_path``, ...), or a
            built-in preset's name (``"demo"``, ``"RSITMD_AMFMN"``...: :mod:`predict.resources`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; CUDA when available if None.
        checkpoint: overrides the yaml's ``optim.resume``.
        batch_size: overrides the yaml's ``model.batch_size`` (tiles per ``image_encoder`` call).
        runtime: overrides the yaml's ``model.runtime`` (when neither names one, ``$SELO_RUNTIME``, else
            ``auto``): ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (:mod:`predict.encoders.runtimes`).
        precision: overrides the yaml's ``model.precision`` (``fp32``, ``fp16``, ``bf16``, ``int8``).
        sample: tiles of the images at hand, uint8 RGB ``(N, S, S, 3)``, or a function ``(count, tile_size)
            -> tiles`` (called only when an export must be checked or an int8 model calibrated).
        runtime_choice: another encoder's ``runtime_choice``: run exactly that (a Ray actor, a search).
    """
    from predict.encoders.runtimes import INT8_MIN_COSINE, attach_runtime, default_runtime, int8_floor

    options = TrackedOptions(read_options(yaml_path))  # a fresh dict each call: changed below without copying
    where = options["_yaml_path"]
    if checkpoint is not None:
        options.setdefault("optim", {})["resume"] = resolve_path(checkpoint, Path.cwd())
    if batch_size is not None:
        if not _is_positive_int(batch_size):
            raise EncoderError(f"batch_size must be a positive integer, got {batch_size!r}")
        options["model"]["batch_size"] = batch_size
    if runtime_choice is not None:  # the precision it was chosen for: part of the options' identity
        precision = runtime_choice.get("precision", precision)
    for key, value, choices in (("runtime", runtime, RUNTIMES), ("precision", precision, PRECISIONS)):
        if value is not None:
            if value not in choices:
                raise EncoderError(f"{key} {value!r} is not one of {', '.join(choices)}")
            options["model"][key] = value
    cls = import_encoder_class(str(options["model"]["name"]))
    if device is None:
        from predict.encoders.torch_encoder import default_device

        device = default_device()
    encoder = cls(options, device)
    model = options["model"]
    asked = (model.get("runtime", default_runtime()), model.get("precision", "fp32"))
    floor = int8_floor(model.get("int8_min_cosine", INT8_MIN_COSINE), where)
    check_spelling(options, where)
    if not isinstance(encoder, EncoderSpecModel):
        missing = [m for m in ("image_encoder", "text_encoder", "cosine_sim") if not callable(getattr(encoder, m, None))]
        if missing:
            raise EncoderError(f"{cls.__name__} lacks {', '.join(missing)} of the EncoderSpecModel contract")
    attach_runtime(encoder, *asked, sample, int8_min_cosine=floor, pinned=runtime_choice)
    encoder_identity(encoder)  # taken now: the code just imported, the weights just read, the runtime just chosen
    return encoder
