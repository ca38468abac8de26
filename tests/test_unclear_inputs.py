"""Inputs that used to give a wrong number, a traceback or a misleading line (issue 20's W7 and "unclear"
cases): each is now one accurate error for its sample or call, or a warning where the input is usable."""
import json
import os
import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from evaluations import EvaluationInputError
from evaluations import evaluate as evaluate_map
from predict.cli.evaluate import main as evaluate_main
from predict.cli.generate import main as generate_main
from predict.core.pipelines import get_pipeline
from predict.encoders.text import STOP_WORDS
from predict.io import images
from predict.io.annotations import SampleError, load_annotations
from predict.io.images import read_image
from predict.localisation.maps import localise, query_vector
from predict.model_encoder import load_encoder

from helpers import DEMO_CHECKPOINT, DEMO_YAML, SQUARE, evaluate, generate, red_square_image, results, write_samples

DEMO_OPTIONS = {"model": {"name": "demo", "batch_size": 64},
                "optim": {"resume": str(DEMO_CHECKPOINT)}}


@pytest.fixture(scope="module")
def demo_encoder():
    return load_encoder(DEMO_YAML, device="cpu")


# --- W7: corrupt data inside a JPEG's entropy-coded stream ------------------------------------------------


def overwrite_4kb(path, seed=0):
    """4096 bytes in the middle of the JPEG at ``path`` replaced by random ones (never 0xFF, so no marker is
    made and the file's structure stays whole); returns the fraction of pixels OpenCV now decodes more than 30
    levels off, the damage it reports only on stderr."""
    data = bytearray(Path(path).read_bytes())
    assert len(data) > 3 * 4096  # the middle is entropy-coded data, far from the headers and the end
    before = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    start = len(data) // 2
    data[start:start + 4096] = np.random.default_rng(seed).integers(0, 255, 4096, np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
    after = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert after is not None and after.shape == before.shape  # OpenCV gives a picture of the right size
    difference = np.abs(after.astype(np.int16) - before)
    return float(np.mean((difference.max(axis=2) if difference.ndim == 3 else difference) > 30))


def noisy_scene(height=900, width=1200):
    """The red-square scene with texture, so that its JPEG is large enough to damage in the middle."""
    image = red_square_image(height, width)
    return cv2.add(image, np.random.default_rng(1).integers(0, 60, image.shape, np.uint8))


def test_corrupt_jpeg_data_is_an_error_in_localise(tmp_path, demo_encoder):
    path = tmp_path / "scene.jpg"
    cv2.imwrite(str(path), noisy_scene())
    assert overwrite_4kb(path) > 0.05
    with pytest.raises(SampleError, match=r"scene.jpg: corrupt JPEG data \(Corrupt JPEG data: "):
        localise(path, "a red field", demo_encoder)


def test_corrupt_jpeg_data_fails_its_sample_only_in_generate(tmp_path):
    write_samples(tmp_path, [{"jpg_name": "damaged.jpg"}, {}],
                  images={"damaged.jpg": noisy_scene(), "scene.png": red_square_image()})
    overwrite_4kb(tmp_path / "imgs" / "damaged.jpg")
    code, cache = generate(tmp_path, "--no_report")
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [1]
    assert errors[0].startswith(f"{tmp_path / 'imgs' / 'damaged.jpg'}: corrupt JPEG data (")


def test_corrupt_probmap_data_is_an_error_in_evaluate(tmp_path):
    write_samples(tmp_path, [{}, {}])
    cache = tmp_path / "cache"  # maps as the original generator left them: no records
    cache.mkdir()
    for idx in (0, 1):  # textured maps: files large enough to damage in the middle
        cv2.imwrite(str(cache / f"probmap_{idx}.jpg"), cv2.cvtColor(noisy_scene(), cv2.COLOR_BGR2GRAY))
    probmap = cache / "probmap_0.jpg"
    assert overwrite_4kb(probmap) > 0.05
    assert evaluate(tmp_path, cache) == 1
    samples, errors, _ = results(cache)
    assert list(samples) == [1]
    assert errors[0].startswith(f"{probmap}: corrupt JPEG data (")
    with pytest.raises(EvaluationInputError, match="probmap_0.jpg: corrupt JPEG data"):
        evaluate_map(str(probmap), [SQUARE])


# --- multi-page TIFF, bytes after a PNG's IEND ------------------------------------------------------------


def test_a_tiff_of_two_pages_is_read_from_its_first_with_a_warning(tmp_path):
    first = red_square_image(300, 400)[:, :, ::-1]  # RGB as stored
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.stack([first, first[::-1]]))  # one series of two pages
    with pytest.warns(UserWarning, match=rf"^{path}: TIFF of 2 pages; reading the first page only$"):
        ours = read_image(str(path))
    np.testing.assert_array_equal(ours, first[:, :, ::-1])


