"""The Python API: the original evaluator's SLM methods one by one, ``evaluations.evaluate`` and
``predict.localise`` (the same map as ``selo-generate``, tile vectors reused across calls)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluations import evaluate
from evaluations.metrics import EvaluationInputError, evaluate_gray
from evaluations.SLM import SLM
from evaluations.utils import ORIGINAL_KEYS
from predict import PIPELINES, load_encoder, localise
from predict.cli import generate
from predict.io import maps
from predict.io.jpeg import encode_jpeg
from predict.localisation.maps import default_store
from predict.localisation.vectors import TileVectorStore

from helpers import REPO_ROOT, red_square_scene, subprocess_env, write_testset, write_yaml

TOLERANCE = 1e-9


def same(value, expected) -> bool:
    """Equal to 1e-9, NaN equal to the reference's "nan"."""
    expected = float(expected)
    return math.isnan(expected) == math.isnan(value) and (math.isnan(expected) or abs(value - expected) <= TOLERANCE)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the case without polygons: Rda NaN, as the original
def test_slm_methods_match_the_original_on_every_reference_case(shared):
    folder = shared("reference", "evaluator")
    cases = json.loads((folder / "cases.json").read_text(encoding="utf-8"))["cases"]
    slm, problems = SLM(), []
    for case in cases:
        path, polygons, facts = str(folder / case["file"]), case["polygons"], case["facts"]
        prob = slm.read_gray_to_prob(path)
        assert prob.dtype == np.float64 and np.array_equal(prob, cv2.imread(path, cv2.IMREAD_GRAYSCALE) / 255.0)
        mask = slm.generate_mask_by_points(prob, polygons)
        assert mask.dtype == np.float64 and mask.shape == prob.shape and mask.sum() == facts["mask_area"]
        values = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for name, compute in (("Rsu", lambda: slm.rsu(prob, mask)),
                                  ("Ras", lambda: slm.ras(polygons, prob, visual=False)),
                                  ("Rda", lambda: slm.rda(polygons, prob))):
                expected = facts["metric_by_metric"][name]
                if isinstance(expected, dict):  # the original raised
                    with pytest.raises(EvaluationInputError):
                        compute()
                    continue
                values[name] = compute()
                if not same(values[name], expected):
                    problems.append(f"{case['id']} {name}: {values[name]!r} != {expected!r}")
        if case["expected"] is not None:
            rmi = slm.rmi(values["Rsu"], values["Rda"], values["Ras"])  # the original's argument order
            if not same(rmi, case["expected"]["Rmi"]):
                problems.append(f"{case['id']} Rmi: {rmi!r} != {case['expected']['Rmi']!r}")
    assert not problems, "\n".join(problems)


def blob_map(height=700, width=900, centre=(600, 250), radius=120):
    """uint8 gray map with one bright disc at ``centre`` (x, y) on a dim gradient, and a polygon around it."""
    gray = np.tile(np.linspace(0, 60, width, dtype=np.float64), (height, 1)).astype(np.uint8)
    cv2.circle(gray, centre, radius, 230, -1)
    x, y = centre
    polygon = [[x - 100, y - 90], [x + 110, y - 100], [x + 95, y + 105], [x - 90, y + 100]]
    return gray, polygon


