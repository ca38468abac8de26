"""Scenes of any size at bounded memory (:mod:`predict.io.scene_blocks`, :mod:`predict.io.scene_maps`): a scene
read and its maps written in stripes of 256 rows (``memory_mb=1`` leaves no room, so the plan falls to its
smallest stripes) gives the same bytes, file for file, as the scene held in one block, and the same map as the
whole-image code (``read_raster`` and ``raster_probmap``); a truncated block is one line naming the file and
the window, bands of different block sizes one line naming the file, and neither leaves anything behind; the
explorer's preview of a GeoTIFF is read from its overviews, and its tiles, page map and downloads by
stripes, equal to the whole-image code's, its last images kept open and the others closed."""
import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

import predict.io.scene_blocks as scene_blocks
from predict.core.pipelines import PIPELINES
from predict.core.stretch import Stretch
from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder
from predict.explorer.images import ImageFolder
from predict.io.jpeg import encode_jpeg
from predict.io.raster import read_raster, write_probmap_tif
from predict.localisation import TileVectorStore, score_tiles
from predict.scenes import SceneConfig, localise_scenes, raster_probmap

from helpers import DEMO_YAML

SIZE = 1300
QUERY = "a playground with a green football field and a red track."
TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(str(DEMO_YAML), device="cpu")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """An 8-bit RGB scene with a nodata border, tiled 256, and a 12-bit-in-uint16 4-band copy, tiled 512."""
    folder = tmp_path_factory.mktemp("scenes")
    rgb = np.moveaxis(generate_scene([90, 2], SIZE, SIZE).rgb, -1, 0)
    eight = folder / "eight.tif"
    with_border = rgb.copy()
    with_border[:, :, :200] = 0
    with rasterio.open(eight, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM, nodata=0, tiled=True, blockxsize=256, blockysize=256,
                       photometric="RGB") as dst:
        dst.write(with_border)
    sixteen = folder / "sixteen.tif"
    rng = np.random.default_rng(0)
    deep = rgb.astype(np.uint16) * 16 + rng.integers(0, 16, rgb.shape, dtype=np.uint16)
    with rasterio.open(sixteen, "w", driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=TRANSFORM, tiled=True, blockxsize=512, blockysize=512,
                       compress="deflate") as dst:
        dst.write(np.concatenate([deep, deep[:1]]))
    return {"eight": str(eight), "sixteen": str(sixteen)}


def outputs(folder) -> dict[str, bytes]:
    """The bytes of every output file of a run (not its summary, log and vectors, which hold times)."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if name.startswith(("eight_", "sixteen_"))}


def run(image, out, encoder, pipeline, memory_mb, caplog):
    config = SceneConfig(out_dir=str(out), pipeline=PIPELINES[pipeline], regions=0.9, mask=0.95, memory_mb=memory_mb)
    with caplog.at_level(logging.INFO, logger="selo"):
        done = localise_scenes([image], [QUERY], encoder, config, logging.getLogger("selo"))
    assert not done.errors
    return outputs(out)


@pytest.mark.parametrize("pipeline", ["v1", "v2"])
@pytest.mark.parametrize("kind", ["eight", "sixteen"])
def test_stripes_of_any_size_give_the_same_bytes(scenes, encoder, pipeline, kind, tmp_path, caplog):
    whole = run(scenes[kind], tmp_path / "whole", encoder, pipeline, 100_000, caplog)
    assert "read as one block" in caplog.text
    caplog.clear()
    striped = run(scenes[kind], tmp_path / "striped", encoder, pipeline, 1, caplog)
    stripes = "6 stripes of 256 rows" if kind == "eight" else "3 stripes of 512 rows"  # the file's 512-row blocks
    assert f"read in {stripes}" in caplog.text
    assert "maps in stripes of 256 rows" in caplog.text
    assert set(whole) == set(striped) and len(whole) == 7  # probmap, mask, overlay (+ world file, aux), peaks, regions
    for name in whole:
        assert whole[name] == striped[name], name


def test_the_striped_map_is_the_whole_images_map(scenes, encoder, tmp_path, caplog):
    """The COG written stripe by stripe is byte for byte the whole-image code's: ``read_raster``, ``score_tiles``
    and ``raster_probmap`` on the pixels held whole, written by ``write_probmap_tif``."""
    spec = PIPELINES["v1"]
    striped = run(scenes["eight"], tmp_path / "striped", encoder, "v1", 1, caplog)
    raster = read_raster(scenes["eight"])
    tiles, scores = score_tiles(raster, QUERY, encoder, spec, TileVectorStore(encoder), valid=raster.valid)
    probmap = raster_probmap(raster, tiles, scores, spec, scenes["eight"])
    reference = tmp_path / "reference.tif"
    tags = dict(rasterio.open(tmp_path / "striped" / "eight_q0_probmap.tif").tags())
    write_probmap_tif(reference, probmap, raster, tags=tags)
    assert striped["eight_q0_probmap.tif"] == reference.read_bytes()


def test_a_huge_scenes_stretch_is_estimated_from_a_fixed_sample_of_blocks(scenes, encoder, tmp_path, caplog,
                                                                            monkeypatch):
    """Above the exact limit the percentiles come from a grid of the file's blocks: the key says so, the
    budget changes no byte, and the range is that of the sampled blocks' own histogram."""
    monkeypatch.setattr(scene_blocks, "EXACT_PERCENTILE_PIXELS", 1000)
    monkeypatch.setattr(scene_blocks, "SAMPLE_BLOCKS", 2)  # blocks (0, 0), (0, 2), (2, 0), (2, 2) of 3 x 3
    first = run(scenes["sixteen"], tmp_path / "a", encoder, "v1", 100_000, caplog)
    assert first == run(scenes["sixteen"], tmp_path / "b", encoder, "v1", 1, caplog)
    with rasterio.open(scenes["sixteen"]) as src:
        corners = [src.read([1, 2, 3], window=((r, min(r + 512, SIZE)), (c, min(c + 512, SIZE))))
                   for r in (0, 1024) for c in (0, 1024)]
    values = np.concatenate([block.reshape(3, -1) for block in corners], axis=1)
    expected = Stretch()  # one range for all bands: the 2 and 98 % of the sampled values
    lo, hi = np.percentile(values, [expected.low, expected.high], method="inverted_cdf")
    with rasterio.open(scenes["sixteen"]) as src:
        ranges, how = scene_blocks.stretch_ranges(src, scenes["sixteen"], (1, 2, 3), expected)
    assert ranges == [(float(lo), float(hi))] * 3
    assert how == "estimated from a grid of 4 of the file's blocks"