def test_tiff_overviews_are_not_counted_as_pages(tmp_path):
    image = red_square_image(300, 400)
    path = tmp_path / "overview.tif"
    tifffile.imwrite(path, image)
    tifffile.imwrite(path, np.ascontiguousarray(image[::2, ::2]), append=True, subfiletype=1)  # reduced resolution
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(str(path)).shape == (300, 400, 3)


def test_bytes_after_a_png_iend_are_a_warning_and_the_image_is_read(tmp_path):
    image = red_square_image(300, 400)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    whole = (tmp_path / "scene.png").read_bytes()
    (tmp_path / "padded.png").write_bytes(whole + b"appended by a transfer")
    with pytest.warns(UserWarning, match=r"padded.png: 22 bytes after the PNG's IEND chunk; ignored"):
        np.testing.assert_array_equal(read_image(str(tmp_path / "padded.png")), image)
    (tmp_path / "cut.png").write_bytes(whole[:-6])  # inside the IEND chunk: truncated, not padded
    with pytest.raises(SampleError, match=r"cut.png: truncated or corrupt PNG \(truncated: the chunks end before"):
        read_image(str(tmp_path / "cut.png"))


# --- localise(): arrays and queries it cannot use ----------------------------------------------------------


@pytest.mark.parametrize("image, query, error, message", [
    (np.zeros((0, 0, 3), np.uint8), "a red field", ValueError, r"image array: empty \(0x0 pixels\)"),
    (np.zeros((0, 40, 3), np.uint8), "a red field", ValueError, r"image array: empty \(0x40 pixels\)"),
    (None, ["a red field", "a road"], TypeError, r"query must be one string, got list \(call localise once"),
    (None, "", ValueError, r"query '' is empty"),
    (None, " \t ", ValueError, r"query ' \\t ' is empty"),
])
def test_localise_refuses_what_it_cannot_use_in_one_line(demo_encoder, image, query, error, message):
    image = red_square_image(300, 400)[:, :, ::-1].copy() if image is None else image
    with pytest.raises(error, match=message):
        localise(image, query, demo_encoder)


# --- unknown words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, listed", [("zzzz qqqq", "unknown: zzzz, qqqq"),
                                           ("?!.,", "no word left once punctuation is dropped")])
def test_a_query_without_a_known_word_is_an_error_listing_them(demo_encoder, query, listed):
    with pytest.raises(ValueError, match=rf"query '{re.escape(query)}': no word the demo encoder knows \({listed}\)"):
        query_vector(demo_encoder, query)


def test_unknown_words_of_a_query_are_named_in_a_warning(demo_encoder):
    with pytest.warns(UserWarning, match=r"query 'a red zzzz field': word\(s\) the demo encoder does not know, "
                                         r"read as <unk>: zzzz$"):
        query_vector(demo_encoder, "a red zzzz field")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        query_vector(demo_encoder, "a red field")


def test_a_caption_without_a_known_word_fails_its_sample_only(tmp_path):
    write_samples(tmp_path, [{"caption": "zzzz qqqq"}, {"caption": "a red field"}])
    code, cache = generate(tmp_path, "--no_report", options=DEMO_OPTIONS)
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [1]
    assert errors[0] == "query 'zzzz qqqq': no word the demo encoder knows (unknown: zzzz, qqqq)"


