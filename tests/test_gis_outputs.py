"""Own-scene outputs as a GIS opens them (``predict.io.raster``): georeferencing carried from every form a
file can hold it in (CRS + transform, transform alone, world file, GCPs), valid Cloud Optimized GeoTIFFs
(``rio cogeo validate --strict``), the colour table, band description and metadata of the maps, the
overlay's world file and ``.aux.xml``, RFC 7946 polygons (checked with geojson-pydantic and shapely) in
pixel space, UTM, across the antimeridian and around the south pole, the colour-keeping stretch, and the
warnings of ambiguous inputs. No encoder: maps are drawn by the tests.
"""
import warnings

import cv2
import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
import shapely.geometry
import tifffile
from affine import Affine
from geojson_pydantic import FeatureCollection
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from predict.core.heatmap import colour_heatmap
from predict.core.stretch import Stretch, percentile_stretch
from predict.io.maps import write_jpeg
from predict.io.raster import (RasterImage, georeference_sidecars, peaks_feature_collection, pixel_coordinates,
                               read_raster, regions_feature_collection, write_mask_tif, write_probmap_tif)

UTM33 = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)
SIDE = 600  # larger than a COG tile (256) twice over: the maps get overviews
TAGS = {"query": "a dark green lake", "encoder": "demo", "encoder_identity": "ab" * 32, "pipeline": "v1",
        "steps": [256, 512, 768], "scene_score": 0.25}


def blob_map(height=SIDE, width=SIDE, centre=None, radius=None):
    """uint8 map: 0, and 200 on a ring (a disc of ``radius`` around ``centre`` without its middle third),
    so that the map above its 0.9 quantile (or any quantile below the ring's share) is one polygon with a
    hole; the ring is brighter towards the right, so that it has a single top peak."""
    rows, cols = np.mgrid[:height, :width]
    cy, cx = centre or (height / 2, width / 2)
    radius = radius or min(height, width) / 6
    distance = np.hypot(rows - cy, cols - cx)
    ring = (distance < radius) & (distance >= radius / 3)
    return np.where(ring, 200 + 50 * cols / width, 0).astype(np.uint8)


def raster_of(crs=None, transform=Affine.identity(), gcps=(), height=SIDE, width=SIDE, valid=None):
    return RasterImage("scene.tif", np.zeros((height, width, 3), np.uint8), valid, crs and CRS.from_user_input(crs),
                       transform, "key", tuple(gcps), "0" * 64)


def gcps_of(transform, height, width):
    """Four GCPs at the image's corners, placed by ``transform`` (so that they define it exactly)."""
    corners = [(0, 0), (0, width), (height, 0), (height, width)]
    return [GroundControlPoint(row, col, *(transform @ (col, row)), id=str(i)) for i, (row, col) in enumerate(corners)]


@pytest.fixture
def georeferenced_inputs(tmp_path):
    """The same 8-bit image georeferenced five ways; ``{kind: (path, expected coordinate system)}``."""
    rgb = np.random.default_rng(0).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
    first = np.moveaxis(rgb, -1, 0)
    profile = dict(driver="GTiff", width=SIDE, height=SIDE, count=3, dtype="uint8")
    inputs = {}
    for kind, extra, system in (("crs", dict(crs=UTM33, transform=TRANSFORM), "wgs84"),
                                ("transform", dict(transform=TRANSFORM), "map"),
                                ("gcps", dict(gcps=gcps_of(TRANSFORM, SIDE, SIDE), crs=UTM33), "wgs84")):
        path = tmp_path / f"{kind}.tif"
        with rasterio.open(path, "w", **profile, **extra) as dst:
            dst.write(first)
        inputs[kind] = (path, system)
    for ext, world in (("png", "pgw"), ("jpg", "jgw")):
        path = tmp_path / f"world.{ext}"
        cv2.imwrite(str(path), rgb)
        c, a, b, f, d, e = TRANSFORM.c, TRANSFORM.a, TRANSFORM.b, TRANSFORM.f, TRANSFORM.d, TRANSFORM.e
        (tmp_path / f"world.{world}").write_text(f"{a}\n{d}\n{b}\n{e}\n{c + a / 2}\n{f + e / 2}\n")  # pixel centre
        inputs[f"{ext}+{world}"] = (path, "map")
    return inputs


