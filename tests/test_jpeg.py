"""JPEGs encoded in stripes and joined: the bytes OpenCV writes for the whole image with that restart interval,
the pixels of the whole image encoded at once; and the sample's maps written that way. Strict decoding
(simplejpeg's libjpeg-turbo) gives exactly OpenCV's pixels for every kind of JPEG the project reads."""
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from evaluations.jpeg import read_jpeg_strictly
from evaluations.metrics import read_probmap
from predict.core.heatmap import colour_heatmap, overlay
from predict.core.preview import shrink_by
from predict.demo.make_testset import write_testset
from predict.io import maps
from predict.io.images import decode_strictly, read_image
from predict.io.jpeg import MAX_RESTART_INTERVAL, StripeJoiner, encode_jpeg, mcu_size, restart_interval, stripe_rows


def textured(height, width, channels=3, seed=0):
    """A smooth image with noise: what a map or an aerial image looks like to the encoder."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    small = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), channels), np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).reshape(shape)
    return cv2.add(image, rng.integers(0, 24, shape, np.uint8))


def joined(image, rows):
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    interval = restart_interval(rows, width, channels) if rows < height else 0
    joiner = StripeJoiner(io.BytesIO(), height)
    for top in range(0, height, rows):
        joiner.add(encode_jpeg(image[top:top + rows], interval=interval))
    joiner.close()
    return joiner.file.getvalue(), interval


def decoded(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("height, width, channels, rows", [
    (1000, 777, 3, 64), (1003, 1201, 3, 128), (999, 1001, 1, 64), (40, 33, 3, 16), (17, 9, 3, 16),
    (129, 64, 1, 8), (300, 200, 3, 300)])
def test_joined_stripes_are_the_whole_encode_with_restarts_and_decode_to_its_pixels(height, width, channels, rows):
    image = textured(height, width, channels)
    data, interval = joined(image, rows)
    whole = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_RST_INTERVAL, interval])[1].tobytes()
    assert data == whole
    plain = cv2.imencode(".jpg", image)[1]
    np.testing.assert_array_equal(decoded(data), decoded(plain))
    if rows >= height:  # one stripe: the file OpenCV writes without restart markers
        assert data == plain.tobytes()


def test_more_than_eight_stripes_cycle_the_restart_markers():
    image = textured(16 * 20, 48)
    data, _ = joined(image, 16)
    assert [data.count(bytes((0xFF, 0xD0 + k))) >= 2 for k in range(8)] == [True] * 8
    np.testing.assert_array_equal(decoded(data), decoded(cv2.imencode(".jpg", image)[1]))


def test_stripe_rows_follow_the_mcu_the_factor_and_the_restart_limit():
    rows = stripe_rows(10000, 10001, 3, 8 << 20, multiple=13)
    assert rows % 16 == 0 and rows % 13 == 0 and restart_interval(rows, 10001, 3) <= MAX_RESTART_INTERVAL
    assert stripe_rows(5000, 5000, 1, 1 << 20) % mcu_size(1) == 0
    assert stripe_rows(5000, 5000, 3, 1) == 16  # at least one MCU row
    assert stripe_rows(100, 100, 3, 8 << 20) == 100  # smaller than a stripe: one
    # a row of MCUs beyond the largest restart interval: the image is encoded whole
    assert stripe_rows(64, 16 * (MAX_RESTART_INTERVAL + 1), 3, 1 << 20) == 64


def test_a_part_that_is_not_a_jpeg_stripe_is_refused():
    joiner = StripeJoiner(io.BytesIO(), 10)
    with pytest.raises(ValueError, match="not a baseline JPEG"):
        joiner.add(b"\xff\xd8\xff\xd9")
    with pytest.raises(ValueError, match="stripe 0 does not end"):
        joiner.add(encode_jpeg(textured(16, 16)).tobytes()[:-2])


@pytest.mark.parametrize("height, width, shrink", [(700, 530, 3), (333, 250, None), (64, 48, 1)])
@pytest.mark.parametrize("workers", [1, 3])
def test_the_sample_maps_written_in_stripes(tmp_path, monkeypatch, height, width, shrink, workers):
    """Heatmap and overlay decode to the colours of the whole map; the probmap is OpenCV's file of it; the
    shrunk overlay is the whole overlay's."""
    monkeypatch.setattr(maps, "STRIPE_BYTES", 3 * width * 40)  # many stripes, a partial last one
    probmap = textured(height, width, 1, seed=1)
    image = textured(height, width, 3, seed=2)
    written, shrunk = maps.write_maps(str(tmp_path), 4, image, probmap, workers=workers, shrink=shrink)
    assert written.tobytes() == cv2.imencode(".jpg", probmap)[1].tobytes()
    assert (tmp_path / "probmap_4.jpg").read_bytes() == written.tobytes()
    colours = colour_heatmap(probmap)
    for kind, expected in (("heatmap", colours), ("addmap", overlay(image, colours))):
        whole = decoded(cv2.imencode(".jpg", expected)[1])
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / f"{kind}_4.jpg")), whole)
    if shrink is None:
        assert shrunk is None
    else:
        np.testing.assert_array_equal(shrunk, shrink_by(overlay(image, colours), shrink))
    assert sorted(os.listdir(tmp_path)) == ["addmap_4.jpg", "heatmap_4.jpg", "probmap_4.jpg"]