@pytest.fixture(scope="module")
def lw_mcr(tmp_path_factory):
    """LW-MCR with the fixture checkpoint of ../shared/reference/model and the RSITMD vocabulary."""
    import importlib.util

    import torch
    import yaml

    from helpers import shared_path

    spec = importlib.util.spec_from_file_location("make_fixture_checkpoint",
                                                  shared_path("reference", "model", "make_fixture_checkpoint.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    fixture = json.loads(shared_path("reference", "model", "expected_dev.json").read_text())["fixture"]
    state_spec = json.loads(shared_path("reference", "model", fixture["LW_MCR"]["spec"]).read_text())
    folder = tmp_path_factory.mktemp("lw_mcr")
    torch.save({"model": generator.make_state_dict(state_spec, fixture["seed"])}, folder / "fixture.pth")
    options = {"model": {"name": "LW_MCR"}, "optim": {"resume": "fixture.pth"},
               "dataset": {"vocab_path": str(shared_path("slm", "rsitmd_splits_vocab.json"))}}
    (folder / "encoder.yaml").write_text(yaml.safe_dump(options))
    return load_encoder(folder / "encoder.yaml", device="cpu")


def test_rsitmd_encoders_report_unknown_words_but_not_stop_words(lw_mcr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "there", "is", "a", "to", "the": read as <unk> in training too
        query_vector(lw_mcr, "there is a green pond next to the gray road.")
    with pytest.warns(UserWarning, match=r"the LW_MCR encoder does not know, read as <unk>: ready, grayblack$"):
        query_vector(lw_mcr, "a white airplane ready to take off on a grayblack runway.")
    with pytest.raises(ValueError, match=r"no word the LW_MCR encoder knows \(unknown: there, is, of, zzzz\)"):
        query_vector(lw_mcr, "there is of zzzz")
    assert lw_mcr.unknown_words("The plane's runway.") == []  # NLTK's tokens: "plane", "'s", "runway"


class WithoutVocabulary:
    """A plug-in that follows the encoder contract by duck typing, without ``unknown_words``."""

    def text_encoder(self, text):
        return np.full(4, len(text), np.float32)


def test_an_encoder_without_unknown_words_has_nothing_checked():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert query_vector(WithoutVocabulary(), "zzzz").tolist() == [4.0] * 4


def test_the_rsitmd_vocabulary_leaves_out_every_stop_word(shared):
    """Why AMFMN and LW-MCR do not report "a" or "the": the models were trained reading them as <unk>."""
    with open(shared("slm", "rsitmd_splits_vocab.json"), encoding="utf-8") as f:
        vocabulary = json.load(f)["word2idx"]
    assert STOP_WORDS.isdisjoint(vocabulary) and len(STOP_WORDS) == 127


# --- evaluate(), annotation files, steps ------------------------------------------------------------------


def test_evaluate_names_polygons_that_are_not_a_list():
    gray = np.zeros((100, 100), np.uint8)
    with pytest.raises(EvaluationInputError, match=r"^probmap: polygons must be a list of polygons .*got str$"):
        evaluate_map(gray, "abc")
    with pytest.raises(EvaluationInputError, match=r"^probmap: no annotation polygon$"):
        evaluate_map(gray, [])


@pytest.mark.parametrize("content, shown", [("[]", "[]"), ("{}", "{}"), ("  \n", "the file is empty")])
def test_an_annotation_file_without_samples_stops_both_commands(tmp_path, capsys, content, shown):
    write_samples(tmp_path, [{}])
    (tmp_path / "anno.json").write_text(content)
    line = f"{tmp_path / 'anno.json'}: holds no sample ({shown})"
    code, cache = generate(tmp_path, "--no_report")
    assert code == 2
    err = capsys.readouterr().err
    assert line in err and "Mean over" not in err
    cache.mkdir(exist_ok=True)
    assert evaluate_main(["--cache_path", str(cache), "--src_anno_path", str(tmp_path / "anno.json")]) == 2
    err = capsys.readouterr().err
    assert line in err and "Mean over" not in err


@pytest.mark.parametrize("steps", [256.9, [256.9, 512], "256__512", "२५६", "256_", True, [True]])
def test_steps_are_ascii_integers_only(steps):
    with pytest.raises(ValueError, match=rf"^steps {re.escape(repr(steps))}: expected integers"):
        get_pipeline("v1", steps)


@pytest.mark.parametrize("steps, parsed", [("256_512", (256, 512)), ([256, 512], (256, 512)), (512, (512,)),
                                           (np.array([256, 512]), (256, 512))])
def test_steps_as_text_a_list_or_one_integer(steps, parsed):
    assert get_pipeline("v1", steps).steps == parsed


def test_steps_with_a_double_underscore_stop_selo_generate(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--cache_path", str(tmp_path / "cache"), "--step", "256__512"])
    assert exit_.value.code == 2
    assert "argument --step: expected positive integers joined by '_' (e.g. 256_512_768), got '256__512'" \
        in capsys.readouterr().err


# --- a folder, FIFO or device where a file is expected -----------------------------------------------------


def not_files(folder):
    """``{name: (path, the line it gets as an image)}``: a folder, a FIFO (no writer: reading it would block)
    and a link to /dev/zero (reading it would never end), in ``folder``."""
    (folder / "folder.png").mkdir()
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    return {"folder.png": (folder / "folder.png", "is a folder, not an image file"),
            "pipe.png": (folder / "pipe.png", "not a regular file (a FIFO); give an image file"),
            "zero.png": (folder / "zero.png", "not a regular file (a character device); give an image file")}


@contextmanager
def fifo_readers(path):
    """A list that gets one entry each time something opens the FIFO ``path`` to read it, which would block
    it: each such reader is let go at once by a writer that opens and closes it (it reads an empty stream)."""
    readers, stop = [], threading.Event()

    def let_go():
        while not stop.wait(0.02):
            try:  # succeeds only while a reader has it open
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                continue
            readers.append(path)

    watcher = threading.Thread(target=let_go, daemon=True)
    watcher.start()
    try:
        yield readers
    finally:
        stop.set()
        watcher.join()


def test_an_image_path_that_is_no_file_says_what_it_is(tmp_path):
    for path, problem in [*not_files(tmp_path).values(), (tmp_path / "missing.png", "image not found")]:
        for check in (images.require_image_file, read_image, images.image_size):
            with pytest.raises(SampleError, match=rf"^{re.escape(str(path))}: {re.escape(problem)}$"):
                check(str(path))


def test_a_testset_image_that_is_no_file_fails_its_sample_only_and_never_blocks(tmp_path):
    write_samples(tmp_path, [{"jpg_name": "folder.png"}, {"jpg_name": "pipe.png"}, {}])
    lines = not_files(tmp_path / "imgs")
    with fifo_readers(tmp_path / "imgs" / "pipe.png") as readers:
        code, cache = generate(tmp_path, "--no_report")
    assert readers == []  # nothing waited on the FIFO
    samples, errors, _ = results(cache)
    assert code == 1 and list(samples) == [2]
    assert errors == {idx: f"{lines[name][0]}: {lines[name][1]}" for idx, name in enumerate(("folder.png", "pipe.png"))}


def test_an_annotation_path_that_is_a_folder_or_fifo_says_so(tmp_path, capsys):
    write_samples(tmp_path, [{}])
    (tmp_path / "anno.json").unlink()
    (tmp_path / "anno.json").mkdir()
    code, _ = generate(tmp_path, "--no_report")
    assert code == 2 and f"{tmp_path / 'anno.json'}: is a folder, not an annotation file\n" in capsys.readouterr().err
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(SampleError, match=r"pipe.json: not a regular file \(a FIFO\); give an annotation file$"):
        load_annotations(str(tmp_path / "pipe.json"))
