"""``selo-index`` reads a scene by row stripes within a memory budget per cutting task
(:func:`predict.archive.index.open_striped`): an archive indexed with the smallest stripes (``memory_mb=1``
leaves no room, so the plan falls to stripes of 256 rows) holds the same scene files as one indexed with each
scene in one block, and selo-localise's tiles and vectors; a truncated block is one line naming the file and
the window, the other scenes indexed and nothing of the broken one left behind."""
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: nodes on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from contextlib import ExitStack

import numpy as np
import pytest
import rasterio

from test_archive import CRS, DEMO_YAML, TRANSFORM, assert_whole, ray_test_cluster, write_png

from predict.archive import ArchiveSettings, index_archive, read_scene, scene_path
from predict.archive.index import open_striped
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
    for image in images:
        header, tiles, vectors = read_scene(scene_path(str(tmp_path / "whole"), image), settings.vectors_key)
        header_s, tiles_s, vectors_s = read_scene(scene_path(str(tmp_path / "striped"), image), settings.vectors_key)
        assert header_s == header and tiles_s == tiles
        np.testing.assert_allclose(vectors_s, vectors, rtol=1e-5, atol=1e-6)
        assert_whole(tmp_path / "striped", image, encoder)  # selo-localise's tiles, the encoder's vectors
    masked = read_scene(scene_path(str(tmp_path / "striped"), images[1]), settings.vectors_key)[0]
    assert masked["nodata"]["masked_pixels"] == NODATA_COLUMNS * HEIGHT and masked["nodata"]["tiles_left_out"] > 0


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