@pytest.mark.parametrize("kind", ["crs", "transform", "gcps", "png+pgw", "jpg+jgw"])
def test_every_form_of_georeferencing_reaches_the_map_and_the_peaks(georeferenced_inputs, tmp_path, kind):
    path, system = georeferenced_inputs[kind]
    raster = read_raster(path)
    assert raster.coordinate_system == system
    probmap = blob_map()
    out = tmp_path / "map.tif"
    write_probmap_tif(out, probmap, raster, tags=TAGS)
    with rasterio.open(out) as src:
        if kind == "gcps":
            gcps, crs = src.gcps
            assert crs == CRS.from_string(UTM33) and [(g.row, g.col, g.x, g.y) for g in gcps] == \
                [(g.row, g.col, g.x, g.y) for g in gcps_of(TRANSFORM, SIDE, SIDE)]
        else:
            assert src.transform == TRANSFORM and src.crs == (CRS.from_string(UTM33) if kind == "crs" else None)
    peak = peaks_feature_collection(probmap, raster, TAGS)["features"][0]
    col, row = peak["properties"]["col"], peak["properties"]["row"]
    x, y = TRANSFORM @ (col + 0.5, row + 0.5)  # the pixel's centre
    if system == "wgs84":
        (x,), (y,) = rasterio.warp.transform(UTM33, "EPSG:4326", [x], [y])
    assert peak["geometry"]["coordinates"] == pytest.approx([x, y], abs=6e-8)
    assert peak["properties"]["coordinate_system"] == system and peak["properties"]["query"] == TAGS["query"]


def test_pixel_space_points_are_pixel_centres():
    assert pixel_coordinates(raster_of(), [0, 3], [0, 7]) == [[0.5, 0.5], [3.5, 7.5]]