def test_a_failing_stripe_leaves_no_colour_map_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(maps, "STRIPE_BYTES", 3 * 64 * 16)
    image = textured(100, 64)

    def failing(image_bgr, heatmap_bgr, out=None):
        raise RuntimeError("stripe failed")

    monkeypatch.setattr(maps, "overlay", failing)
    with pytest.raises(RuntimeError, match="stripe failed"):
        maps.write_maps(str(tmp_path), 0, image, textured(100, 64, 1), workers=2)
    assert not [name for name in os.listdir(tmp_path) if not name.startswith("probmap")]


def test_shrinking_row_stripes_gives_the_rows_of_the_whole():
    rng = np.random.default_rng(3)
    for _ in range(40):
        factor = int(rng.integers(2, 15))
        height, width = int(rng.integers(factor, 900)), int(rng.integers(factor, 300))
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
        rows = factor * int(rng.integers(1, 12))
        parts = [shrink_by(image[top:top + rows], factor) for top in range(0, height, rows)]
        np.testing.assert_array_equal(np.concatenate(parts), shrink_by(image, factor))


# --- strict decoding: OpenCV's pixels ---------------------------------------------------------------------


def assert_decoded_as_opencv(path):
    """Every strict reader gives the pixels ``cv2.imread`` gives the JPEG at ``path`` with its flags."""
    path = str(path)
    as_stored = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    np.testing.assert_array_equal(decode_strictly(path), as_stored, err_msg=path)
    np.testing.assert_array_equal(read_jpeg_strictly(path), cv2.imread(path), err_msg=path)
    np.testing.assert_array_equal(read_jpeg_strictly(path, "RGB"), cv2.imread(path)[:, :, ::-1], err_msg=path)
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(read_jpeg_strictly(path, "GRAY"), gray, err_msg=path)
    np.testing.assert_array_equal(read_probmap(path), gray, err_msg=path)
    np.testing.assert_array_equal(read_image(path), cv2.imread(path), err_msg=path)


def test_strict_decoding_of_the_reference_probmaps(shared):
    files = sorted(shared("reference", "pipeline").glob("*.jpg"))
    assert files
    for path in files:
        assert_decoded_as_opencv(path)


def test_strict_decoding_of_the_dev_images_saved_as_jpeg(shared, tmp_path):
    """Each fidelity image as the original's ``cv2.imwrite`` saves it (4:2:0), as PIL saves it progressive
    4:4:4 and 4:2:2, and in gray."""
    sources = sorted(shared("reference", "model", "dev_images").iterdir())
    assert len(sources) >= 7
    for source in sources:
        bgr = read_image(str(source))
        rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
        cv2.imwrite(str(tmp_path / "opencv.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rgb.save(tmp_path / "progressive.jpg", quality=90, subsampling=0, progressive=True)
        rgb.save(tmp_path / "422.jpg", quality=75, subsampling=1)
        rgb.convert("L").save(tmp_path / "gray.jpg")
        for name in ("opencv", "progressive", "422", "gray"):
            assert_decoded_as_opencv(tmp_path / f"{name}.jpg")


def test_strict_decoding_of_the_demo_testset(tmp_path):
    write_testset(str(tmp_path), 5, [(300, 420, 1), (517, 333, 1)])  # make_testset.py's files, smaller
    files = sorted((tmp_path / "imgs").glob("*.jpg"))
    assert len(files) == 2
    for path in files:
        assert_decoded_as_opencv(path)


@pytest.mark.parametrize("channels", [1, 3])
def test_strict_decoding_of_maps_with_restart_markers(tmp_path, channels):
    data, interval = joined(textured(1003, 1201, channels), 64)
    assert interval and bytes((0xFF, 0xD7)) in data  # restart markers, cycled
    (tmp_path / "map.jpg").write_bytes(data)
    assert_decoded_as_opencv(tmp_path / "map.jpg")


def test_strict_decoding_applies_exif_orientation_as_opencv(tmp_path):
    rgb = Image.fromarray(textured(60, 90, seed=4))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        rgb.save(tmp_path / f"{orientation}.jpg", exif=exif.tobytes())
        assert_decoded_as_opencv(tmp_path / f"{orientation}.jpg")
    assert read_jpeg_strictly(str(tmp_path / "6.jpg")).shape == (90, 60, 3)