def test_slm_methods_agree_with_metrics_without_shared_data(tmp_path):
    gray, polygon = blob_map()
    path = str(tmp_path / "probmap_0.png")
    cv2.imwrite(path, gray)
    slm = SLM()
    prob = slm.read_gray_to_prob(path)
    mask = slm.generate_mask_by_points(prob, [polygon])
    score = evaluate_gray(gray, [polygon])
    rsu, ras, rda = slm.rsu(prob, mask), slm.ras([polygon], prob, visual=False), slm.rda([polygon], prob)
    assert (rsu, ras, rda) == pytest.approx((score.rsu, score.ras, score.rda), abs=1e-12)
    assert slm.rmi(rsu, rda, ras) == pytest.approx(score.rmi, abs=1e-12)
    (x, y), = score.centers  # one centre, on the disc (the even 50x50 box filters move it by a few pixels)
    assert abs(x - 600) <= 3 and abs(y - 250) <= 3 and rda == 1.0
    # Hand-computed Rsu on a tiny map: P = 1 on 2 of 4 pixels, both in a mask of 2: L = 2 / 1e-7, R = 1.
    tiny = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert slm.rsu(tiny, np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(1.0)
    assert slm.rsu(tiny, np.array([[0.0, 0.0], [1.0, 1.0]])) == 0.0


def test_slm_ras_figure_and_visual_options(tmp_path, monkeypatch):
    gray, polygon = blob_map()
    probmap, addmap = tmp_path / "probmap_0.png", tmp_path / "addmap_0.jpg"
    cv2.imwrite(str(probmap), gray)
    cv2.imwrite(str(addmap), np.full(gray.shape + (3,), 255, np.uint8))
    monkeypatch.chdir(tmp_path)
    slm = SLM()
    prob = slm.read_gray_to_prob(str(probmap))
    slm.ras([polygon], prob, visual=False, src_img=str(addmap))
    assert not (tmp_path / "img_circle.jpg").exists()
    slm.ras([polygon], prob, visual=True, src_img=str(addmap))
    figure = cv2.imread(str(tmp_path / "img_circle.jpg"))
    assert figure.shape == gray.shape + (3,)
    (x, y), = evaluate_gray(gray, [polygon]).centers
    assert figure[y, x + 6].max() < 20  # centre 1: a dark circle of radius 6 around it
    assert figure[0, 0].min() > 240  # the white image elsewhere
    (tmp_path / "img_circle.jpg").unlink()
    assert slm.set_visual_options(visual_ras=True, src_addmap_path=str(addmap)) is True
    slm.evaluate(str(probmap), region_list=[polygon])
    assert (tmp_path / "img_circle.jpg").is_file()
    with pytest.raises(EvaluationInputError, match="missing.jpg"):
        slm.ras([polygon], prob, visual=True, src_img=str(tmp_path / "missing.jpg"))


def test_evaluate_gives_the_slm_numbers_for_an_array_and_a_file(shared, tmp_path):
    folder = shared("reference", "evaluator")
    cases = json.loads((folder / "cases.json").read_text(encoding="utf-8"))["cases"]
    slm = SLM()
    for case in cases[:6]:
        path = str(folder / case["file"])
        compat = slm.evaluate(path, region_list=case["polygons"])
        for probmap in (path, cv2.imread(path, cv2.IMREAD_GRAYSCALE)):
            result = evaluate(probmap, case["polygons"])
            for name, key in ORIGINAL_KEYS.items():
                assert result[name] == float(compat[key]), (case["id"], name)
            assert [list(c) for c in result["centers"]] == case["facts"]["prob_centers"]
            assert [list(c) for c in result["circles"]] == case["facts"]["ann_center_radius"]


def test_evaluate_without_shared_data_and_bad_input(tmp_path):
    gray, polygon = blob_map()
    result = evaluate(gray, [polygon])
    assert set(result) == {"Rsu", "Ras", "Rda", "Rmi", "centers", "circles"}
    assert len(result["centers"]) == 1 and result["Rda"] == 1.0
    with pytest.raises(EvaluationInputError, match="no annotation polygon"):
        evaluate(gray, [])
    with pytest.raises(EvaluationInputError, match="nothing.jpg: probability map not found"):
        evaluate(str(tmp_path / "nothing.jpg"), [polygon])
    with pytest.raises(EvaluationInputError, match="uint8"):
        evaluate(gray.astype(np.float32), [polygon])


@pytest.fixture(scope="module")
def toy_testset(tmp_path_factory):
    """One red-square sample, the toy encoder's yaml, and the map selo-generate saves per pipeline."""
    root = tmp_path_factory.mktemp("localise")
    imgs, anno = write_testset(root, n_samples=1)
    yaml_path = write_yaml(root)
    saved = {}
    original_write_probmap = maps.write_probmap
    for pipeline in ("v1", "v2"):
        def capture(cache_path, idx, probmap, pipeline=pipeline):
            saved[pipeline] = probmap.copy()
            return original_write_probmap(cache_path, idx, probmap)

        maps.write_probmap = capture
        try:
            code = generate.main(["--yaml_path", str(yaml_path), "--cache_path", str(root / pipeline),
                                  "--src_data_path", str(imgs), "--src_anno_path", str(anno),
                                  "--pipeline", pipeline, "--no_report", "--no_vector_cache"])
        finally:
            maps.write_probmap = original_write_probmap
        assert code == 0
    caption = json.loads(anno.read_text())[0]["caption"]
    return imgs / "scene.png", caption, yaml_path, saved


@pytest.mark.parametrize("pipeline", ["v1", "v2"])
def test_localise_returns_the_map_selo_generate_saves(toy_testset, pipeline):
    image_path, caption, yaml_path, saved = toy_testset
    encoder = load_encoder(yaml_path, device="cpu")
    steps = (256, 512, 768) if pipeline == "v1" else (512,)
    from_file = localise(image_path, caption, encoder, pipeline=pipeline, steps=steps, seed=0)
    assert from_file.dtype == np.uint8 and np.array_equal(from_file, saved[pipeline])
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(localise(rgb, caption, encoder, pipeline=pipeline, seed=0), saved[pipeline])


def test_localise_again_encodes_no_tile_and_takes_a_store(toy_testset):
    image_path, caption, yaml_path, _ = toy_testset
    encoder = load_encoder(yaml_path, device="cpu")
    calls = []
    encode = encoder.image_encoder
    encoder.image_encoder = lambda tiles: calls.append(len(tiles)) or encode(tiles)
    first = localise(image_path, caption, encoder)
    encoded = default_store(encoder).tiles_encoded
    assert encoded == len(PIPELINES["v1"].first_stage_tiles(900, 1200)) and sum(calls) == encoded
    calls.clear()
    assert np.array_equal(localise(image_path, "another query", encoder), first)  # the toy ignores the text
    assert calls == [] and default_store(encoder).tiles_encoded == encoded
    store = TileVectorStore(encoder)
    assert np.array_equal(localise(image_path, caption, encoder, vectors=store), first)
    assert store.tiles_encoded == encoded and default_store(encoder).tiles_encoded == encoded


def test_localise_finds_the_red_square(tmp_path):
    image, polygon = red_square_scene()
    encoder = load_encoder(write_yaml(tmp_path), device="cpu")
    probmap = localise(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), "a red building", encoder, steps="256_512")
    assert evaluate(probmap, [polygon])["Rmi"] > 0.6


