"""Bad input never becomes a number (issue 11): corrupt images and maps, non-finite scores, degenerate
maps and captions, bad arguments, yaml and checkpoints, Ctrl-C and write errors; each is one clear line.

Root ignores permission bits, so read-only folders and full disks are simulated by making the file
system calls raise the ``OSError`` they raise there (``EACCES``, ``ENOSPC``)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from predict.cli.evaluate import main as evaluate_main
from predict.cli.generate import main as generate_main
from predict.core.heatmap import mean_tile_scores
from predict.core.stretch import percentile_stretch
from predict.encoders.base import EncoderError
from predict.encoders.checkpoints import read_checkpoint
from predict.encoders.registry import load_encoder, read_options
from predict.io.annotations import SampleError, load_annotations
from predict.io.images import read_image

from helpers import DEMO_CHECKPOINT, evaluate, generate, red_square_image, results, slow_generate_command, write_samples


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith(("ERROR", "error")) or "error:" in line]


# --- images -------------------------------------------------------------------------------------------


def test_truncated_jpeg_and_png_are_errors_not_partial_images(tmp_path):
    image = red_square_image(300, 400)
    for ext in ("jpg", "png"):
        cv2.imwrite(str(tmp_path / f"whole.{ext}"), image)
        data = (tmp_path / f"whole.{ext}").read_bytes()
        (tmp_path / f"half.{ext}").write_bytes(data[:len(data) // 2])
        assert read_image(str(tmp_path / f"whole.{ext}")).shape == image.shape
        with pytest.raises(SampleError, match=rf"half.{ext}: truncated or corrupt {ext.replace('jpg', 'jpeg').upper()}"):
            read_image(str(tmp_path / f"half.{ext}"))


def test_a_truncated_image_fails_its_sample_only(tmp_path):
    write_samples(tmp_path, [{"jpg_name": "half.jpg"}, {}])
    cv2.imwrite(str(tmp_path / "imgs" / "whole.jpg"), red_square_image())
    data = (tmp_path / "imgs" / "whole.jpg").read_bytes()
    (tmp_path / "imgs" / "half.jpg").write_bytes(data[:len(data) // 2])
    code, cache = generate(tmp_path)
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [1]
    assert "half.jpg: truncated or corrupt JPEG (truncated: no end-of-image marker)" in errors[0]


def test_exif_orientation_is_applied_as_cv2_imread_does(tmp_path):
    rgb = red_square_image(60, 90)[:, :, ::-1]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(np.ascontiguousarray(rgb)).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    ours = read_image(str(tmp_path / "rotated.jpg"))
    assert ours.shape == (90, 60, 3)
    np.testing.assert_array_equal(ours, cv2.imread(str(tmp_path / "rotated.jpg")))


def test_12_bit_data_are_stretched_with_a_warning(tmp_path):
    ramp = (np.arange(300 * 400, dtype=np.uint32).reshape(300, 400) % 4096).astype(np.uint16)
    bands = np.dstack([ramp, ramp[::-1], ramp[:, ::-1]])
    tifffile.imwrite(str(tmp_path / "twelve.tif"), bands)
    with pytest.warns(UserWarning, match=r"twelve.tif: 12-bit data in a 16-bit container \(max 4095\); stretched 2-98 %"):
        ours = read_image(str(tmp_path / "twelve.tif"))
    np.testing.assert_array_equal(ours, percentile_stretch(bands)[:, :, ::-1])  # RGB file -> BGR
    assert ours.min() == 0 and ours.max() == 255  # not 15 gray levels


def test_float_data_are_stretched(tmp_path):
    values = np.linspace(-0.2, 0.9, 200 * 100, dtype=np.float32).reshape(200, 100)  # e.g. reflectance
    tifffile.imwrite(str(tmp_path / "float.tif"), values)
    ours = read_image(str(tmp_path / "float.tif"))
    np.testing.assert_array_equal(ours[:, :, 0], percentile_stretch(values))
    assert ours.min() == 0 and ours.max() == 255


# --- annotations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("caption, shown", [("", "''"), ("   ", "'   '"), (None, "null"), (12345, "12345")])
def test_bad_captions_fail_their_sample_only(tmp_path, caption, shown):
    write_samples(tmp_path, [{"caption": caption}, {}])
    code, cache = generate(tmp_path)
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [1]
    assert errors[0] == f"{tmp_path / 'anno.json'}: sample 0: caption must be a non-empty string, got {shown}"


def test_string_coordinates_fail_their_sample_in_generate_and_evaluate(tmp_path):
    bad = [[["500", "300"], ["800", "300"], ["800", "600"]]]
    write_samples(tmp_path, [{"points": bad}, {}])
    code, cache = generate(tmp_path)
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [1]
    assert "sample 0: points: polygon 0 vertex 0 is not an [x, y] pair of numbers: ['500', '300']" in errors[0]
    # selo-evaluate on the same folder (with a map for sample 0 too): sample 1 is still scored
    cv2.imwrite(str(cache / "probmap_0.jpg"), cv2.imread(str(cache / "probmap_1.jpg"), cv2.IMREAD_GRAYSCALE))
    assert evaluate_main(["--cache_path", str(cache), "--src_anno_path", str(tmp_path / "anno.json")]) == 1
    samples, errors, _ = results(cache)
    assert list(samples) == [1] and "vertex 0 is not an [x, y] pair" in errors[0]


@pytest.mark.parametrize("polygon, problem", [
    ([[1500, 100], [1600, 100], [1600, 200]], "polygon 0: entirely outside the 900x1200 map"),
    ([[500, 300], [800, 300]], "polygon 0: 2 points, at least 3 needed"),
])
def test_polygons_the_indicators_cannot_use_fail_their_sample_before_any_map(tmp_path, polygon, problem):
    write_samples(tmp_path, [{}, {"points": [polygon]}, {}])
    code, cache = generate(tmp_path)
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [0, 2]
    assert errors[1] == f"scene.png (sample 1): {problem}"
    assert not [path.name for path in cache.glob("*_1.jpg")]  # no map of it is written


def test_structural_annotation_errors_stop_the_run(tmp_path):
    (tmp_path / "anno.json").write_text(json.dumps([{"caption": "no points", "jpg_name": "a.jpg"}]))
    with pytest.raises(SampleError, match="sample 0 lacks one of"):
        load_annotations(str(tmp_path / "anno.json"))


# --- non-finite scores and degenerate maps -------------------------------------------------------------


def test_non_finite_scores_are_left_out_of_the_mean():
    boxes = [(0, 4, 0, 4), (0, 4, 2, 6), (0, 4, 6, 8)]
    cells = mean_tile_scores(boxes, [1.0, np.nan, 3.0], 4, 8)
    # columns 0-2: tile 0 only; 2-4: tile 0 (the NaN tile is left out); 4-6: only the NaN tile -> the
    # minimum of the covered cells; 6-8: tile 2
    assert cells.col_edges.tolist() == [0, 2, 4, 6, 8] and cells.values.tolist() == [[1.0, 1.0, 1.0, 3.0]]
    assert mean_tile_scores(boxes, [np.inf, -np.inf, np.nan], 4, 8).values.tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_nan_scores_of_no_data_tiles_are_counted_and_do_not_zero_the_map(tmp_path):
    scene = red_square_image()
    scene[:, :300] = 0  # a black no-data band: tiles inside it get zero vectors, hence NaN scores
    write_samples(tmp_path, [{}], {"scene.png": scene})
    code, cache = generate(tmp_path, encoder="toy_encoders:NoDataZeroEncoder")
    samples, errors, _ = results(cache)
    assert code == 0 and errors == {}
    record = samples[0]
    # the four 256-tiles of columns 0:256 lie inside the band
    assert record["nonfinite_tiles"] == 4 and record["degenerate"] is False
    assert record["Rmi"] > 0.6  # the red square is still found
    log = (cache / "log.txt").read_text()
    assert f"4 of {record['n_tiles']} tile scores are not finite (NaN or infinite); left out of the per-pixel mean" in log


def test_degenerate_maps_are_flagged_and_left_out_of_the_mean(tmp_path):
    black = np.zeros((900, 1200, 3), np.uint8)  # every score NaN
    flat = np.full((900, 1200, 3), 120, np.uint8)  # every score equal
    write_samples(tmp_path, [{"jpg_name": "black.png"}, {}, {"jpg_name": "flat.png"}],
                  {"scene.png": red_square_image(), "black.png": black, "flat.png": flat})
    code, cache = generate(tmp_path, encoder="toy_encoders:NoDataZeroEncoder")
    samples, errors, mean = results(cache)
    assert code == 0 and errors == {} and sorted(samples) == [0, 1, 2]
    assert [samples[i]["degenerate"] for i in (0, 1, 2)] == [True, False, True]
    assert mean["Rmi"] == pytest.approx(samples[1]["Rmi"]) and mean["Rsu"] == pytest.approx(samples[1]["Rsu"])
    log = (cache / "log.txt").read_text()
    assert "Sample 0 (black.png): degenerate map" in log and "Sample 2 (flat.png): degenerate map" in log
    assert (cache / "report.html").read_text().count("degenerate map (tile scores all equal or not finite)") == 2


# --- selo-evaluate ---------------------------------------------------------------------------------------


@pytest.fixture
def evaluated(tmp_path):
    """A generated cache folder of three samples on scene.png (900 x 1200)."""
    write_samples(tmp_path, [{}, {}, {}])
    code, cache = generate(tmp_path, "--no_report")
    assert code == 0
    return tmp_path, cache


def test_evaluate_accepts_the_original_arguments_and_refuses_bad_maps(evaluated, capsys):
    root, cache = evaluated
    good = cv2.imread(str(cache / "probmap_0.jpg"), cv2.IMREAD_GRAYSCALE)
    data = (cache / "probmap_0.jpg").read_bytes()
    (cache / "probmap_0.jpg").write_bytes(data[:len(data) // 2])  # truncated
    cv2.imwrite(str(cache / "probmap_1.jpg"), cv2.resize(good, (600, 450)))  # another size than its image
    (cache / "probmap_2.jpg").write_bytes((cache / "heatmap_2.jpg").read_bytes())  # colour heatmap as probmap
    (cache / "metrics.json").unlink()  # maps as the original left them: no record pairs them, their position does
    code = evaluate(root, cache, "--src_data_path", str(root / "imgs"), "--yaml_path", "ignored.yaml")
    assert code == 1
    samples, errors, _ = results(cache)
    assert samples == {}
    assert errors[0] == f"{cache / 'probmap_0.jpg'}: truncated or corrupt JPEG (truncated: no end-of-image marker)"
    assert errors[1] == f"{cache / 'probmap_1.jpg'}: map is 450x600 but its image is 900x1200"
    assert errors[2].startswith(f"{cache / 'probmap_2.jpg'}: a colour image (channels differ by up to")
    assert "Traceback" not in capsys.readouterr().err
    # without --src_data_path the size cannot be checked: the resized map is scored
    assert evaluate(root, cache) == 1 and 1 in results(cache)[0]


def test_evaluate_ctrl_c_and_disk_full_are_one_line(evaluated, monkeypatch, capsys):
    root, cache = evaluated
    from predict.testset import evaluate as evaluation

    real = evaluation.evaluate_gray
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_gray", interrupt_second)
    (cache / "metrics.json").unlink()
    assert evaluate(root, cache) == 130
    err = capsys.readouterr().err
    assert error_lines(err) == [f"ERROR: interrupted: 1 sample(s) saved in {cache / 'metrics.json'}; "
                                "rerun the same command to resume"]
    assert "Traceback" not in err
    monkeypatch.setattr(evaluation, "evaluate_gray", real)
    full_disk(monkeypatch, "metrics.csv")
    assert evaluate(root, cache) == 2
    err = capsys.readouterr().err
    assert f"{cache / 'metrics.csv'}: cannot write (No space left on device); the evaluation stopped" in err
    assert [p for p in os.listdir(cache) if p.endswith(".tmp")] == []


# --- arguments, yaml, checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--step", "256_-5"], "argument --step: expected positive integers joined by '_' (e.g. 256_512_768), got '256_-5'"),
    (["--step", "abc"], "argument --step: expected positive integers joined by '_' (e.g. 256_512_768), got 'abc'"),
    (["--step", "0"], "argument --step: expected positive integers joined by '_' (e.g. 256_512_768), got '0'"),
    (["--batch_size", "-1"], "argument --batch_size: expected a positive integer, got '-1'"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_bad_arguments_are_one_line_before_anything_runs(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--cache_path", str(tmp_path / "cache"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{Path(sys.argv[0]).name}: error: {message} (see --help)"]
    assert not (tmp_path / "cache").exists()


def test_bad_paths_and_yaml_stop_before_the_encoder_loads(tmp_path, capsys):
    write_samples(tmp_path, [{}])
    # the yaml names an encoder module that does not exist: any check that ran after loading would say so
    options = {"model": {"name": "no_such_module:Encoder", "batch_size": "abc"}}
    code, cache = generate(tmp_path, options=options)
    assert code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"ERROR: {tmp_path / 'encoder.yaml'}: model.batch_size must be a positive integer, got 'abc'"]
    options["model"]["batch_size"] = 8
    code, _ = generate(tmp_path, "--src_data_path", str(tmp_path / "nowhere"), options=options)
    assert code == 2
    assert error_lines(capsys.readouterr().err) == [f"ERROR: {tmp_path / 'nowhere'}: image folder (--src_data_path) not found"]


@pytest.mark.parametrize("key, value, message", [
    ("precision", "fp8", "model.precision 'fp8' is not one of fp32, fp16, bf16, int8"),
    ("batch_size", 0, "model.batch_size must be a positive integer, got 0"),
    ("batch_size", True, "model.batch_size must be a positive integer, got True"),
    ("name", 12, "model.name must be an encoder name or 'package.module:Class', got 12"),
])
def test_yaml_keys_are_checked_with_file_and_key(tmp_path, key, value, message):
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({"model": {"name": "demo", key: value}}))
    with pytest.raises(EncoderError) as error:
        read_options(tmp_path / "e.yaml")
    assert str(error.value) == f"{tmp_path / 'e.yaml'}: {message}"


@pytest.mark.parametrize("options, message", [
    ({"model": {"name": "demo", "precison": "bf16"}, "optim": {"resume": str(DEMO_CHECKPOINT)}},
     "unknown key 'model.precison' (did you mean 'model.precision'? it was not read)"),
    ({"model": {"name": "demo"}, "optim": {"resme": str(DEMO_CHECKPOINT)}},  # would load random weights
     "unknown key 'optim.resme' (did you mean 'optim.resume'? it was not read)"),
])
def test_a_misspelt_yaml_key_is_one_line_not_a_silent_default(tmp_path, capsys, options, message):
    yaml_path = tmp_path / "e.yaml"
    yaml_path.write_text(yaml.safe_dump(options))
    with pytest.raises(EncoderError) as error:
        load_encoder(str(yaml_path), device="cpu")
    assert str(error.value) == f"{yaml_path}: {message}"
    write_samples(tmp_path, [{}])
    code = generate_main(["--yaml_path", str(yaml_path), "--cache_path", str(tmp_path / "cache"),
                          "--src_data_path", str(tmp_path / "imgs"), "--src_anno_path", str(tmp_path / "anno.json")])
    assert code == 2 and error_lines(capsys.readouterr().err) == [f"ERROR: {yaml_path}: {message}"]


def test_cache_path_that_is_a_file_or_unwritable_is_one_line(tmp_path, monkeypatch, capsys):
    write_samples(tmp_path, [{}])
    (tmp_path / "afile").write_text("x")
    code = generate_main(["--cache_path", str(tmp_path / "afile"), "--src_anno_path", str(tmp_path / "anno.json")])
    assert code == 2 and capsys.readouterr().err.splitlines() == [f"error: {tmp_path / 'afile'}: output folder is a file"]
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # a temporary file of an atomic write cannot be created
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    code = generate_main(["--cache_path", str(tmp_path), "--src_anno_path", str(tmp_path / "anno.json")])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path / '.write-check'}: cannot write (Permission denied)"]


def test_a_damaged_checkpoint_is_named_corrupt_without_weights_only_advice(tmp_path):
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "good.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "good.pt").read_bytes()
    for cut in (155, len(data) // 2):  # inside the pickle (a cut-off global name), inside the tensor data
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(EncoderError) as error:
            read_checkpoint(str(tmp_path / "cut.pt"), "AMFMN checkpoint")
        message = str(error.value)
        assert message.startswith(f"{tmp_path / 'cut.pt'}: cannot read AMFMN checkpoint (corrupt or truncated file: ")
        assert "weights_only" not in message and "\n" not in message


# --- interruptions and the file system ------------------------------------------------------------------


def full_disk(monkeypatch, name_start, error=errno.ENOSPC):
    """Writing any file whose name starts with ``name_start`` fails as on a full disk (or with ``error``)."""
    import predict.provenance.store as atomic

    real = atomic.os.replace

    def replace(src, dst):
        if os.path.basename(dst).startswith(name_start):
            raise OSError(error, os.strerror(error))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_disk_full_or_read_only_stops_the_run_in_one_line_and_keeps_what_was_saved(tmp_path, monkeypatch, capsys,
                                                                                   error):
    write_samples(tmp_path, [{}, {}, {}])
    full_disk(monkeypatch, "heatmap_1", error)
    code, cache = generate(tmp_path)
    assert code == 2
    samples, errors, _ = results(cache)
    assert list(samples) == [0] and errors == {}  # sample 0 intact, sample 1 not recorded as a bad sample
    err = capsys.readouterr().err
    assert error_lines(err) == [f"ERROR: {cache / 'heatmap_1.jpg'}: cannot write ({os.strerror(error)}); "
                                "the run stopped, the results saved before are kept"]
    assert [p for p in os.listdir(cache) if p.endswith(".tmp")] == []
    monkeypatch.undo()
    code, cache = generate(tmp_path)  # the rerun resumes
    assert code == 0 and sorted(results(cache)[0]) == [0, 1, 2]


def saved_samples(cache) -> int:
    try:
        return len(json.loads((cache / "metrics.json").read_text())["samples"])
    except (OSError, ValueError):
        return 0


def test_ctrl_c_stops_with_one_line_and_the_rerun_resumes(tmp_path):
    names = [f"s{i}.png" for i in range(4)]  # one image per sample, so every sample encodes tiles
    images = {name: red_square_image() for name in names}
    for i, image in enumerate(images.values()):
        image[0, 0] = i  # images are identified by content: identical ones would share their tile vectors
    write_samples(tmp_path, [{"jpg_name": name} for name in names], images)
    cmd, env = slow_generate_command(tmp_path, tmp_path / "imgs", tmp_path / "anno.json")
    cache = tmp_path / "cache"
    # Ctrl-C as in a terminal: a run started from a background job inherits SIGINT ignored (POSIX shells
    # ignore it in asynchronous lists), and Python then rightly installs no KeyboardInterrupt handler
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and saved_samples(cache) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # sample 0 saved, sample 1 encoding
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    saved = saved_samples(cache)
    assert 1 <= saved < 4, "the interrupt must land mid-run"
    assert error_lines(err) == [f"ERROR: interrupted: {saved} sample(s) saved in {cache / 'metrics.json'}; "
                                "rerun the same command to resume"]
    assert [p for p in os.listdir(cache) if p.endswith(".tmp")] == []
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(json.loads((cache / "metrics.json").read_text())["samples"]) == 4
