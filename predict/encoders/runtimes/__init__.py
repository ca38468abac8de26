"""What runs an encoder's image network: torch as it is, or its ONNX export run by ONNX Runtime or OpenVINO,
in fp32 (checked against torch) or int8 (calibrated on the images at hand, its cosine to fp32 measured).

:func:`attach_runtime` makes the choice (``load_encoder`` calls it with yaml ``model.runtime`` and
``model.precision``, or ``--runtime`` / ``--precision``):

- ``torch``: the encoder as it is.
- ``onnxruntime`` / ``openvino``: the network :meth:`~predict.encoders.base.EncoderSpecModel.image_network`
  gives, exported to ONNX once and checked on a probe of tiles of the images at hand: every vector's
  cosine to torch's at least :data:`EXPORT_MIN_COSINE`, else the runtime is refused in one line.
- ``auto`` (the default, unless ``$SELO_RUNTIME`` names another): torch on a GPU; on a CPU, the fastest of
  torch and the exports that passed their check, as timed on the probe when the model was exported; torch
  when the encoder has no network to export or no tiles were given to check one (the reason in one log line).
- precision ``int8`` (ONNX Runtime or OpenVINO named, never chosen by ``auto``): static quantisation
  calibrated on tiles of the images at hand (:mod:`~predict.encoders.runtimes.int8`); the cosine of its
  vectors to fp32's on held-out tiles is logged, kept in the encoder's identity, and below the floor
  (yaml ``model.int8_min_cosine``, default :data:`INT8_MIN_COSINE`) the model is refused in one line.

Exported models are stored through :mod:`predict.provenance` under
``$SELO_RUNTIME_CACHE`` (default ``$XDG_CACHE_HOME/selo/runtimes``, ``~/.cache/...``): the ONNX model is
keyed by the network's identity (:func:`~predict.provenance.network_key`) and the code and versions that
exported it; an int8 model also by its calibration tiles. A stored model is used only once verified. The
choice is the encoder's ``runtime_choice`` (JSON), part of its identity: vectors of another runtime or
precision are never taken for these. Another process (a Ray actor, a later search) gets the same choice with
``load_encoder(..., runtime_choice=choice)``, which loads that very model without probing again.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from predict.encoders.base import RUNTIMES, EncoderError, EncoderSpecModel
from predict.errors import first_line
from predict.io.logs import LOGGER_NAME
from predict.provenance import (StoredFileError, array_key, code_digest, digest_of, network_key, read_stored,
                                read_stored_json, remove_stored, seal_file, short, verify_stored, write_stored_json)

EXPORT_MIN_COSINE = 0.99999  # per vector, fp32 export against torch
INT8_MIN_COSINE = 0.995  # default floor of the mean cosine of int8 vectors to fp32's (yaml model.int8_min_cosine)
PROBE_TILES = 16  # tiles that check an export and time each runtime
SAMPLE_TILES = 128  # tiles an int8 model is made from: 3 in 4 calibrate it, the 4th are held out to measure it
HELD_OUT_EVERY = 4

# (count, tile size) -> up to that many uint8 RGB tiles (N, S, S, 3) of the images at hand
TileSample = Callable[[int, int], np.ndarray]


def default_runtime() -> str:
    """The runtime when neither ``--runtime`` nor yaml ``model.runtime`` names one: ``$SELO_RUNTIME``, else
    ``auto`` (a machine or a test suite that wants one runtime everywhere sets it)."""
    value = os.environ.get("SELO_RUNTIME") or "auto"
    if value not in RUNTIMES:
        raise EncoderError(f"SELO_RUNTIME={value!r} is not one of {', '.join(RUNTIMES)}")
    return value


def cache_root() -> str:
    """Where exported models are stored: ``$SELO_RUNTIME_CACHE``, else ``$XDG_CACHE_HOME/selo/runtimes``."""
    if os.environ.get("SELO_RUNTIME_CACHE"):
        return os.environ["SELO_RUNTIME_CACHE"]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "selo", "runtimes")


def _logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _export_key(encoder) -> str:
    from predict.encoders.runtimes import exported

    return digest_of("onnx", network_key(encoder), code_digest(exported.__name__))


def _int8_key(export: str, runtime: str, calibration: str) -> str:
    from predict.encoders.runtimes import int8

    return digest_of("int8", export, runtime, calibration, code_digest(int8.__name__))


def _folder(encoder, kind: str, key: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(getattr(encoder, "name", "encoder")))
    return os.path.join(cache_root(), f"{name}-{kind}-{short(key)}")


def _model_files(folder: str, runtime: str, precision: str) -> list[str]:
    """The stored model files, the one a runtime opens first."""
    if precision == "int8" and runtime == "openvino":
        return [os.path.join(folder, "model.xml"), os.path.join(folder, "model.bin")]
    return [os.path.join(folder, "model.onnx")]


def _inputs(encoder, tiles: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(encoder.network_input(tiles), dtype=np.float32))


def _torch_vectors(encoder, tiles: np.ndarray) -> np.ndarray:
    with encoder.inference():
        return np.asarray(encoder.encode_batch(tiles), dtype=np.float32)


def _tiles_per_second(encode: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray) -> float:
    """Tiles per second of ``encode`` on ``tiles``: the better of two timed calls after a warm-up."""
    encode(tiles)
    best = min(_timed(encode, tiles) for _ in range(2))
    return round(len(tiles) / best, 2)


def _timed(encode, tiles) -> float:
    start = time.perf_counter()
    encode(tiles)
    return time.perf_counter() - start


def _open(runtime: str, files: list[str], key: str) -> Callable[[np.ndarray], np.ndarray]:
    """The batch function of the stored model ``files`` (made by ``key``), each verified first."""
    from predict.encoders.runtimes import exported

    if runtime == "onnxruntime":
        return exported.onnxruntime_batch(read_stored(files[0], key))  # the bytes verified are the bytes run
    for path in files:
        verify_stored(path, key)
    return exported.openvino_batch(files[0])


def _sample(sample: TileSample | np.ndarray | None, count: int, encoder) -> np.ndarray | None:
    if sample is None:
        return None
    tiles = sample[:count] if isinstance(sample, np.ndarray) else sample(count, encoder.tile_size)
    tiles = np.ascontiguousarray(tiles, dtype=np.uint8)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or not len(tiles):
        return None
    if not getattr(encoder, "any_tile_size", False) and tiles.shape[1] != encoder.tile_size:
        raise EncoderError(f"tiles to check the export are {tiles.shape[1]} px; the encoder takes {encoder.tile_size}")
    return tiles


class ExportFailed(EncoderError):
    """The image network has no ONNX form (an operator the exporter does not know)."""


def exported_model(encoder, network, sample) -> dict | None:
    """The stored fp32 export of ``encoder``'s ``network`` and what its check measured
    (``{"key", "folder", "check": {runtime: {"min_cosine", "passed", "tiles_per_s"}, "torch": {...}}}``),
    exported and checked now on tiles of ``sample`` when it is not stored; None when it is not stored and
    ``sample`` gives no tiles."""
    from predict.encoders.runtimes import exported

    key = _export_key(encoder)
    folder = _folder(encoder, "onnx", key)
    model, report = os.path.join(folder, "model.onnx"), os.path.join(folder, "export.json")
    if os.path.exists(report):
        try:
            verify_stored(model, key)
            return {"key": key, "folder": folder, "check": read_stored_json(report, key)}
        except StoredFileError as exc:
            _logger().warning("%s; exporting again", exc)
    probe = _sample(sample, PROBE_TILES, encoder)
    if probe is None:
        return None
    os.makedirs(folder, exist_ok=True)
    remove_stored(report)
    inputs = _inputs(encoder, probe)
    partial = model + ".part"
    try:
        import torch

        exported.export_onnx(network, torch.from_numpy(inputs[:2]), partial)
        os.replace(partial, model)
    except Exception as exc:  # an exporter failure is the encoder's: torch runs it
        raise ExportFailed(f"{getattr(encoder, 'name', 'encoder')}: its image network does not export to ONNX "
                           f"({first_line(exc)})") from None
    finally:
        exported.remove_quietly(partial)
    seal_file(model, key)
    reference = _torch_vectors(encoder, probe)
    check = {"torch": {"tiles_per_s": _tiles_per_second(lambda t: _torch_vectors(encoder, t), probe)},
             "probe_tiles": len(probe)}
    for runtime in exported.EXPORTED_RUNTIMES:
        try:
            run = _open(runtime, [model], key)
            encode = lambda t, run=run: run(_inputs(encoder, t))  # noqa: E731 - the whole per-batch function, timed
            cosine = float(exported.cosines(encode(probe), reference).min())
            check[runtime] = {"min_cosine": cosine, "passed": cosine >= EXPORT_MIN_COSINE,
                              "tiles_per_s": _tiles_per_second(encode, probe)}
        except Exception as exc:  # a runtime that cannot run the model is refused, not fatal
            check[runtime] = {"min_cosine": None, "passed": False, "tiles_per_s": None, "error": first_line(exc)}
    write_stored_json(report, check, key)
    _logger().info("exported %s to %s: %s", getattr(encoder, "name", "encoder"), folder, _describe_check(check))
    return {"key": key, "folder": folder, "check": check}


def _describe_check(check: dict) -> str:
    parts = [f"torch {check['torch']['tiles_per_s']} tiles/s"]
    for runtime in ("onnxruntime", "openvino"):
        found = check[runtime]
        if found.get("error"):
            parts.append(f"{runtime} refused: {found['error']}")
        else:
            parts.append(f"{runtime} {found['tiles_per_s']} tiles/s, min cosine {found['min_cosine']:.7f}"
                         + ("" if found["passed"] else f" < {EXPORT_MIN_COSINE}: refused"))
    return f"on {check['probe_tiles']} tiles of the images at hand: " + "; ".join(parts)


def _fastest(check: dict) -> str:
    candidates = {"torch": check["torch"]["tiles_per_s"]}
    candidates.update({runtime: found["tiles_per_s"] for runtime, found in check.items()
                       if isinstance(found, dict) and found.get("passed")})
    return max(candidates, key=candidates.get)


def int8_model(encoder, export: dict, runtime: str, sample, floor: float) -> dict:
    """The runtime choice of an int8 model of ``export`` for ``runtime``, quantised now on tiles of
    ``sample`` unless stored; its held-out cosine to fp32 below ``floor`` is an :class:`EncoderError`."""
    from predict.encoders.runtimes import int8

    tiles = _sample(sample, SAMPLE_TILES, encoder)
    if tiles is None or len(tiles) < HELD_OUT_EVERY:
        raise EncoderError(f"precision int8 needs tiles of the images at hand to calibrate on ({runtime})")
    held_out = np.arange(len(tiles)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    calibration = array_key(tiles)
    key = _int8_key(export["key"], runtime, calibration)
    folder = _folder(encoder, f"int8-{runtime}", key)
    files, report = _model_files(folder, runtime, "int8"), os.path.join(folder, "int8.json")
    measured = None
    if os.path.exists(report):
        try:
            for path in files:
                verify_stored(path, key)
            measured = read_stored_json(report, key)
        except StoredFileError as exc:
            _logger().warning("%s; quantising again", exc)
    if measured is None:
        os.makedirs(folder, exist_ok=True)
        remove_stored(report)
        onnx_model = os.path.join(export["folder"], "model.onnx")
        verify_stored(onnx_model, export["key"])
        inputs = _inputs(encoder, tiles[~held_out])
        if runtime == "onnxruntime":
            partial = files[0] + ".part"
            int8.quantize_onnxruntime(onnx_model, inputs, partial, "tiles")
            os.replace(partial, files[0])
        else:
            int8.quantize_openvino(onnx_model, inputs, files[0])
        for path in files:
            seal_file(path, key)
        run = _open(runtime, files, key)
        from predict.encoders.runtimes.exported import cosines

        found = cosines(run(_inputs(encoder, tiles[held_out])), _torch_vectors(encoder, tiles[held_out]))
        measured = {"held_out_tiles": int(held_out.sum()), "calibration_tiles": int((~held_out).sum()),
                    "mean_cosine": round(float(found.mean()), 6), "min_cosine": round(float(found.min()), 6)}
        write_stored_json(report, measured, key)
    name = getattr(encoder, "name", "encoder")
    line = (f"{name} int8 on {runtime}: cosine to fp32 on {measured['held_out_tiles']} held-out tiles of the images "
            f"at hand: mean {measured['mean_cosine']:.6f}, min {measured['min_cosine']:.6f} "
            f"(calibrated on {measured['calibration_tiles']}; floor {floor})")
    _logger().info("%s", line)
    if measured["mean_cosine"] < floor:
        raise EncoderError(f"{line}: below the floor; run it in fp32, or lower model.int8_min_cosine")
    return {"runtime": runtime, "precision": "int8", "export": export["key"], "calibration": calibration,
            "int8": measured}


def _install(encoder, choice: dict) -> None:
    """Let ``encoder`` run as ``choice`` says: its model opened, verified, on the first batch."""
    encoder.runtime_choice = choice
    encoder.runtime = choice["runtime"]
    if choice["runtime"] == "torch":
        return
    encoder.precision = choice["precision"]
    if choice["precision"] == "int8":
        key = _int8_key(choice["export"], choice["runtime"], choice["calibration"])
        files = _model_files(_folder(encoder, f"int8-{choice['runtime']}", key), choice["runtime"], "int8")
    else:
        key = choice["export"]
        files = _model_files(_folder(encoder, "onnx", key), choice["runtime"], "fp32")
    opened, opening = [], threading.Lock()

    def exported_batch(batch: np.ndarray) -> np.ndarray:
        with opening:
            if not opened:
                opened.append(_open(choice["runtime"], files, key))
        return opened[0](batch)

    encoder.exported_batch = exported_batch


def pinned_choice(encoder, choice: dict) -> dict:
    """``choice`` (another process's ``runtime_choice``) checked against ``encoder``: an exported model must be
    of this very network (:func:`~predict.provenance.network_key`), else an :class:`EncoderError`."""
    if not isinstance(choice, dict) or choice.get("runtime") not in ("torch", "onnxruntime", "openvino"):
        raise EncoderError(f"not a runtime choice: {choice!r}")
    if choice["runtime"] != "torch" and choice.get("export") != _export_key(encoder):
        raise EncoderError(f"the {choice['runtime']} model chosen before is of another network than "
                           f"{getattr(encoder, 'name', 'the encoder')} now (its code, weights or options changed)")
    return choice


def attach_runtime(encoder: EncoderSpecModel, runtime: str = "auto", precision: str = "fp32", sample=None, *,
                   int8_min_cosine: float = INT8_MIN_COSINE, pinned: dict | None = None) -> dict:
    """Choose what runs ``encoder``'s image network (see the module's text), install it and return the
    choice (its ``runtime_choice``).

    Args:
        encoder: a loaded encoder (its torch network in fp32 when ``precision`` is int8).
        runtime: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        precision: yaml ``model.precision``: ``int8`` asks for a quantised model.
        sample: tiles of the images at hand, uint8 RGB ``(N, S, S, 3)``, or a function ``(count, tile_size)
            -> tiles`` called only when a model must be checked or calibrated
            (:func:`predict.core.tiling.sample_tiles`).
        int8_min_cosine: the floor of an int8 model's mean cosine to fp32.
        pinned: a choice made before (by the driver of a Ray run, or the index a search reads): used as is.
    """
    from predict.encoders.runtimes.exported import EXPORTED_RUNTIMES

    if pinned is not None:
        choice = pinned_choice(encoder, pinned)
    else:
        choice = _choose(encoder, runtime, precision, sample, int8_min_cosine, EXPORTED_RUNTIMES)
    _install(encoder, choice)
    return choice


def _choose(encoder, runtime, precision, sample, floor, exported_runtimes) -> dict:
    name = getattr(encoder, "name", type(encoder).__name__)
    on_torch = {"runtime": "torch", "precision": precision}
    image_network = getattr(encoder, "image_network", None)
    network = image_network() if callable(image_network) else None
    on_cpu = str(getattr(encoder, "device", "cpu")).startswith("cpu")
    if precision == "int8" and runtime not in exported_runtimes:
        raise EncoderError(f"{name}: precision int8 runs on onnxruntime or openvino, not {runtime} "
                           "(name one with model.runtime or --runtime; auto never chooses int8)")
    if runtime in exported_runtimes and precision in ("fp16", "bf16"):
        raise EncoderError(f"{name}: {runtime} runs fp32 or int8, not {precision}")
    if network is None:
        if runtime in exported_runtimes:
            raise EncoderError(f"{name}: runtime {runtime} needs the encoder's image network "
                               "(EncoderSpecModel.image_network); this encoder runs on torch only")
        return on_torch
    if runtime == "torch" or (runtime == "auto" and (not on_cpu or precision != "fp32")):
        return on_torch
    try:
        export = exported_model(encoder, network, sample)
    except ExportFailed as exc:
        if runtime != "auto":
            raise
        _logger().info("runtime auto: torch (%s)", exc)
        return on_torch
    if export is None:
        if runtime != "auto":
            raise EncoderError(f"{name}: runtime {runtime} needs tiles of the images at hand to check its export on")
        _logger().info("runtime auto: %s runs on torch (no tiles of the images at hand to check an export on)", name)
        return on_torch
    if precision == "int8":
        return int8_model(encoder, export, runtime, sample, floor)
    check = export["check"]
    if runtime == "auto":
        runtime = _fastest(check)
        _logger().info("runtime auto: %s on %s (%s)", name, runtime, _describe_check(check))
        if runtime == "torch":
            return on_torch
    elif not check[runtime]["passed"]:
        raise EncoderError(f"{name}: {runtime} refused ({_describe_check(check)}); use --runtime torch")
    return {"runtime": runtime, "precision": "fp32", "export": export["key"]}


def int8_floor(value, where: str) -> float:
    """yaml ``model.int8_min_cosine`` as a float in (0, 1], else a one-line :class:`EncoderError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise EncoderError(f"{where}: model.int8_min_cosine must be a number in (0, 1], got {value!r}")
    return float(value)


__all__ = ["EXPORT_MIN_COSINE", "INT8_MIN_COSINE", "PROBE_TILES", "SAMPLE_TILES", "TileSample", "attach_runtime",
           "cache_root", "default_runtime", "exported_model", "int8_floor", "int8_model", "pinned_choice"]