def test_generate_selo_v2_takes_the_original_v2_arguments(tmp_path):
    # The original generate_selo_v2.py's arguments, nothing else: its v2 map comes out
    imgs, anno = write_testset(tmp_path, n_samples=1)
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "predict/generate_selo_v2.py"), "--yaml_path",
                           str(write_yaml(tmp_path)), "--cache_path", str(cache), "--src_data_path", str(imgs),
                           "--src_anno_path", str(anno)], env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Start split images with step 512" in (cache / "log.txt").read_text(encoding="utf-8")
    encoder = load_encoder(write_yaml(tmp_path), device="cpu")
    expected = localise(imgs / "scene.png", json.loads(anno.read_text())[0]["caption"], encoder, pipeline="v2")
    assert np.array_equal(cv2.imread(str(cache / "probmap_0.jpg"), cv2.IMREAD_GRAYSCALE),
                          cv2.imdecode(encode_jpeg(expected), cv2.IMREAD_GRAYSCALE))


@pytest.mark.parametrize("command", ["selo-generate", "selo-generate-v2", "selo-evaluate", "selo-check-encoder"])
def test_console_commands_are_installed(command):
    # `make setup` installs the package (pip install -e .), which creates these next to the interpreter
    path = Path(sys.executable).parent / command
    assert path.is_file(), f"{path} missing: reinstall with `pip install --no-deps --no-build-isolation -e .`"
    done = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {command}"), done.stderr