def test_a_truncated_block_is_one_line_naming_the_file_and_the_window(scenes, encoder, tmp_path):
    broken = tmp_path / "broken.tif"
    data = open(scenes["sixteen"], "rb").read()
    broken.write_bytes(data[:int(0.6 * len(data))])  # the blocks of rows 512 on are cut off
    out = tmp_path / "out"
    config = SceneConfig(out_dir=str(out), memory_mb=1)
    done = localise_scenes([str(broken), scenes["eight"]], [QUERY], encoder, config, logging.getLogger("selo"))
    assert len(done.errors) == 1 and "\n" not in done.errors[0]
    assert done.errors[0].startswith(f"{broken}: cannot read the window of rows 512-1024, columns 0-1300")
    left = sorted(os.listdir(out))
    assert not [name for name in left if name.startswith("broken") or name.endswith((".tmp", ".work.tif"))]
    assert "eight_q0_probmap.tif" in left  # the other scene goes on


def test_the_explorers_preview_is_read_from_the_overviews(scenes, encoder, tmp_path):
    """A GeoTIFF's thumbnail is a decimated read: at an overview's size, the overview's own pixels (made by
    nearest neighbour, so not what shrinking the whole scene would give), never the scene decoded whole."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(scenes["eight"], images / "scene.tif")
    with rasterio.open(images / "scene.tif", "r+") as dst:
        dst.build_overviews([2, 4], Resampling.nearest)
    with rasterio.open(images / "scene.tif", overview_level=1) as overview:  # the factor 4: 325 x 325 px
        expected = np.ascontiguousarray(np.moveaxis(overview.read([3, 2, 1]), 0, -1))
    side = expected.shape[0]
    (tmp_path / "outputs").mkdir()
    folder = ImageFolder(encoder, str(images), str(tmp_path / "cache"), str(tmp_path / "outputs"))
    path = folder.thumbnail("scene.tif", side)
    assert open(path, "rb").read() == encode_jpeg(expected).tobytes()
    whole = read_raster(images / "scene.tif").pixels
    assert not np.array_equal(expected, cv2.resize(whole, (side, side), interpolation=cv2.INTER_AREA))


def test_the_explorer_reads_a_scene_by_stripes_and_gives_the_whole_images_maps(scenes, encoder, tmp_path,
                                                                               monkeypatch):
    """With a budget that leaves room for 256-row stripes, the explorer never holds the scene whole (no read
    longer than a stripe and the tallest tile), yet its nodata tiles, page map (transparent where
    ``cv2.resize`` of the whole mask says) and downloads are the whole-image code's."""
    import predict.explorer.images as images_module
    from predict.explorer import Explorer, ExplorerConfig, Job
    from predict.explorer.requests import pipeline_spec
    from predict.io.raster import peaks_feature_collection
    from predict.localisation import mostly_valid

    from helpers import wait_for

    monkeypatch.setattr(images_module, "MEMORY_PER_CORE", 1)
    spans = []
    read = scene_blocks.ScenePixels.read
    monkeypatch.setattr(scene_blocks.ScenePixels, "read",
                        lambda self, first, stop: spans.append(stop - first) or read(self, first, stop))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(scenes["eight"], images / "scene.tif")
    explorer = Explorer(encoder, ExplorerConfig(images_dir=str(images), cache_dir=str(tmp_path / "cache"),
                                                outputs_dir=str(tmp_path / "outputs"), preview_side=256))
    result = wait_for(lambda: not isinstance(asked := explorer.localise("scene.tif", QUERY, steps="256_512"), Job)
                      and asked)
    assert spans and max(spans) <= 256 + 512  # a stripe and the tallest tile beyond it, never the 1300 rows

    whole = read_raster(images / "scene.tif")
    spec = pipeline_spec("v1", "256_512")
    tiles, scores = score_tiles(whole.loaded(), QUERY, encoder, spec, TileVectorStore(encoder), valid=whole.valid)
    assert sorted(result.tiles) == sorted(tiles)
    assert result.tiles_encoded == len(mostly_valid(spec.first_stage_tiles(SIZE, SIZE), whole.valid))
    png = cv2.imdecode(np.fromfile(explorer.output_path(f"{result.id}.png"), np.uint8), cv2.IMREAD_UNCHANGED)
    shown = cv2.resize(whole.valid.view(np.uint8), png.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(png[:, :, 3], 255 * shown)

    probmap = raster_probmap(whole, tiles, scores, spec, "scene.tif")
    path, _ = explorer.download(result.id, "probmap")
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), probmap)
    path, _ = explorer.download(result.id, "peaks")
    assert json.loads(open(path).read()) == json.loads(json.dumps(peaks_feature_collection(probmap, whole)))
    assert max(spans) <= 256 + 512


