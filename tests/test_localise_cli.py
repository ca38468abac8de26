"""SeLo on a user's own scenes (``selo-localise``, :mod:`predict.cli.localise`): a synthetic scene written by the
test as a GeoTIFF in UTM 33N, an 8-bit copy, a 12-bit-in-uint16 copy and a copy with a nodata border,
localised with the demo encoder; the outputs' georeferencing, peaks, nodata, tile-vector reuse and bad input.
"""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import rasterio.warp
from rasterio.transform import from_origin

from predict.core.stretch import Stretch
from predict.demo.synthetic import generate_scene
from predict.io.annotations import SampleError
from predict.io.images import read_image
from predict.io.raster import read_raster

from helpers import DEMO_YAML as DEMO_YAML_PATH
from helpers import REPO_ROOT, subprocess_env

DEMO_YAML = str(DEMO_YAML_PATH)
SCENE_SEED, SIZE = [90, 2], 1500
CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N
TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)  # 0.5 m pixels
QUERIES = ["a playground with a green football field and a red track.", "there is a baseball field.", ""]
BORDER = 300  # nodata columns on the left of the nodata copy
CLOUD = 250  # side of the 12-bit copy's shadow and cloud


@pytest.fixture(scope="module")
def scene():
    scene = generate_scene(SCENE_SEED, SIZE, SIZE)
    kinds = [o.kind for o in scene.objects]
    assert "football_field" in kinds and "baseball_field" in kinds
    return scene


def polygon_of(scene, kind):
    return next(o.polygon for o in scene.objects if o.kind == kind).astype(np.float32)


def write_geotiff(path, bands_first, nodata=None, **extra):
    count, height, width = bands_first.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=bands_first.dtype,
                       crs=CRS, transform=TRANSFORM, nodata=nodata, **extra) as dst:
        dst.write(bands_first)


def twelve_bit_copy(rgb_first):
    """The scene as a raw 12-bit sensor gives it, in uint16: 16 x the 8-bit values plus sensor noise, with a
    black shadow (top left) and a saturated cloud (bottom left) of CLOUD x CLOUD pixels, each over 2 % of
    the scene, which the 2-98 % stretch leaves out of its range."""
    rng = np.random.default_rng(0)
    data = rgb_first.astype(np.uint16) * 16 + rng.integers(0, 16, rgb_first.shape, dtype=np.uint16)
    data[:, :CLOUD, :CLOUD] = rng.integers(0, 16, (3, CLOUD, CLOUD), dtype=np.uint16)
    data[:, -CLOUD:, :CLOUD] = 4095
    return data


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, scene):
    """The scene as 8-bit, 12-bit-in-uint16 and nodata-bordered GeoTIFFs, and as PNG and JPEG."""
    folder = tmp_path_factory.mktemp("scenes")
    rgb_first = np.moveaxis(scene.rgb, -1, 0)
    paths = {kind: str(folder / f"{kind}.tif") for kind in ("scene8", "scene12", "border")}
    write_geotiff(paths["scene8"], rgb_first, photometric="RGB")
    write_geotiff(paths["scene12"], twelve_bit_copy(rgb_first))
    bordered = rgb_first.copy()
    bordered[:, :, :BORDER] = 0
    write_geotiff(paths["border"], bordered, nodata=0)
    for ext in ("png", "jpg"):
        paths[ext] = str(folder / f"plain.{ext}")
        cv2.imwrite(paths[ext], cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory, scenes):
    """One CLI run over every scene, a missing image and QUERIES (the last one empty)."""
    from predict.cli.localise import main

    out = tmp_path_factory.mktemp("out")
    images = [scenes["scene8"], scenes["scene12"], str(out / "missing.tif"), scenes["border"], scenes["png"]]
    argv = ["--yaml_path", DEMO_YAML, "--device", "cpu", "--out", str(out), "--regions", "0.95", "--mask", "0.95"]
    argv += [a for image in images for a in ("--image", image)] + [a for q in QUERIES for a in ("--query", q)]
    rc = main(argv)
    summary = json.loads((out / "summary.json").read_text())
    return rc, out, summary


def result(summary, stem, k):
    return next(r for r in summary["results"] if r["files"]["probmap"] == f"{stem}_q{k}_probmap.tif")


