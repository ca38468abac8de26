"""selo-compare: statistics against direct computation, comparability by content, counted-apart samples, the
output formats, and compare.html in a real browser.

Statistics are tested on metrics.json files written here (the numbers are what is tested); comparability,
"what changed" and the page on small real runs of the demo encoder over a tiny synthetic testset.
"""
import csv
import io
import json
import random
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from predict.cli.compare import main as compare_main
from predict.compare import runs as compare
from predict.demo.make_testset import write_testset
from predict.provenance import polygons_digest, seal

from helpers import ARTIFACTS, DEMO_YAML, SHARED

SHARED_ANNO = SHARED / "slm" / "anno.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INDICATORS = ("Rsu", "Ras", "Rda", "Rmi")


# ---- runs written directly ------------------------------------------------------------------------------------

def record(idx, values, caption=None, polygons=None, image=None, **extra):
    """A metrics.json sample record with its identity (caption, polygons digest, image digest)."""
    caption = caption or f"caption number {idx}"
    return {"idx": idx, "jpg_name": f"{idx % 3}.jpg", "caption": caption, **dict(zip(INDICATORS, values)),
            "identity": {"settings": "s1", "caption": caption, "polygons": polygons or f"poly{idx}",
                         "image": image or f"image{idx % 3}", "evaluation": "e1"}, **extra}