def test_the_explorer_keeps_the_last_images_open_and_closes_those_it_drops(scenes, encoder, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.tif", "b.tif", "c.tif"):
        shutil.copy(scenes["eight"], images / name)
        with rasterio.open(images / name, "r+") as dst:  # three contents
            dst.update_tags(name=name)
    folder = ImageFolder(encoder, str(images), str(tmp_path / "cache"), str(tmp_path / "outputs"), keep_rasters=2)
    state = {name: folder.state(name) for name in ("a.tif", "b.tif", "c.tif")}
    with folder.raster("a.tif", state["a.tif"]) as a:
        with folder.raster("b.tif", state["b.tif"]), folder.raster("c.tif", state["c.tif"]):
            assert not a.pixels.src.closed  # dropped from the kept ones, but still in use
        assert a.pixels.read(0, 10)[0].shape == (10, SIZE, 3)
    assert a.pixels.src.closed
    with folder.raster("c.tif", state["c.tif"]) as c, folder.raster("c.tif", state["c.tif"]) as again:
        assert c is again and not c.pixels.src.closed


def test_bands_of_different_block_sizes_are_one_line_naming_the_file(scenes, encoder, tmp_path):
    """A dataset whose bands are blocked differently (a VRT, here named .tif, of 128 and 256 px blocks) cannot be
    read window by window: one line naming the file and the block sizes, the other scene goes on, nothing left."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{band}" blockXSize="{side}" blockYSize="{side}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{scenes["eight"]}</SourceFilename><SourceBand>{band}</SourceBand>'
        f'</SimpleSource></VRTRasterBand>' for band, side in ((1, 128), (2, 256), (3, 256)))
    mixed = tmp_path / "mixed.tif"
    mixed.write_text(f'<VRTDataset rasterXSize="{SIZE}" rasterYSize="{SIZE}">{bands}</VRTDataset>')
    out = tmp_path / "out"
    done = localise_scenes([str(mixed), scenes["eight"]], [QUERY], encoder, SceneConfig(out_dir=str(out)),
                           logging.getLogger("selo"))
    assert done.errors == [f"{mixed}: bands [1, 2, 3] have different block sizes [(128, 128), (256, 256), "
                           "(256, 256)]; they cannot be read window by window"]
    left = sorted(os.listdir(out))
    assert not [name for name in left if name.startswith("mixed") or name.endswith((".tmp", ".work.tif"))]
    assert "eight_q0_probmap.tif" in left