def top_peak(out, stem, k):
    peaks = json.loads((out / f"{stem}_q{k}_peaks.geojson").read_text())
    assert peaks["type"] == "FeatureCollection" and peaks["features"]
    ranks = [f["properties"]["rank"] for f in peaks["features"]]
    assert ranks == list(range(1, len(ranks) + 1))
    return peaks["features"][0]


def test_bad_input_costs_one_line_each_and_the_rest_goes_on(run):
    rc, out, summary = run
    assert rc == 1
    assert len(summary["errors"]) == 2
    assert any("missing.tif" in e and "not found" in e for e in summary["errors"])
    assert any("query 2" in e and "empty" in e for e in summary["errors"])
    assert len(summary["results"]) == 4 * 2  # four readable images x two non-empty queries
    log = (out / "log.txt").read_text()
    assert "missing.tif: image not found" in log


def test_summary_describes_every_output_in_the_folder(run):
    _, out, summary = run
    listed = set()
    for entry in summary["results"]:
        kinds = {"probmap", "overlay", "overlay_aux_xml", "peaks", "regions", "mask"}
        assert set(entry["files"]) == (kinds if entry["image"].endswith(".png") else kinds | {"overlay_world_file"})
        for name in entry["files"].values():
            assert not name.startswith("/") and (out / name).is_file()
        listed |= set(entry["files"].values())
        assert entry["query"] == summary["queries"][entry["k"]] and entry["seconds"] > 0
        assert entry["encoder"] == "demo" and len(entry["encoder_identity"]) == 64 and len(entry["image_digest"]) == 64
        assert (entry["pipeline"], entry["steps"]) == ("v1", [256, 512, 768])
    folder_level = {"summary.json", ".summary.json.selo", "all_peaks.geojson", "log.txt", "tile_vectors", ".lock"}
    assert {p.name for p in out.iterdir()} == listed | folder_level


def test_each_image_is_encoded_once_and_later_queries_encode_no_tile(run, scenes):
    from predict.core.pipelines import PIPELINES
    from predict.localisation.maps import mostly_valid

    _, _, summary = run
    for stem, path in (("scene8", scenes["scene8"]), ("scene12", scenes["scene12"]), ("border", scenes["border"]),
                       ("plain", scenes["png"])):
        raster = read_raster(path)  # every v1 tile the first query scores (those at least half valid)
        tiles = PIPELINES["v1"].first_stage_tiles(*raster.pixels.shape[:2])
        tiles = tiles if raster.valid is None else mostly_valid(tiles, raster.valid)
        assert result(summary, stem, 0)["tiles_encoded"] == len(tiles)
        assert result(summary, stem, 1)["tiles_encoded"] == 0


def test_a_later_run_reuses_the_vectors_on_disk(run, scenes, tmp_path):
    from predict.cli.localise import main

    _, out, _ = run
    again = tmp_path / "again.png"  # the same bytes under another name (so that no output of `run` is replaced)
    shutil.copyfile(scenes["png"], again)
    for folder, cache in ((out, []), (tmp_path / "elsewhere", ["--vector_cache", str(out / "tile_vectors")])):
        rc = main(["--yaml_path", DEMO_YAML, "--device", "cpu", "--out", str(folder), "--image", str(again),
                   "--query", "some tennis courts.", *cache])
        summary = json.loads((folder / "summary.json").read_text())
        assert rc == 0 and summary["runs"][-1]["results"] == 1
        assert result(summary, "again", summary["queries"].index("some tennis courts."))["tiles_encoded"] == 0