def write_run(folder: Path, records, errors=(), settings=None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    settings = settings or {"pipeline": {"name": "v1", "steps": [256, 512, 768]}, "seed": None,
                            "encoder": {"class": "demo"}}
    data = {"samples": records, "errors": list(errors), "settings": {"s1": settings}, "run": {"settings": "s1"},
            "mean_over": [r["idx"] for r in records if not r.get("degenerate")]}
    (folder / "metrics.json").write_text(json.dumps(data))
    return str(folder)


def random_values(rng, n):
    """n samples of (Rsu, Ras, Rda, Rmi) in [0, 1], Rmi from the others as the evaluator makes it."""
    rsu, ras, rda = rng.uniform(0.4, 1, n), rng.uniform(0, 0.6, n), rng.choice([0.5, 0.8, 1.0], n)
    return np.stack([rsu, ras, rda, 0.4 * rsu + 0.35 * (1 - ras) + 0.25 * rda], axis=1)


def run_cli(capsys, *args):
    """selo-compare's exit code, stdout and stderr lines."""
    code = compare_main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def direct_bootstrap(values, resamples, seed):
    """The percentile interval written out: the same resampling rows, each mean taken one by one."""
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = [statistics.fmean(values[i] for i in row) for row in draws]
    return np.percentile(means, [2.5, 97.5])


def test_means_intervals_deltas_and_p_values_match_direct_computation(tmp_path, capsys):
    rng = np.random.default_rng(11)
    base_values = random_values(rng, 30)
    other_values = np.clip(base_values + rng.normal(0.02, 0.05, base_values.shape), 0, 1)
    other_values[3] = base_values[3]  # one exact tie
    a = write_run(tmp_path / "a", [record(i, v) for i, v in enumerate(base_values.tolist())])
    b = write_run(tmp_path / "b", [record(i, v) for i, v in enumerate(other_values.tolist())])
    code, out, err = run_cli(capsys, a, b, "--out", tmp_path / "out", "--bootstrap", 2000, "--seed", 5)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [run["path"] for run in result["runs"]] == [a, b]
    for run, values in zip(result["runs"], (base_values, other_values)):
        assert run["n"] == 30
        for k, name in enumerate(INDICATORS):
            column = values[:, k].tolist()
            assert run["mean"][name] == pytest.approx(statistics.fmean(column), abs=1e-12)
            assert run["ci95"][name] == pytest.approx(direct_bootstrap(column, 2000, 5).tolist(), abs=1e-12)
    (entry,) = result["versus"]
    assert (entry["run"], entry["baseline"], entry["n"]) == (b, a, 30)
    for k, name in enumerate(INDICATORS):
        base, other = base_values[:, k].tolist(), other_values[:, k].tolist()
        differences = [y - x for x, y in zip(base, other)]
        assert entry["delta"][name] == pytest.approx(statistics.fmean(differences), abs=1e-12)
        assert entry["ci95"][name] == pytest.approx(direct_bootstrap(differences, 2000, 5).tolist(), abs=1e-12)
        assert entry["wilcoxon_p"][name] == pytest.approx(stats.wilcoxon(other, base).pvalue, rel=1e-12)
        better = [(y < x) if name == "Ras" else (y > x) for x, y in zip(base, other)]
        ties = sum(x == y for x, y in zip(base, other))
        outcome = (entry["wins"][name], entry["ties"][name], entry["losses"][name])
        assert outcome == (sum(better), ties, 30 - sum(better) - ties)
    assert entry["ties"]["Rmi"] >= 1
    assert len(result["samples"]) == 30
    assert result["samples"][0]["values"][a]["Rmi"] == pytest.approx(base_values[0, 3])
    assert "Rmi" in out and b in out


def test_bootstrap_interval_agrees_with_an_independent_resampler():
    """Another generator (Python's random) resampling the same data gives the same interval within
    Monte-Carlo error: the interval is the bootstrap's, not an artefact of one stream."""
    values = random_values(np.random.default_rng(3), 59)[:, 3].tolist()
    picker = random.Random(1)
    means = sorted(statistics.fmean(picker.choices(values, k=len(values))) for _ in range(20000))
    independent = (means[int(0.025 * len(means))], means[int(0.975 * len(means))])
    ours = compare.bootstrap_ci(values, 20000, seed=0)
    width = independent[1] - independent[0]
    assert ours == pytest.approx(independent, abs=0.05 * width)
    assert compare.bootstrap_ci(values, 500, seed=4) == compare.bootstrap_ci(values, 500, seed=4)  # seeded


def test_identical_runs_give_zero_delta_and_no_win_or_loss(tmp_path, capsys):
    values = random_values(np.random.default_rng(5), 20).tolist()  # over 13 pairs: scipy's normal approximation
    a = write_run(tmp_path / "a", [record(i, v) for i, v in enumerate(values)])
    b = write_run(tmp_path / "b", [record(i, v) for i, v in enumerate(values)])
    code, _, err = run_cli(capsys, a, b, "--format", "json")
    assert code == 0, err
    (entry,) = compare.compare_runs([compare.load_run(a), compare.load_run(b)], resamples=200)["versus"]
    for name in INDICATORS:
        assert entry["delta"][name] == 0 and entry["ci95"][name] == [0, 0]
        assert (entry["wins"][name], entry["ties"][name], entry["losses"][name]) == (0, 20, 0)
    assert entry["what_changed"] == []


def test_failed_degenerate_and_non_finite_samples_are_counted_apart(tmp_path, capsys):
    values = random_values(np.random.default_rng(8), 6).tolist()
    base = [record(i, v) for i, v in enumerate(values)]
    base[2]["degenerate"] = True
    other = [record(i, v) for i, v in enumerate(values) if i != 4]  # sample 4 failed in b
    other[0]["Rsu"] = None  # a NaN indicator
    a = write_run(tmp_path / "a", base)
    b = write_run(tmp_path / "b", other, errors=[{"idx": 4, "jpg_name": "1.jpg", "caption": "caption number 4",
                                                   "error": "1.jpg: truncated or corrupt JPEG"}])
    code, out, err = run_cli(capsys, a, b, "--out", tmp_path / "out", "--bootstrap", 100)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    run_a, run_b = result["runs"]
    assert run_a["n"] == 5 and run_a["apart"] == {"degenerate map": 1}
    assert run_b["n"] == 4 and run_b["apart"] == {"failed": 1, "non-finite indicator": 1}
    averaged_b = [values[i][3] for i in (1, 2, 3, 5)]
    assert run_b["mean"]["Rmi"] == pytest.approx(statistics.fmean(averaged_b), abs=1e-12)
    assert result["versus"][0]["n"] == 3  # samples 1, 3, 5: averaged in both
    rows = {row["caption"]: row for row in result["samples"]}
    assert len(rows) == 6
    assert rows["caption number 4"]["values"][b] is None
    assert rows["caption number 4"]["apart"][b].startswith("failed: 1.jpg: truncated")
    assert rows["caption number 2"]["values"][a] is None and rows["caption number 2"]["apart"][a] == "degenerate map"
    assert "1 failed" in out and "1 degenerate map" in out


def test_a_record_changed_after_it_was_sealed_is_counted_apart(tmp_path, capsys):
    values = random_values(np.random.default_rng(12), 4).tolist()
    sealed = [record(i, v) for i, v in enumerate(values)]
    for item in sealed:
        item["seal"] = seal(item)
    a = write_run(tmp_path / "a", sealed)
    sealed[1] = dict(sealed[1], Rmi=0.99)  # edited by hand, seal kept
    b = write_run(tmp_path / "b", sealed)
    code, _, err = run_cli(capsys, a, b, "--bootstrap", 100, "--out", tmp_path / "out")
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [run["n"] for run in result["runs"]] == [4, 3]
    assert "seal mismatch" in result["samples"][1]["apart"][b]


def test_other_samples_are_refused_in_one_line_and_compared_with_common(tmp_path, capsys):
    values = random_values(np.random.default_rng(9), 5).tolist()
    a = write_run(tmp_path / "a", [record(i, v) for i, v in enumerate(values)])
    changed = [record(i, v) for i, v in enumerate(values[:4])]
    changed[1]["identity"]["polygons"] = "other"
    changed[2]["identity"]["image"] = "other image bytes"
    b = write_run(tmp_path / "b", changed)
    code, out, err = run_cli(capsys, a, b)
    assert code == 2 and out == "" and len(err) == 1
    assert err[0].startswith(f"selo-compare: {b}: not the samples of {a}: ")
    for part in ("1 sample(s) with other polygons (e.g. 'caption number 1')",
                 "1 sample(s) with another image content (e.g. 'caption number 2')",
                 f"1 sample(s) only in {a} (e.g. 'caption number 4')", "--common to compare the 2 sample(s)"):
        assert part in err[0]
    code, out, err = run_cli(capsys, a, b, "--common", "--out", tmp_path / "out", "--bootstrap", 100)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [row["caption"] for row in result["samples"]] == ["caption number 0", "caption number 3"]
    assert result["versus"][0]["n"] == 2 and len(result["left_out"]) == 5  # 3 of a's, 2 of b's
    assert "Left out (--common): 5" in out


def test_samples_matched_by_content_not_by_index_or_name(tmp_path, capsys):
    """The same samples in another order and under other file names are the same samples."""
    values = random_values(np.random.default_rng(4), 4).tolist()
    a = write_run(tmp_path / "a", [record(i, v) for i, v in enumerate(values)])
    shuffled = [record(3 - i, values[i], caption=f"caption number {i}", polygons=f"poly{i}", image=f"image{i % 3}")
                for i in range(4)]
    for item in shuffled:
        item["jpg_name"] = "renamed_" + item["jpg_name"]
    b = write_run(tmp_path / "b", shuffled)
    code, _, err = run_cli(capsys, a, b, "--bootstrap", 100, "--out", tmp_path / "out")
    assert code == 0, err
    entry = json.loads((tmp_path / "out" / "compare.json").read_text())["versus"][0]
    assert entry["n"] == 4 and entry["ties"]["Rmi"] == 4


def test_a_bad_run_folder_is_one_line(tmp_path, capsys):
    good = write_run(tmp_path / "good", [record(0, [0.5, 0.2, 1.0, 0.7])])
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    for other, expected in ((tmp_path / "missing", "run folder not found"),
                            (tmp_path / "empty", "metrics.json: not found"),
                            (tmp_path / "broken", "metrics.json: unreadable results file")):
        code, out, err = run_cli(capsys, good, other)
        assert code == 2 and len(err) == 1 and expected in err[0] and str(other) in err[0], err
    with pytest.raises(SystemExit) as exit_info:
        compare_main([good])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "selo-compare: error: give at least two runs to compare (see --help)\n"


def test_table_formats(tmp_path, capsys):
    values = random_values(np.random.default_rng(2), 5).tolist()
    a = write_run(tmp_path / "a", [record(i, v) for i, v in enumerate(values)])
    b = write_run(tmp_path / "b_x", [record(i, [min(1.0, x + 0.01) for x in v]) for i, v in enumerate(values)])
    outputs = {}
    for form in ("md", "latex", "csv", "json", "text"):
        code, out, err = run_cli(capsys, a, b, "--format", form, "--bootstrap", 100, "--out", tmp_path / form)
        assert code == 0, err
        outputs[form] = out
    assert json.loads(outputs["json"]) == json.loads((tmp_path / "json" / "compare.json").read_text())
    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert len(rows) == 4 * 2 + 4 + 4 * 2 * 5  # means, deltas, samples
    delta_rmi = next(r for r in rows if r["kind"] == "delta" and r["indicator"] == "Rmi")
    assert float(delta_rmi["value"]) == pytest.approx(0.01) and delta_rmi["wins"] == "5"
    assert outputs["latex"].count(r"\begin{tabular}") == 4 and r"b\_x" in outputs["latex"]
    assert "| run | n | Rsu ↑ |" in outputs["md"] and "NOT COMPARABLE" in outputs["md"]
    assert (tmp_path / "md" / "compare.md").read_text() == outputs["md"]
    assert (tmp_path / "latex" / "compare.tex").is_file() and (tmp_path / "text" / "compare.txt").is_file()


def test_published_block_is_apart_and_marked_not_comparable_off_the_slm_testset(tmp_path):
    values = random_values(np.random.default_rng(6), 3).tolist()
    runs = [compare.load_run(write_run(tmp_path / name, [record(i, v) for i, v in enumerate(values)]))
            for name in ("a", "b")]
    published = compare.compare_runs(runs, resamples=50)["published"]
    assert published["comparable"] is False
    assert [(row["method"], row["Rmi"]) for row in published["rows"]] == [
        ("AMFMN, SeLo v1, steps 256/512/768", 0.6772), ("AMFMN, SeLo v1, steps 128/256/512", 0.6998),
        ("AMFMN, SeLo v2", 0.7021), ("CLIP ViT-B/32", 0.7071), ("RemoteCLIP", 0.7125),
        ("GeoRSCLIP ViT-B/32", 0.7447), ("GeoRSCLIP ViT-H/14", 0.7494)]


@pytest.mark.skipif(not SHARED_ANNO.is_file(), reason="needs ../shared/slm/anno.json (the real SLM annotations)")
def test_the_real_slm_testset_is_recognised_from_its_annotations(tmp_path):
    annotations = json.loads(SHARED_ANNO.read_text(encoding="utf-8"))
    pairs = [(item["caption"], polygons_digest(item["points"])) for item in annotations]
    assert compare.samples_fingerprint(pairs) == compare.SLM_FINGERPRINT
    records = [record(i, [0.7, 0.3, 0.6, 0.66], caption=c, polygons=p) for i, (c, p) in enumerate(pairs)]
    runs = [compare.load_run(write_run(tmp_path / name, records)) for name in ("a", "b")]
    assert compare.compare_runs(runs, resamples=50)["published"]["comparable"] is True
    partial = [compare.load_run(write_run(tmp_path / "c", records[:-1])), runs[1]]
    assert compare.compare_runs(partial, common=True, resamples=50)["published"]["comparable"] is False
    moved = [dict(records[0], identity=dict(records[0]["identity"], polygons="moved")), *records[1:]]
    assert compare.compare_runs([compare.load_run(write_run(tmp_path / "d", moved)), compare.load_run(
        write_run(tmp_path / "e", moved))], resamples=50)["published"]["comparable"] is False


# ---- real runs of the demo encoder ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """A tiny synthetic testset (2 scenes, 3 samples), a second annotation file with one polygon moved and one
    sample dropped; v1 and v2 runs on the first, a v1 run on the second."""
    from predict.cli.generate import main as generate_main

    root = tmp_path_factory.mktemp("compare_runs")
    annotations = write_testset(str(root), seed=3, layout=[(800, 1000, 2), (700, 900, 1)])
    anno = root / "annotations" / "anno.json"
    moved = json.loads(json.dumps(annotations[:-1]))
    moved[0]["points"][0] = [[x + 5, y] for x, y in moved[0]["points"][0]]
    (root / "moved.json").write_text(json.dumps(moved))
    runs = {}
    v1 = ["--step", "256_512"]
    for name, anno_path, extra in (("v1", anno, v1), ("v2", anno, ["--pipeline", "v2"]),
                                   ("v1_moved", root / "moved.json", v1)):
        runs[name] = str(root / name)
        code = generate_main(["--yaml_path", str(DEMO_YAML),
                              "--cache_path", runs[name], "--src_data_path", str(root / "imgs"),
                              "--src_anno_path", str(anno_path), "--device", "cpu", *extra])
        assert code == 0
    runs["samples"] = len(annotations)
    return runs


def test_real_runs_on_other_annotations_are_refused_and_compared_with_common(real_runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, real_runs["v1"], real_runs["v1_moved"])
    assert code == 2 and len(err) == 1, err
    assert "1 sample(s) with other polygons" in err[0] and f"only in {real_runs['v1']}" in err[0]
    code, _, err = run_cli(capsys, real_runs["v1"], real_runs["v1_moved"], "--common", "--out", tmp_path,
                           "--bootstrap", 200)
    assert code == 0, err
    result = json.loads((tmp_path / "compare.json").read_text())
    assert len(result["samples"]) == real_runs["samples"] - 2 and len(result["left_out"]) == 3
    entry = result["versus"][0]
    assert entry["delta"]["Rmi"] == 0 and entry["wins"]["Rmi"] == entry["losses"]["Rmi"] == 0  # same maps
    assert entry["what_changed"] == []


def test_real_v1_against_v2_names_what_changed_and_renders_the_page(real_runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = run_cli(capsys, real_runs["v1"], real_runs["v2"], "--out", out, "--bootstrap", 500)
    assert code == 0, err
    entry = json.loads((out / "compare.json").read_text())["versus"][0]
    changed = "; ".join(entry["what_changed"])
    assert 'pipeline.name ("v1" -> "v2")' in changed and "pipeline.steps" in changed and "seed (null -> 0)" in changed
    assert f"{real_runs['v2']}: what changed: " in text
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert page.count('<img src="compare_files/run') == 2 * real_runs["samples"]
    assert "delta_rmi.png" in page and "scatter_rmi.png" in page
    for name in ("delta_rmi.png", "scatter_rmi.png"):
        assert (out / "compare_files" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) for the page check")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page_view = browser.new_page(viewport={"width": 1400, "height": 1000})
        page_view.goto((out / "compare.html").as_uri())
        page_view.wait_for_load_state("load")
        broken = page_view.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                                    ".map(i => i.src)")
        assert broken == []
        assert page_view.locator("img").count() == 2 + 2 * real_runs["samples"]
        links = page_view.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
        assert links and all(link.startswith("file://") and link.endswith(".svg") for link in links)
        page_view.screenshot(path=str(ARTIFACTS / "compare_page.png"), full_page=True)
        browser.close()


# ---- failures matched by identity, runs of selo-evaluate, LaTeX escapes -----------------------------------------

def failure(idx, caption, polygons, image):
    """An ``errors`` entry of metrics.json with the identity a failed sample is recorded with."""
    return {"idx": idx, "jpg_name": "x.jpg", "caption": caption, "error": "x.jpg: image not found",
            "identity": {"caption": caption, "polygons": polygons, "image": image}}


def test_failed_samples_are_matched_by_identity_not_by_caption(tmp_path, capsys):
    records = [record(i, v) for i, v in enumerate(random_values(np.random.default_rng(3), 3).tolist())]
    a = write_run(tmp_path / "a", records, errors=[failure(3, "one caption", "p1", "i1")])
    for name, polygons, image in (("other_polygons", "p2", "i1"), ("other_image", "p1", "i2")):
        other = write_run(tmp_path / name, records, errors=[failure(3, "one caption", polygons, image)])
        code, out, err = run_cli(capsys, a, other)
        assert code == 2 and out == "" and len(err) == 1
        assert (f"1 failed sample(s) only in {a} (e.g. 'one caption'); 1 failed sample(s) only in {other} "
                "(e.g. 'one caption')") in err[0]
    unknown_image = write_run(tmp_path / "unknown_image", records, errors=[failure(3, "one caption", "p1", None)])
    code, out, err = run_cli(capsys, a, unknown_image, "--bootstrap", 100, "--format", "json")
    assert code == 0, err
    assert [run["apart"] for run in json.loads(out)["runs"]] == [{}, {}]  # failed in both: left out, not compared


def test_a_run_evaluated_without_the_images_compares_with_its_generate_run(real_runs, tmp_path, capsys):
    """selo-evaluate without --src_data_path records no image content: the samples are matched by caption and
    polygons, and "what changed" says so."""
    from predict.cli.evaluate import main as evaluate_main

    evaluated = tmp_path / "evaluated"
    evaluated.mkdir()
    for probmap in Path(real_runs["v1"]).glob("probmap_*.jpg"):
        shutil.copy(probmap, evaluated)
    anno = Path(real_runs["v1"]).parent / "annotations" / "anno.json"
    assert evaluate_main(["--cache_path", str(evaluated), "--src_anno_path", str(anno)]) == 0
    code, out, err = run_cli(capsys, real_runs["v1"], evaluated, "--bootstrap", 100, "--out", tmp_path / "out")
    assert code == 0, err
    entry = json.loads((tmp_path / "out" / "compare.json").read_text())["versus"][0]
    assert entry["n"] == real_runs["samples"] and entry["ties"]["Rmi"] == real_runs["samples"]
    assert (f"image content (not recorded in {evaluated}, evaluated without --src_data_path: samples matched by "
            "caption and polygons)") in entry["what_changed"]


def test_latex_escapes_each_special_character_once(tmp_path, capsys):
    values = random_values(np.random.default_rng(1), 3).tolist()
    a = write_run(tmp_path / "a", [record(i, v) for i, v in enumerate(values)])
    b = write_run(tmp_path / "b" / "&%$#_{}~^\\", [record(i, v) for i, v in enumerate(values)])
    code, out, err = run_cli(capsys, a, b, "--format", "latex", "--bootstrap", 100)
    assert code == 0, err
    assert r"/b/\&\%\$\#\_\{\}\textasciitilde{}\^{}\textbackslash{} & 3 &" in out
    assert r"\textbackslash\{" not in out and r"\textasciitilde\{" not in out
