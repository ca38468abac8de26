"""``selo-index`` reads a scene by row stripes within a memory budget per cutting task
(:func:`predict.archive.index.open_striped`): an archive indexed with the smallest stripes (``memory_mb=1``
leaves no room, so the plan falls to stripes of 256 rows) holds the same scene files as one indexed with each
scene in one block, and selo-localise's tiles and vectors; so does one whose scenes are cut by several tasks, a
band of rows each (:func:`predict.archive.index.part_rows`); a truncated block is one line naming the file and
the window, the other scenes indexed and nothing of the broken one left behind."""
import logging
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: nodes on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from contextlib import ExitStack

import numpy as np
import pytest
import rasterio

from test_archive import CRS, DEMO_YAML, TRANSFORM, assert_whole, ray_test_cluster, write_png

from predict.archive import ArchiveSettings, index_archive, read_scene, scene_path
from predict.archive.index import open_striped, part_rows
from predict.core.tiling import tiles_in_rows
from predict.io.raster import read_raster
from predict.localisation import mostly_valid
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder
from predict.provenance import vectors_key

HEIGHT, WIDTH = 1300, 900
NODATA_COLUMNS = 200  # the left columns of the GeoTIFF scene are nodata


@pytest.fixture(scope="module")
def cluster():
    with ray_test_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(DEMO_YAML, device="cpu")


@pytest.fixture(scope="module")
def settings(encoder):
    return ArchiveSettings(DEMO_YAML, vectors_key(encoder), encoder.tile_size, "v1", (256, 512))


