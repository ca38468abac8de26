"""Trust by construction (issue 20): every stored result is keyed by everything that produced it, derived
in ``predict/provenance/``, and checked before reuse. One test per way a new user got a stale or wrong
number (W1, W8-W14); the explorer's (W2-W4), ``selo-localise``'s (W6) and decoding's (W7) are with their
commands' tests. ``test_differential.py`` proves the rule at large.
"""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from predict import provenance
from predict.cli.evaluate import main as evaluate_main
from predict.localisation.vectors import TileVectorStore, read_vectors
from predict.testset import engine
from predict.testset import evaluate as evaluation

from helpers import EditableTestset, red_square_scene, rewrite_keeping_size_and_mtime


@pytest.fixture(autouse=True)
def fresh_memo(tmp_path, monkeypatch):
    """A digest memo of this test's own; files are memoised as soon as they are hashed (no racy window),
    so that these tests exercise the stat-data rule itself."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(provenance.digests, "RACY_NS", 0)
    monkeypatch.setattr(provenance.digests, "DISK_MEMO_BYTES", 0)
    provenance.digests._memo.clear()


@pytest.fixture
def testset(tmp_path, importable_module):
    return EditableTestset(tmp_path, importable_module)


def by_caption(metrics):
    return {s["caption"]: s["Rmi"] for s in metrics["samples"]}


def test_w1_weights_retrained_to_the_same_size_with_the_mtime_restored_are_new_weights(testset, capsys):
    cache = testset.root / "cache"
    assert testset.generate(cache)[0] == 0
    data = bytearray(testset.weights.read_bytes())
    retrained = np.array([-1.0]).tobytes()
    data[-len(retrained):] = retrained
    rewrite_keeping_size_and_mtime(testset.weights, bytes(data))
    code, _, _ = testset.generate(cache)
    assert code == 2 and "encoder.options.model.weights" in capsys.readouterr().err


def test_w8_a_helper_module_the_plugin_imports_is_part_of_its_code(testset, capsys):
    cache = testset.root / "cache"
    assert testset.generate(cache)[0] == 0
    (testset.plugin_dir / "trust_helper.py").write_text("MIX = 0.5\n")
    code, _, _ = testset.generate(cache)
    assert code == 2 and "encoder.code" in capsys.readouterr().err


def test_w9_a_file_the_yaml_names_by_a_relative_path_is_hashed(testset, capsys):
    cache = testset.root / "cache"
    assert testset.generate(cache)[0] == 0
    rewrite_keeping_size_and_mtime(testset.root / "sign.txt", b"-10")  # was "1.0"
    code, _, _ = testset.generate(cache)
    assert code == 2 and "encoder.options.model.sign_file" in capsys.readouterr().err


def test_w10_project_code_that_shapes_vectors_or_maps_is_in_their_keys(testset, monkeypatch):
    """The demo encoder's tokenizer (predict/encoders/demo_text.py) and the tile cutting (predict/core/tiling.py)
    are in the vectors' key; the map code in every sample's identity: each file's content, found from the
    imports, so an edit to it is seen (here its digest is made to differ, rather than edit the checkout)."""
    files, _ = provenance.code_files(["predict.encoders.demo", *provenance.TILE_CODE])
    assert {"predict.encoders.demo_text", "predict.core.tiling", "predict.layers.demo_net"} <= set(files)
    assert {"predict.core.tiling", "predict.core.heatmap", "predict.core.cell_median", "predict.io.jpeg"} \
        <= set(provenance.code_files(engine.MAP_CODE)[0])
    cache = testset.root / "cache"
    assert testset.generate(cache)[0] == 0
    # the module that makes the maps from the scores: in the run's code, not in a written map's evaluation
    localise = os.path.realpath(provenance.code_files(["predict.localisation.maps"])[0]["predict.localisation.maps"])
    assert "predict.localisation.maps" not in provenance.code_files(evaluation.EVALUATION_CODE)[0]
    real_digest = provenance.file_digest
    monkeypatch.setattr(provenance.code, "file_digest",
                        lambda path: "edited" if os.path.realpath(path) == localise else real_digest(path))
    provenance.records.code_version.cache_clear()
    code, _, log = testset.generate(cache)
    assert code == 0 and "Recomputing 0/2: a.png (map code changed)" in log
    provenance.records.code_version.cache_clear()


# what a testset run imports from the project without being part of the computation: packages, the command
# and its log, the registry that finds the encoder's class (whose code is in the encoder's identity)
NOT_COMPUTATION = {"predict", "evaluations", "predict.cli", "predict.cli.generate", "predict.cli.options",
                   "predict.cli.runner", "predict.io.logs", "predict.encoders", "predict.encoders.registry", "predict.io",
                   "predict.layers", "predict.testset", "predict.localisation", "predict.provenance"}


def test_every_project_module_a_testset_run_imports_is_in_its_results_key(tmp_path):
    """The rule, not a list of the modules believed to matter: a ``selo-generate`` run is made to report every
    project module it imported, and each one that computes is in the code its records are keyed by (the
    run's, :data:`~predict.testset.engine.MAP_CODE`) or in the encoder's identity. (The run's evaluation code,
    ``predict/testset/evaluate.py``, was once in neither.)"""
    import subprocess
    import sys

    from helpers import subprocess_env, write_testset

    imgs, anno = write_testset(tmp_path)
    probe = ("import json, sys; from predict.cli.generate import main; "
             f"code = main(['--yaml_path', 'demo', '--cache_path', {str(tmp_path / 'cache')!r}, "
             f"'--src_data_path', {str(imgs)!r}, '--src_anno_path', {str(anno)!r}]); "
             "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in ('predict', 'evaluations'))]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, env=subprocess_env())
    code, imported = json.loads(done.stdout.splitlines()[-1])
    assert code == 0, done.stderr
    identity_code = ["predict.encoders.demo", *provenance.TILE_CODE, *provenance.RUNTIME_CODE]  # as encoder_identity's
    keyed = set(provenance.code_files(engine.MAP_CODE)[0]) | set(provenance.code_files(identity_code)[0])
    assert {"predict.testset.engine", "predict.testset.evaluate", "evaluations.metrics"} <= keyed
    assert sorted(set(imported) - keyed - NOT_COMPUTATION) == []


def test_w11_a_vector_store_holds_one_encoders_vectors(tmp_path):
    from predict import localise
    from predict.encoders.registry import load_encoder

    a = load_encoder("demo", device="cpu")
    b = load_encoder("demo_random", device="cpu")
    image, _ = red_square_scene(300, 400, (100, 200, 100, 200))
    store = TileVectorStore(a, str(tmp_path / "vectors"))
    localise(image[:, :, ::-1].copy(), "a red roof", a, steps="128", vectors=store)
    with pytest.raises(ValueError, match="holds the tile vectors of encoder demo-.*, not of encoder demo-"):
        localise(image[:, :, ::-1].copy(), "a red roof", b, steps="128", vectors=store)


def test_w2_localise_sees_an_image_rewritten_with_its_size_and_mtime(tmp_path, redness):
    from predict import localise
    from predict.localisation.maps import default_store

    path = tmp_path / "scene.png"
    for box in ((50, 150, 50, 150), (150, 250, 250, 350)):
        image, _ = red_square_scene(300, 400, box)
        data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()
        if path.exists():
            rewrite_keeping_size_and_mtime(path, data)
        else:
            path.write_bytes(data)
        encoded = default_store(redness).tiles_encoded
        probmap = localise(path, "a red roof", redness, steps="128")
        assert default_store(redness).tiles_encoded > encoded  # a new image: its tiles encoded
        fresh = localise(path, "a red roof", redness, steps="128", vectors=TileVectorStore(redness))
        assert np.array_equal(probmap, fresh)  # the map of the file as it is now


def test_w12_evaluate_pairs_each_map_with_the_sample_it_was_made_for(testset):
    cache = testset.root / "cache"
    _, first, _ = testset.generate(cache)
    testset.anno.reverse()
    testset.write_anno()
    assert evaluate_main(["--cache_path", str(cache), "--src_anno_path", str(testset.anno_path)]) == 0
    after = json.loads((cache / "metrics.json").read_text())
    assert by_caption(after) == pytest.approx(by_caption(first))
    assert after["mean"]["Rmi"] == pytest.approx(first["mean"]["Rmi"]) and after["mean_over"] == [0, 1]


def test_w12_a_map_made_for_another_caption_is_not_scored(testset):
    cache = testset.root / "cache"
    testset.generate(cache)
    testset.anno[0]["caption"] = "a blue car"  # no map of the folder was made for it
    testset.write_anno()
    assert evaluate_main(["--cache_path", str(cache), "--src_anno_path", str(testset.anno_path)]) == 1
    errors = json.loads((cache / "metrics.json").read_text())["errors"]
    assert [e["idx"] for e in errors] == [0]
    assert "no probability map" in errors[0]["error"] and "was made for 'a red roof'" in errors[0]["error"]
    assert errors[0]["identity"]["caption"] == "a blue car"  # a failure says which sample failed, by content


def test_w13_a_renamed_image_is_the_same_sample_and_swapped_names_are_recomputed(testset):
    cache = testset.root / "cache"
    _, first, _ = testset.generate(cache)
    (testset.imgs / "a.png").rename(testset.imgs / "renamed.png")
    testset.anno[0]["jpg_name"] = "renamed.png"
    testset.write_anno()
    code, metrics, log = testset.generate(cache)
    assert code == 0 and "Skipping 0/2: renamed.png (already complete)" in log
    assert metrics["mean_over"] == [0, 1] and "Mean over 2 sample(s)" in log
    assert metrics["samples"][0]["jpg_name"] == "renamed.png"
    testset.anno[0]["jpg_name"], testset.anno[1]["jpg_name"] = "b.png", "renamed.png"  # the names swapped
    testset.write_anno()
    code, metrics, log = testset.generate(cache)
    assert code == 0 and "Recomputing 0/2: b.png (image changed)" in log and "Mean over 2 sample(s)" in log
    assert metrics["mean_over"] == [0, 1] and np.isfinite(metrics["mean"]["Rmi"])


def test_w14_a_record_edited_by_hand_is_recomputed_with_the_reason(testset):
    cache = testset.root / "cache"
    _, first, _ = testset.generate(cache)
    data = json.loads((cache / "metrics.json").read_text())
    data["samples"][0]["Rsu"] = 7.5
    data["samples"][1]["Ras"] = None
    (cache / "metrics.json").write_text(json.dumps(data))
    code, metrics, log = testset.generate(cache)
    assert code == 0
    assert "Recomputing 0/2: a.png (its record in metrics.json is unusable (Rsu 7.5 is outside [0, 1]))" in log
    assert "Recomputing 1/2: b.png (its record in metrics.json was changed after it was written" in log
    assert metrics["mean"] == pytest.approx(first["mean"])
    data = json.loads((cache / "metrics.json").read_text())
    data["samples"][1]["Rmi"] = 0.99  # in range, but not what was computed
    (cache / "metrics.json").write_text(json.dumps(data))
    assert "Recomputing 1/2: b.png (its record in metrics.json was changed" in testset.generate(cache)[2]


@pytest.fixture
def redness():
    from toy_encoders import RednessEncoder

    return RednessEncoder({"model": {"name": "toy_encoders:RednessEncoder"}})


def test_two_stores_on_one_folder_keep_both_their_vectors(tmp_path, redness):
    from predict.localisation.timing import StageTimer

    image, _ = red_square_scene(300, 400, (100, 200, 100, 200))
    first, second = (TileVectorStore(redness, str(tmp_path)) for _ in range(2))
    for store in (first, second):
        store.use_image("image-key")
    first.vectors(image, [(0, 128, 0, 128)], StageTimer())
    second.vectors(image, [(0, 128, 128, 256)], StageTimer())  # saved after the first: merged, not replaced
    (path,) = tmp_path.glob("*.npz")
    assert set(read_vectors(str(path), first.file_key())) == {(0, 128, 0, 128), (0, 128, 128, 256)}
    with pytest.raises(ValueError, match=r"made by .*, not by what asks for it now \(another-key\)"):
        read_vectors(str(path), "another-key")
    shutil.copy(path, tmp_path / "elsewhere.npz")  # a copy without its record is not trusted
    with pytest.raises(ValueError, match="no record of what made it"):
        read_vectors(str(tmp_path / "elsewhere.npz"), first.file_key())
