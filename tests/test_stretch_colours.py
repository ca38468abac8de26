"""The stretch keeps a scene's colours: each synthetic scene stored as 8-bit, as 12-bit in uint16, as float32
reflectance and as 4-band blue-green-red-NIR read with ``--bands 3,2,1`` gives a map whose top peak lies
in the same object. The default stretch maps all bands with one range; a per-band stretch (the earlier
default) shifts them: the dark green lake turns grey, and both objects are lost.
"""
import cv2
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from evaluations.metrics import attention_centres
from predict.core.pipelines import PIPELINES
from predict.core.stretch import Stretch
from predict.demo.synthetic import generate_scene
from predict.io.raster import read_raster
from predict.localisation.maps import score_tiles
from predict.localisation.vectors import TileVectorStore
from predict.scenes.run import raster_probmap

SIDE = 1500
# (scene seed, object kind, query): scenes whose 8-bit form has its top peak in that object
CASES = [([17, 7], "lake", "a dark green lake"),
         ([4, 7], "football_field", "a green football field surrounded by a red track")]
FORMS = ("8-bit", "12-bit in uint16", "float32", "4-band BGRN, --bands 3,2,1")


def stored_forms(rgb: np.ndarray) -> dict[str, tuple[np.ndarray, tuple | None]]:
    """The scene's RGB ``(H, W, 3)`` uint8 as band-first arrays of each form, with the bands to read."""
    first = np.moveaxis(rgb, -1, 0)
    twelve_bit = first.astype(np.uint16) * 16 + np.random.default_rng(0).integers(0, 16, first.shape, dtype=np.uint16)
    near_infrared = np.clip(first[1].astype(np.uint16) * 16 + 600, 0, 4095)[None]
    return {"8-bit": (first, None), "12-bit in uint16": (twelve_bit, None),
            "float32": (first.astype(np.float32) / 255 * 0.4, None),
            "4-band BGRN, --bands 3,2,1": (np.concatenate([twelve_bit[::-1], near_infrared]), (3, 2, 1))}


@pytest.fixture(scope="module")
def encoder():
    from predict import load_encoder

    return load_encoder("demo", device="cpu")


@pytest.fixture(scope="module", params=CASES, ids=[kind for _, kind, _ in CASES])
def case(request, tmp_path_factory):
    seed, kind, query = request.param
    scene = generate_scene(seed, SIDE, SIDE)
    folder = tmp_path_factory.mktemp("forms")
    paths = {}
    for form, (bands, chosen) in stored_forms(scene.rgb).items():
        paths[form] = (folder / f"{len(paths)}.tif", chosen)
        with rasterio.open(paths[form][0], "w", driver="GTiff", width=SIDE, height=SIDE, count=len(bands),
                           dtype=bands.dtype, crs="EPSG:32633", transform=from_origin(5e5, 5e6, 0.5, 0.5)) as dst:
            dst.write(bands)
    polygon = next(o.polygon for o in scene.objects if o.kind == kind).astype(np.float32)
    return paths, polygon, query


def top_peak_inside(path, bands, stretch, polygon, query, encoder) -> bool:
    raster = read_raster(path, bands, stretch)
    spec = PIPELINES["v1"]
    tiles, scores = score_tiles(raster.loaded(), query, encoder, spec, TileVectorStore(encoder), name=str(path))
    x, y = attention_centres(raster_probmap(raster, tiles, scores, spec, str(path)))[0]
    return cv2.pointPolygonTest(polygon, (float(x), float(y)), False) >= 0


@pytest.mark.parametrize("form", FORMS)
def test_every_stored_form_finds_the_object_the_8_bit_scene_finds(case, encoder, form):
    paths, polygon, query = case
    path, bands = paths[form]
    assert top_peak_inside(path, bands, Stretch(), polygon, query, encoder)


def test_a_per_band_stretch_shifts_the_colours_and_loses_the_object(case, encoder):
    paths, polygon, query = case
    path, bands = paths["12-bit in uint16"]
    assert not top_peak_inside(path, bands, Stretch(per_band=True), polygon, query, encoder)