def test_probmap_keeps_the_inputs_crs_transform_and_size(run):
    _, out, _ = run
    with rasterio.open(out / "scene8_q0_probmap.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_string(CRS)
        assert src.transform == TRANSFORM
        assert (src.height, src.width, src.count, src.dtypes[0]) == (SIZE, SIZE, 1, "uint8")
        assert src.block_shapes == [(256, 256)] and src.compression.name == "deflate"


def test_probmap_is_the_benchmark_pipelines_map(run, scenes):
    import predict.cli.localise  # noqa: F401  the command's module, imported beside the library function
    from predict import load_encoder, localise

    assert callable(localise) and localise.__module__ == "predict.localisation.maps"
    _, out, _ = run
    encoder = load_encoder(DEMO_YAML, device="cpu")
    expected = localise(scenes["png"], QUERIES[0], encoder)
    for stem in ("scene8", "plain"):
        with rasterio.open(out / f"{stem}_q0_probmap.tif") as src:
            assert np.array_equal(src.read(1), expected)


def test_peaks_are_the_wgs84_position_of_their_pixel_centre(run):
    _, out, _ = run
    peaks = json.loads((out / "scene8_q1_peaks.geojson").read_text())["features"]
    with rasterio.open(out / "scene8_q1_probmap.tif") as src:
        probmap = src.read(1)
    for peak in peaks:
        col, row = peak["properties"]["col"], peak["properties"]["row"]
        x, y = TRANSFORM @ (col + 0.5, row + 0.5)
        lon, lat = rasterio.warp.transform(CRS, "EPSG:4326", [x], [y])
        assert peak["geometry"]["coordinates"] == pytest.approx([lon[0], lat[0]], abs=6e-8)  # rounded to 1e-7 degree
        assert 14.9 < lon[0] < 15.1 and 45.1 < lat[0] < 45.2  # UTM 33N's central meridian is 15 E
        assert peak["properties"]["score"] == probmap[row, col] / 255 >= 0.5


def test_unreferenced_png_peaks_are_pixel_centres(run):
    _, out, _ = run
    peak = top_peak(out, "plain", 0)
    assert peak["geometry"]["coordinates"] == [peak["properties"]["col"] + 0.5, peak["properties"]["row"] + 0.5]
    assert peak["properties"]["coordinate_system"] == "pixel"
    with rasterio.open(out / "plain_q0_probmap.tif") as src:
        assert src.crs is None


@pytest.mark.parametrize("stem", ["scene8", "scene12", "border"])
@pytest.mark.parametrize("k, kind", [(0, "football_field"), (1, "baseball_field")])
def test_top_peak_lies_inside_the_queried_object(run, scene, stem, k, kind):
    _, out, _ = run
    peak = top_peak(out, stem, k)
    col, row = peak["properties"]["col"], peak["properties"]["row"]
    assert cv2.pointPolygonTest(polygon_of(scene, kind), (float(col), float(row)), False) >= 0


def test_twelve_bit_scene_is_stretched_over_its_own_range(scenes, scene):
    raster = read_raster(scenes["scene12"])
    assert raster.pixels.dtype == np.uint8 and raster.valid is None
    # between shadow and cloud the stretch gives back the 8-bit scene (a 65535 scale would give 1/16 of it)
    difference = np.abs(raster.pixels.astype(int) - cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    assert difference[CLOUD:-CLOUD].mean() < 1.5
    keys = {read_raster(scenes["scene12"], stretch=s).key for s in (Stretch(1, 99), Stretch(per_band=True), None)}
    assert len(keys | {raster.key}) == 4


def test_nodata_border_is_not_scored_and_masked_in_the_map(run, scenes):
    _, out, summary = run
    raster = read_raster(scenes["border"])
    assert raster.valid is not None and not raster.valid[:, :BORDER].any() and raster.valid[:, BORDER:].all()
    assert result(summary, "border", 0)["tiles_encoded"] < result(summary, "scene8", 0)["tiles_encoded"]
    with rasterio.open(out / "border_q0_probmap.tif") as src:
        mask = src.dataset_mask()
        probmap = src.read(1)
    assert not mask[:, :BORDER].any() and mask[:, BORDER:].all()
    assert not probmap[:, :BORDER].any()
    assert cv2.imread(str(out / "border_q0_overlay.jpg"))[:, :BORDER - 8].max() < 8  # black, up to JPEG noise
    peaks = json.loads((out / "border_q0_peaks.geojson").read_text())["features"]
    assert all(p["properties"]["col"] >= BORDER for p in peaks)


def test_regions_are_wgs84_polygons_above_the_quantile(run, scene):
    _, out, _ = run
    regions = json.loads((out / "scene8_q0_regions.geojson").read_text())["features"]
    assert regions and all(f["geometry"]["type"] == "Polygon" for f in regions)
    lon, lat = np.array([xy for f in regions for ring in f["geometry"]["coordinates"] for xy in ring]).T
    assert 14.9 < lon.min() <= lon.max() < 15.1 and 45.1 < lat.min() <= lat.max() < 45.2
    with rasterio.open(out / "scene8_q0_probmap.tif") as src:
        probmap = src.read(1)
    threshold = round(regions[0]["properties"]["threshold"] * 255)
    assert np.mean(probmap > threshold) <= 0.05 < np.mean(probmap >= threshold)  # the 0.95 quantile
    count, _ = cv2.connectedComponents((probmap > threshold).astype(np.uint8), connectivity=4)
    assert len(regions) == count - 1


def test_cloud_optimised_geotiff_reads_as_the_geotiff(scenes, tmp_path):
    cog = tmp_path / "scene8_cog.tif"
    rasterio.shutil.copy(scenes["scene8"], cog, driver="COG")
    plain, optimised = read_raster(scenes["scene8"]), read_raster(cog)
    assert np.array_equal(plain.pixels, optimised.pixels)
    assert (optimised.crs, optimised.transform) == (plain.crs, plain.transform)


def test_eight_bit_jpeg_and_png_give_the_benchmark_pipelines_pixels(scenes):
    for ext in ("jpg", "png"):
        raster = read_raster(scenes[ext])
        assert np.array_equal(raster.pixels, read_image(scenes[ext]))
        assert raster.crs is None and raster.valid is None


def test_bands_pick_the_pixels_and_change_the_key(scenes, scene):
    default, swapped, gray = (read_raster(scenes["scene8"], bands) for bands in (None, (3, 2, 1), (2,)))
    assert np.array_equal(default.pixels, cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(swapped.pixels, scene.rgb)  # blue read as red: RGB in BGR order
    assert np.array_equal(gray.pixels[:, :, 0], scene.rgb[:, :, 1]) and len({default.key, swapped.key, gray.key}) == 3
    with pytest.raises(SampleError, match="scene8.tif: no band 4"):
        read_raster(scenes["scene8"], (4, 3, 2))


def test_unreadable_and_missing_files_are_one_line(tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    for path, problem in ((broken, "cannot read"), (tmp_path / "absent.tif", "not found")):
        with pytest.raises(SampleError) as error:
            read_raster(path)
        assert str(path) in str(error.value) and problem in str(error.value) and "\n" not in str(error.value)


def test_a_truncated_geotiff_is_one_line_with_gdals_reason(scenes, tmp_path):
    data = open(scenes["scene8"], "rb").read()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(SampleError) as error:
        read_raster(truncated)
    message = str(error.value)
    assert message.startswith(f"{truncated}: cannot read image (") and "\n" not in message
    assert "See previous exception" not in message and "Read error" in message and "expected" in message


def test_v2_on_the_nodata_scene_scores_only_valid_tiles_and_boxes(scenes, tmp_path):
    from predict import load_encoder
    from predict.core.pipelines import PIPELINES
    from predict.localisation.maps import mostly_valid
    from predict.scenes.run import SceneConfig, localise_scenes

    run = localise_scenes([scenes["border"]], QUERIES[:1], load_encoder(DEMO_YAML, device="cpu"),
                          SceneConfig(out_dir=str(tmp_path), pipeline=PIPELINES["v2"]))
    raster = read_raster(scenes["border"])
    valid_tiles = mostly_valid(PIPELINES["v2"].first_stage_tiles(*raster.pixels.shape[:2]), raster.valid)
    assert not run.errors and run.results[0]["tiles_encoded"] == len(valid_tiles)
    with rasterio.open(tmp_path / "border_q0_probmap.tif") as src:
        assert not src.dataset_mask()[:, :BORDER].any() and not src.read(1)[:, :BORDER].any()


def test_float_bands_with_nan_nodata_are_stretched_over_the_valid_pixels(tmp_path):
    reflectance = np.random.default_rng(1).uniform(0.02, 0.3, (3, 64, 80)).astype(np.float32)
    reflectance[:, :10] = np.nan
    path = tmp_path / "reflectance.tif"
    write_geotiff(path, reflectance, nodata=np.nan)
    raster = read_raster(path)
    assert raster.valid is not None and not raster.valid[:10].any() and raster.valid[10:].all()
    assert not raster.pixels[:10].any()
    low, high = np.percentile(raster.pixels[10:], [2, 98])
    assert low <= 3 and high >= 252
    assert raster.crs == rasterio.crs.CRS.from_string(CRS) and raster.transform == TRANSFORM


def test_the_module_runs_and_refuses_a_run_without_queries(scenes, tmp_path):
    command = [sys.executable, "-m", "predict.cli.localise", "--yaml_path", "demo",
               "--image", scenes["png"], "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=subprocess_env())
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "ERROR: no query: give --query TEXT or --queries FILE"


def test_unknown_band_fails_that_image_only_and_warnings_reach_the_log(scene, tmp_path):
    from predict.cli.localise import main

    four_bands = np.concatenate([np.moveaxis(scene.rgb[:300, :400], -1, 0), scene.rgb[None, :300, :400, 1]])
    write_geotiff(tmp_path / "rgbn.tif", four_bands)
    cv2.imwrite(str(tmp_path / "rgb.png"), scene.rgb[:300, :400])
    (tmp_path / "queries.txt").write_text(f"\n{QUERIES[1]}\n")
    out = tmp_path / "out"
    rc = main(["--yaml_path", DEMO_YAML, "--device", "cpu", "--out", str(out), "--bands", "4,3,2",
               "--image", str(tmp_path / "rgb.png"), "--image", str(tmp_path / "rgbn.tif"), "--query", QUERIES[0],
               "--queries", str(tmp_path / "queries.txt")])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 1 and summary["errors"] == [f"{tmp_path / 'rgb.png'}: no band 4 (the file has 3 band(s), numbered from 1)"]
    assert [(r["files"]["probmap"], r["query"]) for r in summary["results"]] == [("rgbn_q0_probmap.tif", QUERIES[0]),
                                                                                  ("rgbn_q1_probmap.tif", QUERIES[1])]
    assert "smaller than step(s) [512, 768]" in (out / "log.txt").read_text()  # v1 keeps only the 256 tiles


def test_own_scenes_from_python_log_their_warnings_as_data_and_change_no_process_wide_state(scene, tmp_path):
    """A run of own scenes from Python, while other threads read rasters as the explorer does: the warnings
    of reading (four bands, none marked RGB) and scoring (scales skipped) reach the run's log, none goes
    through the warnings module (rasterio's NotGeoreferencedWarning for the PNG included), and the process
    is left as it was."""
    import logging
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from predict import load_encoder
    from predict.scenes.run import SceneConfig, localise_scenes

    from helpers import process_state

    write_geotiff(tmp_path / "rgbn.tif", np.concatenate([np.moveaxis(scene.rgb[:300, :400], -1, 0),
                                                         scene.rgb[None, :300, :400, 1]]), photometric="MINISBLACK")
    cv2.imwrite(str(tmp_path / "plain.png"), scene.rgb[:300, :400])
    lines = []
    logger = logging.getLogger("test.own_scenes")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((record.levelname, record.getMessage()))
    logger.addHandler(handler)
    encoder = load_encoder(DEMO_YAML, device="cpu")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = process_state()
            with ThreadPoolExecutor(4) as pool:
                reads = [pool.submit(read_raster, tmp_path / "plain.png", notes=[]) for _ in range(16)]
                run = localise_scenes([str(tmp_path / "rgbn.tif"), str(tmp_path / "plain.png")], QUERIES[:1], encoder,
                                      SceneConfig(out_dir=str(tmp_path / "out")), logger)
                assert all(read.result().transform.is_identity for read in reads)
            after = process_state()
    finally:
        logger.removeHandler(handler)
    assert not run.errors and len(run.results) == 2
    warned = [message for level, message in lines if level == "WARNING"]
    assert f"{tmp_path / 'rgbn.tif'}: 4 bands and none marked red, green and blue; bands 1, 2, 3 read as red, green, blue" \
           " (choose others with --bands, e.g. --bands 3,2,1 for blue-green-red-NIR order)" in warned
    assert sum("smaller than step(s) [512, 768]" in message for message in warned) == 2  # each image, its one query
    assert [str(w.message) for w in caught] == []
    assert after == before


def test_an_external_mask_added_beside_a_scene_is_a_new_scene(scene, tmp_path):
    """A mask in a sidecar file (``scene.tif.msk``) changes the pixels scored: a rerun into the same folder,
    whose tile vectors were kept, gives what a fresh run gives."""
    from predict import load_encoder
    from predict.scenes.run import SceneConfig, localise_scenes

    path = tmp_path / "masked.tif"
    write_geotiff(path, np.moveaxis(scene.rgb[:600, :700], -1, 0))
    encoder = load_encoder(DEMO_YAML, device="cpu")

    def run(out):
        outcome = localise_scenes([str(path)], QUERIES[:1], encoder, SceneConfig(out_dir=str(tmp_path / out)))
        assert not outcome.errors
        with rasterio.open(tmp_path / out / "masked_q0_probmap.tif") as src:
            return outcome.results[0], src.read(1)

    before, _ = run("rerun")
    mask = np.full((600, 700), 255, np.uint8)
    mask[:, :350] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    assert (tmp_path / "masked.tif.msk").is_file()
    (rerun, rerun_map), (fresh, fresh_map) = run("rerun"), run("fresh")
    assert rerun["tiles_encoded"] == fresh["tiles_encoded"] > 0
    assert rerun["scene_score"] == fresh["scene_score"] != before["scene_score"]
    assert np.array_equal(rerun_map, fresh_map) and not rerun_map[:, :350].any()


@pytest.mark.parametrize("args, message", [(["--bands", "4,x"], "argument --bands: expected band numbers"),
                                           (["--stretch", "98,2"], "argument --stretch: percentiles must satisfy"),
                                           (["--regions", "1.5"], "argument --regions: expected a quantile"),
                                           (["--step", "256_-5"], "argument --step: expected positive integers")])
def test_bad_arguments_are_one_line_and_exit_2(scenes, tmp_path, capsys, args, message):
    from predict.cli.localise import main

    with pytest.raises(SystemExit) as stop:
        main(["--yaml_path", DEMO_YAML, "--image", scenes["png"], "--query", "a lake.", "--out", str(tmp_path), *args])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and error.count("\n") == 1


def test_output_folder_that_is_a_file_is_one_line_and_exit_2(scenes, tmp_path, capsys):
    from predict.cli.localise import main

    (tmp_path / "out").write_text("")
    rc = main(["--yaml_path", DEMO_YAML, "--image", scenes["png"], "--query", "a lake.", "--out", str(tmp_path / "out")])
    assert rc == 2 and capsys.readouterr().err == f"error: {tmp_path / 'out'}: output folder is a file\n"


def test_scene_score_is_in_the_summary_and_every_outputs_metadata(run, scenes):
    _, out, summary = run
    # the PNG's score for the first query, recomputed pixel by pixel: the maximum over pixels of the mean of
    # the raw scores of the tiles covering each pixel
    from predict import load_encoder
    from predict.core import tiling
    from predict.core.pipelines import PIPELINES
    from predict.encoders.base import similarities
    from predict.localisation.maps import query_vector
    from predict.localisation.timing import StageTimer
    from predict.localisation.vectors import TileVectorStore

    encoder = load_encoder(DEMO_YAML, device="cpu")
    pixels = read_raster(scenes["png"]).pixels
    height, width = pixels.shape[:2]
    tiles = PIPELINES["v1"].first_stage_tiles(height, width)
    raw = similarities(encoder, TileVectorStore(encoder).vectors(pixels, tiles, StageTimer()),
                       query_vector(encoder, QUERIES[0]))
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for tile, score in zip(tiles, raw):
        r0, r1, c0, c1 = tiling.effective_box(tile, height, width)
        total[r0:r1, c0:c1] += score
        count[r0:r1, c0:c1] += 1
    (png,) = [e for e in summary["results"] if e["image"] == scenes["png"] and e["query"] == QUERIES[0]]
    assert png["scene_score"] == pytest.approx(float((total / count).max()), rel=1e-9)
    for entry in summary["results"]:
        score = entry["scene_score"]
        assert isinstance(score, float) and np.isfinite(score)
        with rasterio.open(out / entry["files"]["probmap"]) as src:
            tags = src.tags()
        assert float(tags["scene_score"]) == score and tags["query"] == entry["query"]
        assert tags["encoder_identity"] == entry["encoder_identity"] and tags["image_digest"] == entry["image_digest"]
        for kind in ("peaks", "regions"):
            for feature in json.loads((out / entry["files"][kind]).read_text())["features"]:
                assert feature["properties"]["scene_score"] == score and feature["properties"]["query"] == entry["query"]
    by_query = [result(summary, "scene8", k)["scene_score"] for k in (0, 1)]
    assert by_query[0] != by_query[1]  # raw scores: comparable across the queries of one image


def test_mask_is_the_probmap_above_its_quantile(run):
    _, out, _ = run
    with rasterio.open(out / "scene8_q0_mask.tif") as mask_file, rasterio.open(out / "scene8_q0_probmap.tif") as map_file:
        mask, probmap = mask_file.read(1), map_file.read(1)
        assert mask_file.crs == map_file.crs and mask_file.transform == map_file.transform
    threshold = round(float(json.loads((out / "scene8_q0_regions.geojson").read_text())["features"][0]["properties"]["threshold"]) * 255)
    assert np.array_equal(mask == 1, probmap > threshold)


def test_all_peaks_is_one_layer_of_every_peak_of_every_image_and_query(run):
    _, out, _ = run
    summary = json.loads((out / "summary.json").read_text())  # as it is now: another test may have added a run
    layer = json.loads((out / "all_peaks.geojson").read_text())["features"]
    expected = [f for entry in summary["results"] for f in json.loads((out / entry["files"]["peaks"]).read_text())["features"]]
    assert layer == expected and len(summary["results"]) >= 8
    assert len({(f["properties"]["image"], f["properties"]["query"]) for f in layer}) == len(summary["results"])


def small_png(scene, folder, name="small.png", side=(600, 700)):
    path = folder / name
    cv2.imwrite(str(path), cv2.cvtColor(scene.rgb[:side[0], :side[1]], cv2.COLOR_RGB2BGR))
    return path


def test_a_second_run_into_the_same_folder_stops_at_once_with_one_line(scene, tmp_path, capsys):
    from predict.cli.localise import main

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom predict.io.lock import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = main(["--yaml_path", DEMO_YAML, "--device", "cpu", "--image", str(small_png(scene, tmp_path)),
                   "--query", "a lake.", "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2 and capsys.readouterr().err == (f"error: {out}: another run (pid {holder.pid}) is writing this folder; "
                                                   "wait for it to finish or use another --out\n")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written, not even the log


def test_a_rerun_with_other_queries_leaves_no_output_the_summary_does_not_describe(scene, tmp_path):
    from predict.cli.localise import main

    image, out = small_png(scene, tmp_path), tmp_path / "out"
    first, second, third = "a dark green lake.", "some tennis courts.", "a gray parking lot."
    base = ["--yaml_path", DEMO_YAML, "--device", "cpu", "--image", str(image), "--out", str(out)]
    assert main(base + ["--query", first, "--query", second, "--regions", "0.9"]) == 0
    assert main(base + ["--query", third, "--query", first]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["queries"] == [first, second, third] and len(summary["runs"]) == 2
    assert [(r["k"], r["query"]) for r in summary["results"]] == [(1, second), (2, third), (0, first)]
    for entry in summary["results"]:  # each file says what the summary says it is
        with rasterio.open(out / entry["files"]["probmap"]) as src:
            assert src.tags()["query"] == entry["query"] and entry["files"]["probmap"] == f"small_q{entry['k']}_probmap.tif"
    listed = {name for entry in summary["results"] for name in entry["files"].values()}
    assert {p.name for p in out.iterdir()} == listed | {"summary.json", ".summary.json.selo", "all_peaks.geojson", "log.txt", "tile_vectors", ".lock"}
    assert "small_q1_regions.geojson" in listed and "small_q0_regions.geojson" not in listed  # the rerun had no --regions


def test_a_queries_file_with_a_byte_order_mark_keeps_it_out_of_the_query(scene, tmp_path):
    from predict.cli.localise import main

    queries = tmp_path / "queries.txt"
    queries.write_bytes("a dark green lake.\nsome tennis courts.\n".encode("utf-8-sig"))
    out = tmp_path / "out"
    assert main(["--yaml_path", DEMO_YAML, "--device", "cpu", "--image", str(small_png(scene, tmp_path)),
                 "--queries", str(queries), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["queries"] == ["a dark green lake.", "some tennis courts."]


def test_images_too_small_to_compare_tiles_are_one_line_each(scene, tmp_path):
    from predict.cli.localise import main

    tiny, one_tile = small_png(scene, tmp_path, "tiny.png", (200, 300)), small_png(scene, tmp_path, "one.png", (256, 256))
    out = tmp_path / "out"
    rc = main(["--yaml_path", DEMO_YAML, "--device", "cpu", "--image", str(tiny), "--image", str(one_tile),
               "--query", "a lake.", "--query", "some tennis courts.", "--out", str(out)])
    errors = json.loads((out / "summary.json").read_text())["errors"]
    assert rc == 1 and errors == [
        f"{tiny}: 300 x 200 pixels is smaller than the smallest tile (256 px); "
        "the v1 pipeline needs at least 256 px on each side",
        f"{one_tile}: 256 x 256 pixels hold a single 256 px tile: nothing to compare "
        "(the map would be flat); the image must be larger than 256 px in one direction"]


def test_v2_reuses_its_first_stage_and_counts_its_refinement_boxes_apart(scene, tmp_path):
    from predict import load_encoder
    from predict.core.pipelines import PIPELINES
    from predict.localisation.maps import load_image, score_tiles
    from predict.localisation.vectors import TileVectorStore
    from predict.scenes.run import SceneConfig, localise_scenes

    image = small_png(scene, tmp_path, side=(700, 1100))
    queries = ["a dark green lake.", "some tennis courts."]
    encoder = load_encoder(DEMO_YAML, device="cpu")
    run = localise_scenes([str(image)], queries, encoder,
                          SceneConfig(out_dir=str(tmp_path / "out"), pipeline=PIPELINES["v2"]))
    first, second = run.results
    stage1 = set(PIPELINES["v2"].first_stage_tiles(700, 1100))
    assert (first["tiles_encoded"], second["tiles_encoded"]) == (len(stage1), 0)
    # each query's refinement boxes, found apart: the second query encodes only the boxes the first did not
    boxes = [set(score_tiles(load_image(str(image)), query, encoder, PIPELINES["v2"], TileVectorStore(encoder))[0])
             - stage1 for query in queries]
    assert boxes[0] and (first["boxes_encoded"], second["boxes_encoded"]) == (len(boxes[0]), len(boxes[1] - boxes[0]))
    assert run.vectors.tiles_encoded == sum(r["tiles_encoded"] + r["boxes_encoded"] for r in run.results)


def test_a_folder_of_the_earlier_summary_format_is_continued_with_its_numbers(scene, tmp_path):
    from predict.cli.localise import main

    out = tmp_path / "out"
    out.mkdir()
    earlier = {"image": "old.tif", "query": "a dark green lake.", "probmap": "old_q1_probmap.tif",
               "overlay": "old_q1_overlay.jpg", "peaks": "old_q1_peaks.geojson", "tiles_encoded": 5, "seconds": 1.0}
    (out / "summary.json").write_text(json.dumps({"results": [earlier], "errors": []}))
    (out / "old_q1_peaks.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    for name in ("old_q1_probmap.tif", "old_q1_overlay.jpg"):  # adopted as they are: the older version kept no digest
        (out / name).write_bytes(b"earlier output")
    assert main(["--yaml_path", DEMO_YAML, "--device", "cpu", "--image", str(small_png(scene, tmp_path)),
                 "--query", "some tennis courts.", "--query", "a dark green lake.", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["queries"] == ["", "a dark green lake.", "some tennis courts."]
    assert [(r["image"].rsplit("/", 1)[-1], r["k"]) for r in summary["results"]] == [("old.tif", 1), ("small.png", 2),
                                                                                     ("small.png", 1)]


def test_a_summary_that_cannot_be_continued_stops_the_run_with_one_line(scenes, tmp_path, capsys):
    from predict.cli.localise import main

    (tmp_path / "summary.json").write_text("{not json")
    rc = main(["--yaml_path", DEMO_YAML, "--image", scenes["png"], "--query", "a lake.", "--out", str(tmp_path)])
    assert rc == 2
    assert capsys.readouterr().err.startswith(f"ERROR: {tmp_path / 'summary.json'}: not a summary selo-localise can continue")