def test_probmap_is_a_strict_cog_with_overviews_mask_colours_description_and_tags(tmp_path):
    valid = np.ones((SIDE, SIDE), bool)
    valid[:, :100] = False
    raster = raster_of(UTM33, TRANSFORM, valid=valid)
    out = tmp_path / "map.tif"
    write_probmap_tif(out, blob_map(), raster, tags=TAGS)
    is_valid, errors, warnings = cog_validate(out, strict=True, quiet=True)
    assert is_valid and not errors and not warnings
    with rasterio.open(out) as src:
        assert src.overviews(1) == [2, 4] and src.block_shapes == [(256, 256)]
        assert src.colorinterp == (ColorInterp.palette,)
        jet = colour_heatmap(np.arange(256, dtype=np.uint8)[None])[0, :, ::-1]  # the overlay's colours, RGB
        assert all(src.colormap(1)[v][:3] == tuple(jet[v]) for v in (0, 128, 255))
        assert src.descriptions == (f"probability (0-255) of: {TAGS['query']}",)
        tags = src.tags()
        assert tags["query"] == TAGS["query"] and tags["steps"] == "256,512,768" and float(tags["scene_score"]) == 0.25
        assert not src.dataset_mask()[:, :100].any() and src.dataset_mask()[:, 100:].all()
        overview_mask = src.dataset_mask(out_shape=(SIDE // 4, SIDE // 4))  # the mask has overviews too
        assert not overview_mask[:, :24].any() and overview_mask[:, 26:].all()


def test_mask_is_the_map_above_its_quantile_as_a_strict_cog(tmp_path):
    raster = raster_of(UTM33, TRANSFORM)
    probmap = blob_map()
    out = tmp_path / "mask.tif"
    threshold = write_mask_tif(out, probmap, raster, 0.9, tags=TAGS)
    assert cog_validate(out, strict=True, quiet=True)[0]
    with rasterio.open(out) as src:
        mask = src.read(1)
        assert src.transform == TRANSFORM and src.tags()["mask_quantile"] == "0.9"
    assert set(np.unique(mask)) == {0, 1} and np.array_equal(mask == 1, probmap > threshold)
    assert np.mean(mask) <= 0.1 < np.mean(probmap >= threshold)


@pytest.mark.parametrize("kind", ["crs", "gcps", "transform"])
def test_overlay_jpeg_is_georeferenced_by_its_world_file_and_aux_xml(tmp_path, kind):
    gcps = gcps_of(TRANSFORM, SIDE, SIDE) if kind == "gcps" else ()
    transform = Affine.identity() if kind == "gcps" else TRANSFORM
    raster = raster_of(None if kind == "transform" else UTM33, transform, gcps)
    path = str(tmp_path / "overlay.jpg")
    write_jpeg(path, np.zeros((SIDE, SIDE, 3), np.uint8))
    written = georeference_sidecars(path, raster, TAGS)
    assert ("world_file" in written) == (kind != "gcps")
    with rasterio.open(path) as src:
        assert src.crs == (CRS.from_string(UTM33) if kind == "crs" else None)
        if kind == "gcps":
            assert [(g.x, g.y) for g in src.gcps[0]] == [(g.x, g.y) for g in gcps] and src.gcps[1] == UTM33
        else:
            assert src.transform.almost_equals(TRANSFORM)
        assert src.tags()["query"] == TAGS["query"]


def assert_rfc7946(collection):
    """Valid GeoJSON (geojson-pydantic) whose polygons' exterior rings are counter-clockwise and holes
    clockwise (shapely), coordinates to at most 7 decimals; returns the shapely geometries."""
    FeatureCollection.model_validate(collection)
    geometries = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    for geometry in geometries:
        for polygon in getattr(geometry, "geoms", [geometry]):
            assert polygon.exterior.is_ccw and not any(ring.is_ccw for ring in polygon.interiors)
    coordinates = np.concatenate([shapely.get_coordinates(g) for g in geometries])
    assert np.array_equal(coordinates, np.round(coordinates, 7))
    return geometries


def test_pixel_space_regions_are_counter_clockwise_with_clockwise_holes():
    (ring,) = assert_rfc7946(regions_feature_collection(blob_map(), raster_of(), 0.9, TAGS))
    assert len(ring.interiors) == 1 and ring.bounds[0] >= SIDE / 4 - 1  # pixel edges, y down


def test_utm_regions_are_wgs84_and_counter_clockwise():
    (ring,) = assert_rfc7946(regions_feature_collection(blob_map(), raster_of(UTM33, TRANSFORM), 0.9, TAGS))
    assert len(ring.interiors) == 1 and 14.9 < ring.bounds[0] < ring.bounds[2] < 15.1


def test_regions_across_the_antimeridian_are_cut_into_counter_clockwise_pieces():
    # UTM 60N (central meridian 177 E): 700-780 km east at 45 N spans 179.5 E to 180.5 E
    raster = raster_of("EPSG:32660", from_origin(700000.0, 5000000.0, 100.0, 100.0), width=800, height=400)
    ring, arc = (assert_rfc7946(regions_feature_collection(blob_map(400, 800, (200, 360), 150), raster, q))[0]
                 for q in (0.75, 0.9))  # the whole ring (with its hole), and its brighter right-hand part
    assert ring.geom_type == arc.geom_type == "MultiPolygon" and all(p.is_valid for p in (ring, arc))
    west, east = sorted(ring.geoms, key=lambda p: p.bounds[0])
    assert west.bounds[0] == -180 and -180 < west.bounds[2] < -179  # the piece east of the antimeridian
    assert 179 < east.bounds[0] < 180 == east.bounds[2]


def test_a_region_around_the_south_pole_is_a_counter_clockwise_cap():
    raster = raster_of("EPSG:3031", from_origin(-50000.0, 50000.0, 100.0, 100.0), width=1000, height=1000)
    probmap = np.zeros((1000, 1000), np.uint8)
    cv2.circle(probmap, (500, 500), 200, 255, -1)
    (cap,) = assert_rfc7946(regions_feature_collection(probmap, raster, 0.5))
    assert cap.bounds[0] == -180 and cap.bounds[2] == 180 and cap.bounds[1] == -90


def four_band_file(path, bands_first, colorinterp=None):
    with rasterio.open(path, "w", driver="GTiff", width=bands_first.shape[2], height=bands_first.shape[1], count=4,
                       dtype=bands_first.dtype, photometric="MINISBLACK") as dst:
        dst.write(bands_first)
        if colorinterp:
            dst.colorinterp = colorinterp


def test_more_than_three_bands_without_rgb_warn_which_bands_are_used(tmp_path):
    bands = np.random.default_rng(2).integers(0, 255, (4, 32, 48), dtype=np.uint8)
    plain, marked = tmp_path / "bgrn.tif", tmp_path / "rgbn.tif"
    four_band_file(plain, bands)
    four_band_file(marked, bands, [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined])
    with pytest.warns(UserWarning, match=r"bgrn.tif: 4 bands and none marked red, green and blue; bands 1, 2, 3"):
        read_raster(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no warning: the bands are chosen, or marked RGB
        read_raster(plain, bands=(3, 2, 1))
        assert np.array_equal(read_raster(marked).pixels, np.moveaxis(bands[2::-1], 0, -1))


def test_a_multi_page_tiff_is_read_from_its_first_page_with_a_warning(tmp_path):
    pages = np.random.default_rng(3).integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    path = tmp_path / "two_pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, photometric="rgb")
    with pytest.warns(UserWarning, match=r"two_pages.tif: TIFF of 2 pages; reading the first page only"):
        raster = read_raster(path)
    assert np.array_equal(raster.pixels, pages[0][:, :, ::-1])


def test_joint_stretch_keeps_the_colour_balance_per_band_does_not():
    rgb = np.random.default_rng(4).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    rgb[..., 0] //= 3  # a scene with little red
    twelve_bit = rgb.astype(np.uint16) * 16
    joint, per_band = Stretch(0, 100)(twelve_bit), Stretch(0, 100, per_band=True)(twelve_bit)
    assert np.abs(joint.astype(int) - rgb).max() <= 1  # one linear map for all bands: the 8-bit scene
    assert per_band[..., 0].max() == 255 > rgb[..., 0].max() + 100  # red stretched alone: colours shifted
    assert np.array_equal(per_band, percentile_stretch(twelve_bit, 0, 100))
