"""The synthetic SLM-style testset: deterministic, in the real schema, polygons on the objects they name."""
import hashlib
import json

import cv2
import numpy as np
import pytest

from predict.demo.make_testset import TRAIN_SEED, slm_layout, write_testset
from predict.demo.make_testset import main as make_testset_main
from predict.demo.synthetic import KINDS, LABELS, generate_scene, scene_samples
from predict.encoders.demo_text import caption_vocabulary, tokenize
from predict.io.annotations import load_annotations
from predict.io.images import read_image

SMALL_LAYOUT = [(1100, 1400, 2), (1300, 1000, 3)]
SEEDS = [[5, 0], [5, 1], [6, 0], [6, 1]]


def file_sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed, 2300, 2600) for seed in SEEDS]


def polygon_mask(shape, polygons):
    mask = np.zeros(shape, np.uint8)
    for polygon in polygons:  # one call per polygon: the union, whatever the evaluator's fillPoly quirk
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def test_same_seed_same_bytes(tmp_path):
    write_testset(str(tmp_path / "a"), 3, SMALL_LAYOUT)
    write_testset(str(tmp_path / "b"), 3, SMALL_LAYOUT)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["annotations/anno.json", "imgs/0.jpg", "imgs/1.jpg"]
    for f in files:
        assert file_sha(tmp_path / "a" / f) == file_sha(tmp_path / "b" / f), f


def test_other_seed_other_scene():
    a, b = generate_scene([1, 0], 800, 900), generate_scene([2, 0], 800, 900)
    assert a.rgb.shape == b.rgb.shape == (800, 900, 3) and a.rgb.dtype == np.uint8
    assert not np.array_equal(a.rgb, b.rgb)


def test_testset_in_the_real_schema(tmp_path):
    assert make_testset_main(["--out", str(tmp_path), "--seed", "4", "--scenes", "1"]) == 0
    raw = json.loads((tmp_path / "annotations" / "anno.json").read_text())
    assert all(set(item) == {"caption", "jpg_name", "points"} for item in raw)
    samples = load_annotations(str(tmp_path / "annotations" / "anno.json"))
    assert len(samples) >= 2  # several captions per image, like the real set
    image = read_image(str(tmp_path / "imgs" / samples[0].jpg_name))
    height, width = image.shape[:2]
    assert 2000 <= height <= 3000 and 2000 <= width <= 3000
    vocabulary = set(caption_vocabulary())
    for sample in samples:
        assert set(tokenize(sample.caption)) <= vocabulary, sample.caption
        for polygon in sample.polygons:
            xy = np.array(polygon, dtype=float)
            assert xy.shape[0] >= 3 and xy.shape[1] == 2
            assert xy[:, 0].min() >= 0 and xy[:, 0].max() < width and xy[:, 1].min() >= 0 and xy[:, 1].max() < height


def test_training_seed_refused(tmp_path):
    with pytest.raises(SystemExit):
        make_testset_main(["--out", str(tmp_path), "--seed", str(TRAIN_SEED)])


def test_like_slm_layout_matches_the_real_testset():
    layout = slm_layout(np.random.default_rng(0))
    assert len(layout) == 22
    assert sum(captions for _, _, captions in layout) == 59
    assert (10001, 10000) in [(h, w) for h, w, _ in layout]
    assert sum(6900 <= h <= 7100 and 7900 <= w <= 8100 for h, w, _ in layout) == 1
    assert sum(2200 <= h <= 2400 and 2900 <= w <= 3100 for h, w, _ in layout) == 20


def test_every_kind_appears(scenes):
    seen = {o.kind for s in scenes for o in s.objects}
    more = {o.kind for seed in range(7, 12) for o in generate_scene([seed, 0], 2300, 2600).objects}
    assert seen | more == set(KINDS)


def test_polygons_lie_on_the_objects_they_name(scenes):
    # The label mask records which kind painted each pixel; the annotations only carry polygons.
    # Sparse kinds (ships on water, a bridge across a river) paint a smaller part of their polygon.
    least_painted = {"ships": 0.08, "bridge": 0.1, "airport": 0.5}
    for scene in scenes:
        for kind in {o.kind for o in scene.objects}:
            polygons = [o.polygon for o in scene.objects if o.kind == kind]
            inside = polygon_mask(scene.labels.shape, polygons)
            painted = scene.labels == LABELS[kind]
            assert painted[inside].mean() >= least_painted.get(kind, 0.6), kind
            assert inside[painted].mean() >= 0.97, kind  # nothing of that kind outside its polygons


def test_samples_refer_to_every_instance_of_their_kind(scenes):
    rng = np.random.default_rng(0)
    for scene in scenes:
        for sample in scene_samples(rng, scene, 3):
            polygon_centres = sorted(tuple(np.round(p.mean(0))) for p in sample.polygons)
            kinds = {o.kind for o in scene.objects
                     if tuple(np.round(o.polygon.mean(0))) in polygon_centres}
            assert len(kinds) == 1
            assert len(sample.polygons) == sum(o.kind in kinds for o in scene.objects)


def test_colours_inside_polygons(scenes):
    # Signature colours of two kinds, measured on the pixels: a red running track, white tanks.
    def fraction(rgb, mask, test):
        pixels = rgb[mask].astype(int)
        return test(pixels[:, 0], pixels[:, 1], pixels[:, 2]).mean() if len(pixels) else 0.0

    red = lambda r, g, b: (r > 150) & (g < 110) & (b < 100)  # noqa: E731
    white = lambda r, g, b: (r > 225) & (g > 225) & (b > 220)  # noqa: E731
    checked = 0
    for scene in scenes:
        for obj in scene.objects:
            if obj.kind in ("football_field", "oil_tanks"):
                test = red if obj.kind == "football_field" else white
                inside = polygon_mask(scene.labels.shape, [obj.polygon])
                assert fraction(scene.rgb, inside, test) > 0.1, obj.kind
                assert fraction(scene.rgb, scene.labels > LABELS["bare_land"], test) < 0.01  # not in backgrounds
                checked += 1
    assert checked >= 2