def write_tiled(path, seed, nodata):
    """A UTM scene tiled in 256 px blocks, deflated; with ``nodata``, its left NODATA_COLUMNS columns are 0."""
    rgb = generate_scene(seed, HEIGHT, WIDTH).rgb
    rgb[np.all(rgb == 0, axis=2)] = 1  # no accidental nodata
    if nodata:
        rgb[:, :NODATA_COLUMNS] = 0
    with rasterio.open(path, "w", driver="GTiff", width=WIDTH, height=HEIGHT, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM, nodata=0 if nodata else None, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", photometric="RGB") as dst:
        dst.write(np.moveaxis(rgb, -1, 0))


def assert_same_archives(reference, other, images, settings, encoder):
    """The scene files of ``other`` are those of ``reference`` (their vectors to float precision), and hold
    selo-localise's tiles with the encoder's vectors."""
    for image in images:
        header, tiles, vectors = read_scene(scene_path(str(reference), image), settings.vectors_key)
        header_o, tiles_o, vectors_o = read_scene(scene_path(str(other), image), settings.vectors_key)
        assert header_o == header and tiles_o == tiles
        np.testing.assert_allclose(vectors_o, vectors, rtol=1e-5, atol=1e-6)
        assert_whole(other, image, encoder)


@pytest.mark.slow  # the test Ray cluster, two archives of the same scenes
def test_an_archive_indexed_by_small_stripes_is_the_one_block_archive(cluster, encoder, settings, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_tiled(scenes / "masked.tif", 21, nodata=True)
    write_tiled(scenes / "full.tif", 22, nodata=False)
    write_png(scenes / "park.png", 23)
    images = sorted(str(p) for p in scenes.iterdir())
    with ExitStack() as stack:  # what memory_mb=1 plans: stripes of the file's 256-row blocks
        assert open_striped(images[1], stack, settings, 1, []).pixels.describe() == \
            f"{WIDTH} x {HEIGHT} px read in 6 stripes of 256 rows (+512 rows for the largest tile)"
    whole = index_archive(images, str(tmp_path / "whole"), settings, 16)
    striped = index_archive(images, str(tmp_path / "striped"), settings, 16, memory_mb=1)
    assert whole.errors == striped.errors == [] and len(striped.scenes) == 3
    assert_same_archives(tmp_path / "whole", tmp_path / "striped", images, settings, encoder)
    masked = read_scene(scene_path(str(tmp_path / "striped"), images[1]), settings.vectors_key)[0]
    assert masked["nodata"]["masked_pixels"] == NODATA_COLUMNS * HEIGHT and masked["nodata"]["tiles_left_out"] > 0


@pytest.mark.slow  # the test Ray cluster, two archives of the same scenes
def test_a_scene_cut_by_several_tasks_is_the_one_task_scene(cluster, encoder, settings, tmp_path, caplog):
    """A scene of more than ``part_pixels`` is cut by several tasks, a band of 256 rows each (six here, the
    first all nodata, so it cuts no tile): the archive holds the same scene file as one task makes, with
    the nodata and tile counts of the whole scene."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_tiled(scenes / "masked.tif", 26, nodata=True)
    with rasterio.open(scenes / "masked.tif", "r+") as dst:  # the top rows nodata too: a part without a tile
        dst.write(np.zeros((3, 300, WIDTH), np.uint8), window=((0, 300), (0, WIDTH)))
    write_tiled(scenes / "full.tif", 27, nodata=False)
    images = sorted(str(p) for p in scenes.iterdir())
    first_band = tiles_in_rows(settings.spec().first_stage_tiles(HEIGHT, WIDTH), (0, 256), HEIGHT, WIDTH)
    assert first_band and not mostly_valid(first_band, read_raster(images[1]).valid)
    assert part_rows(HEIGHT, 6, 256) == [(0, 256), (256, 512), (512, 768), (768, 1024), (1024, 1280), (1280, 1300)]
    one = index_archive(images, str(tmp_path / "one"), settings, 16)
    with caplog.at_level(logging.INFO, logger="selo"):
        parts = index_archive(images, str(tmp_path / "parts"), settings, 16, memory_mb=1, part_pixels=256 * WIDTH)
    assert one.errors == parts.errors == [] and [s.get("parts") for s in parts.scenes] == [6, 6]
    assert f"{images[1]}: " in caplog.text and " tiles encoded by 6 tasks, " in caplog.text
    assert_same_archives(tmp_path / "one", tmp_path / "parts", images, settings, encoder)
    masked = read_scene(scene_path(str(tmp_path / "parts"), images[1]), settings.vectors_key)[0]
    assert masked["nodata"]["masked_pixels"] == NODATA_COLUMNS * HEIGHT + 300 * (WIDTH - NODATA_COLUMNS)


@pytest.mark.slow  # the test Ray cluster
def test_a_truncated_block_is_one_line_naming_the_file_and_the_window(cluster, settings, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_tiled(scenes / "good.tif", 24, nodata=False)
    write_tiled(tmp_path / "whole.tif", 25, nodata=False)
    data = (tmp_path / "whole.tif").read_bytes()
    broken = scenes / "broken.tif"
    broken.write_bytes(data[:int(0.6 * len(data))])  # the last blocks are cut off: the header opens, pixels fail
    archive = tmp_path / "archive"
    run = index_archive([str(scenes)], str(archive), settings, 16, memory_mb=1)
    assert len(run.errors) == 1 and "\n" not in run.errors[0]
    assert run.errors[0].startswith(f"{broken}: cannot read the window of rows ")
    assert ", columns " in run.errors[0]
    assert [os.path.basename(s["image"]) for s in run.scenes] == ["good.tif"]
    assert not os.path.exists(scene_path(str(archive), str(broken)))
    left = [name for _, _, names in os.walk(archive) for name in names]
    assert not [name for name in left if name.startswith("broken") or name.endswith(".tmp")]


@pytest.mark.parametrize("part_pixels", [0, -5, 2.5, True])
def test_a_part_size_that_is_no_pixel_count_is_refused_before_any_work(settings, tmp_path, part_pixels):
    with pytest.raises(ValueError, match=r"^part_pixels .*: expected a whole number of pixels, at least 1$"):
        index_archive([str(tmp_path)], str(tmp_path / "archive"), settings, 16, part_pixels=part_pixels)
    assert not (tmp_path / "archive").exists()
