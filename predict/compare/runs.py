"""Compare SeLo runs as a paper does: paired statistics over the same samples, refusing what is not comparable.

    runs = [load_run("cache/A"), load_run("cache/B")]   # the baseline first
    comparison = compare_runs(runs)                      # compare.json's content

The command is ``selo-compare`` (:mod:`predict.cli.compare`). A RUN is a cache folder written by
``selo-generate`` (or ``selo-evaluate``): its ``metrics.json``. Samples, failed ones included, are matched by
what they are, the caption, the polygons' digest and the image's content digest recorded with each outcome
(the image where both runs know it: ``selo-evaluate`` without ``--src_data_path`` records none), never by
position or file name. Runs that do not cover the same samples are refused (:class:`CompareError`, one line naming
what differs) unless ``common`` restricts the comparison to the samples all runs share (the others listed).

Per indicator (Rsu, Ras, Rda, Rmi): each run's mean with a 95 % percentile bootstrap interval over samples;
against the baseline the mean paired difference (run - baseline) with its paired bootstrap interval, the
two-sided Wilcoxon signed-rank p-value and wins / ties / losses (a win: a higher Rsu, Rda, Rmi, a lower
Ras). Failed samples, degenerate maps and non-finite indicators are counted apart, never averaged. The
settings that differ (encoder, pipeline, steps, seed, code versions) are printed as "what changed".

The tables and ``compare.html`` (figures and the per-sample overlays side by side) are
:mod:`predict.compare.report`'s. Published Rmi values are a separate reference block, marked "not
comparable" unless the compared samples are the real SLM testset's 59.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import stats

from evaluations.metrics import INDICATORS  # the paper's column order: Rsu, Ras, Rda, Rmi
from predict.compare.report import LOWER_IS_BETTER
from predict.errors import CompareError
from predict.io.results import record_problem
from predict.provenance import SAMPLE_KEYS, digest_of, seal_problem, settings_differences

DEFAULT_RESAMPLES = 10_000
CONFIDENCE = 0.95

# Published Rmi on the real SLM testset (AIR-SLT: 22 images, 59 samples), for reference only: (method, Rmi,
# source), the sources' full references in PUBLISHED_SOURCES.
PUBLISHED_RMI = (
    ("AMFMN, SeLo v1, steps 256/512/768", 0.6772, "Yuan et al. 2022, scales table (s5)"),
    ("AMFMN, SeLo v1, steps 128/256/512", 0.6998, "Yuan et al. 2022, scales table (s4)"),
    ("AMFMN, SeLo v2", 0.7021, "SeLo v2, AMFMN-ours"),
    ("CLIP ViT-B/32", 0.7071, "RS5M (Zhang et al. 2023)"),
    ("RemoteCLIP", 0.7125, "RS5M (Zhang et al. 2023)"),
    ("GeoRSCLIP ViT-B/32", 0.7447, "RS5M (Zhang et al. 2023)"),
    ("GeoRSCLIP ViT-H/14", 0.7494, "RS5M (Zhang et al. 2023)"),
)
PUBLISHED_SOURCES = (
    "Yuan et al. 2022: Z. Yuan et al., Learning to Evaluate Performance of Multi-modal Semantic Localization, "
    "IEEE TGRS 2022; its tables are also in README.md of github.com/xiaoyuan1996/SemanticLocalizationMetrics",
    "SeLo v2: the SeLo v2 paper's comparison table (row AMFMN-ours), as given in README_v2.md of "
    "github.com/xiaoyuan1996/SemanticLocalizationMetrics",
    "RS5M (Zhang et al. 2023): Z. Zhang, T. Zhao, Y. Guo, J. Yin, RS5M and GeoRSCLIP: A Large Scale "
    "Vision-Language Dataset and A Large Vision-Language Model for Remote Sensing, arXiv:2306.11300 (IEEE TGRS 2024)",
)
# samples_fingerprint() of the real SLM annotations (../shared/slm/anno.json, 59 samples), their polygons
# digested by predict.provenance.polygons_digest; tests/test_compare.py recomputes it from that file.
SLM_SAMPLES = 59
SLM_FINGERPRINT = "c23d3bf555458ca9a27f16d597a306f0e61d0435b0d6482e8d70fe3dead8fcfa"


# ---- statistics (pure functions of arrays) -----------------------------------------------------------------

def bootstrap_ci(values, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D, n samples).

    The resamples are the rows of ``np.random.default_rng(seed).integers(0, n, size=(resamples, n))``; the
    interval is ``np.percentile`` (linear) of their means at (1 - confidence) / 2 and (1 + confidence) / 2.
    (nan, nan) for no value.

    >>> bootstrap_ci([0.5, 0.5, 0.5], resamples=100)
    (0.5, 0.5)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[draws].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def paired_differences(baseline, other) -> np.ndarray:
    """``other - baseline`` per sample (two 1-D arrays of the same samples in the same order)."""
    return np.asarray(other, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)


def wilcoxon_p(baseline, other) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of ``other`` against ``baseline`` (paired 1-D
    arrays), ``scipy.stats.wilcoxon`` with its defaults (zero differences dropped, ``zero_method="wilcox"``);
    nan for no pair and where scipy has no answer (every difference zero: scipy 1.17 gives 1 for 2 to 13
    pairs, nan from 14, and refuses one).

    >>> round(wilcoxon_p([0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5]), 3)
    0.125
    """
    if len(baseline) == 0:
        return math.nan
    # every difference zero: scipy divides 0 by 0 (numpy's error state is per thread and context), or
    # refuses below its sample size
    with np.errstate(invalid="ignore"):
        try:
            return float(stats.wilcoxon(other, baseline).pvalue)
        except ValueError:  # too few non-zero differences for scipy's test
            return math.nan


def wins_ties_losses(baseline, other, lower_is_better: bool = False) -> tuple[int, int, int]:
    """How many samples ``other`` does better than, exactly as well as, and worse than ``baseline``.

    >>> wins_ties_losses([0.5, 0.5, 0.5], [0.6, 0.5, 0.4]), wins_ties_losses([0.5, 0.5], [0.4, 0.6], True)
    ((1, 1, 1), (1, 0, 1))
    """
    difference = paired_differences(baseline, other)
    if lower_is_better:
        difference = -difference
    return int((difference > 0).sum()), int((difference == 0).sum()), int((difference < 0).sum())


def samples_fingerprint(samples) -> str:
    """Digest of a testset's samples, ``(caption, polygons digest)`` pairs, in any order.

    >>> samples_fingerprint([("b", "2"), ("a", "1")]) == samples_fingerprint([("a", "1"), ("b", "2")])
    True
    """
    return digest_of(sorted([str(caption), str(polygons)] for caption, polygons in samples))


def is_slm_testset(samples) -> bool:
    """Whether ``(caption, polygons digest)`` pairs are exactly the real SLM testset's 59 samples."""
    samples = list(samples)
    return len(samples) == SLM_SAMPLES and samples_fingerprint(samples) == SLM_FINGERPRINT


# ---- runs ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordedSample:
    """One sample in one run: its indicators, or why it is counted apart (failed, degenerate...)."""

    idx: int | None
    jpg_name: str
    caption: str
    values: dict  # indicator -> float; empty when the sample failed
    apart: str | None = None  # None: averaged


def _agree(a, b) -> bool:
    """Whether two recorded parts of an identity agree: equal, or one of them unknown (None)."""
    return a == b or a is None or b is None


def same_key(a: tuple, b: tuple) -> bool:
    """Whether two sample keys (:func:`sample_keys`) are of one sample: the same caption and repeat count, the
    same polygons and image content where both know them, as :func:`~predict.provenance.same_sample` ignores
    the image one side does not know (``selo-evaluate`` without ``--src_data_path`` records none; a failure
    recorded before failures had an identity, its caption only).

    >>> same_key(("a", "p", "i", 0), ("a", "p", None, 0)), same_key(("a", "p", "i", 0), ("a", "q", "i", 0))
    (True, False)
    """
    return a[0] == b[0] and a[3] == b[3] and _agree(a[1], b[1]) and _agree(a[2], b[2])


@dataclass
class Run:
    """What one run folder holds, its results and failures keyed by content (:func:`sample_keys`)."""

    path: str
    samples: dict = field(default_factory=dict)  # key -> RecordedSample of the samples with a result
    failed: dict = field(default_factory=dict)  # key -> RecordedSample of the failed samples
    unidentified: list = field(default_factory=list)  # "idx 3 (a.jpg)": records without provenance
    settings: dict | None = None
    code: dict = field(default_factory=dict)  # identity key ("evaluation", "maps"...) -> set of versions

    @cached_property
    def _by_caption(self) -> dict:
        """The run's keys by caption and repeat count, the candidates of :meth:`find` (taken once it is read)."""
        index: dict = {}
        for key in (*self.samples, *self.failed):
            index.setdefault((key[0], key[3]), []).append(key)
        return index

    def find(self, key) -> tuple | None:
        """The run's own key of sample ``key`` (a result or a failure, :func:`same_key`), or None."""
        candidates = self._by_caption.get((key[0], key[3]), [])
        return key if key in candidates else next((own for own in candidates if same_key(own, key)), None)

    def covers(self, key) -> bool:
        """Whether the run has an outcome for sample ``key``: a result or a failure."""
        return self.find(key) is not None

    def result(self, key) -> RecordedSample | None:
        """The run's result of sample ``key`` (None when it failed or is not in the run)."""
        return self.samples.get(self.find(key))

    def outcome(self, key) -> RecordedSample | None:
        """The run's result or failure of sample ``key``."""
        own = self.find(key)
        return self.samples.get(own) or self.failed.get(own)


def sample_keys(identities) -> list[tuple | None]:
    """Content key of each sample: ``(caption, polygons, image, k)`` from its recorded identity (dicts, in
    idx order; polygons and image None where not recorded), ``k`` counting the earlier samples with the same
    three (a testset may repeat a sample); None where no caption was recorded.

    >>> same = {"caption": "a", "polygons": "p", "image": "i"}
    >>> sample_keys([same, None, same, {"caption": "a"}])
    [('a', 'p', 'i', 0), None, ('a', 'p', 'i', 1), ('a', None, None, 0)]
    """
    seen: Counter = Counter()
    keys = []
    for identity in identities:
        if not (isinstance(identity, dict) and isinstance(identity.get("caption"), str)):
            keys.append(None)
            continue
        triple = (identity["caption"],
                  *(value if isinstance(value := identity.get(k), str) and value else None for k in SAMPLE_KEYS[1:]))
        keys.append((*triple, seen[triple]))
        seen[triple] += 1
    return keys


def _apart_reason(record: dict) -> str | None:
    """Why a stored result is not averaged (None when it is)."""
    if "seal" in record and (problem := seal_problem(record)):
        return problem
    if record.get("degenerate"):
        return "degenerate map"
    if any(record.get(name) is None or not math.isfinite(record[name]) for name in INDICATORS):
        return "non-finite indicator"
    return None


def read_metrics(path: str) -> dict:
    """The parsed ``metrics.json`` of run folder ``path``; :class:`CompareError` when there is none or it
    is not a results file."""
    json_path = os.path.join(path, "metrics.json")
    if not os.path.isdir(path):
        raise CompareError(f"{path}: run folder not found" + (" (it is a file)" if os.path.isfile(path) else ""))
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CompareError(f"{json_path}: not found (not a run folder, or a run that saved no result yet)") from None
    except (OSError, ValueError) as exc:
        raise CompareError(f"{json_path}: unreadable results file ({exc})") from None
    if not (isinstance(data, dict) and isinstance(data.get("samples", []), list)
            and isinstance(data.get("errors", []), list)):
        raise CompareError(f"{json_path}: not a results file (no 'samples' list)")
    return data


def _failure_identity(item: dict) -> dict:
    """A failure's recorded identity (caption, polygons, image), else its caption alone: failures were
    recorded without one before."""
    identity = item.get("identity")
    if isinstance(identity, dict) and isinstance(identity.get("caption"), str):
        return identity
    return {"caption": str(item.get("caption", ""))}


def load_run(path: str) -> Run:
    """Run folder ``path``: the results of its current annotation file (the records its mean counts, and
    those counted apart: degenerate, non-finite, unusable) and its failures, keyed by content (the repeats
    of a sample counted over both, in idx order); its settings and code versions."""
    data = read_metrics(path)
    records = [item for item in data.get("samples", []) if isinstance(item, dict)]
    mean_over = data.get("mean_over")
    if isinstance(mean_over, list):  # sound records the mean leaves out are kept from another annotation file
        records = [item for item in records if item.get("idx") in mean_over or record_problem(item)
                   or _apart_reason(item)]
    outcomes = [(item, False) for item in records]
    outcomes += [(item, True) for item in data.get("errors", []) if isinstance(item, dict)]
    outcomes.sort(key=lambda pair: pair[0].get("idx") if isinstance(pair[0].get("idx"), int) else -1)
    run = Run(path)
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    run.settings = settings.get((data.get("run") or {}).get("settings"))
    identities = [_failure_identity(item) if failed else item.get("identity") for item, failed in outcomes]
    for (item, failed), key in zip(outcomes, sample_keys(identities)):
        if failed:
            run.failed[key] = RecordedSample(item.get("idx"), str(item.get("jpg_name", "")), key[0], {},
                                      f"failed: {item.get('error', '')}")
            continue
        if key is None or key[1] is None:  # a result is identified by its caption and polygons at least
            run.unidentified.append(f"idx {item.get('idx')} ({item.get('jpg_name')})")
            continue
        if problem := record_problem(item):
            outcome = RecordedSample(item.get("idx"), str(item.get("jpg_name")), key[0], {}, f"unusable record ({problem})")
        else:
            values = {name: math.nan if item[name] is None else float(item[name]) for name in INDICATORS}
            outcome = RecordedSample(item.get("idx"), item["jpg_name"], key[0], values, _apart_reason(item))
        run.samples[key] = outcome
        for name, version in item["identity"].items():
            if name not in (*SAMPLE_KEYS, "settings"):
                run.code.setdefault(name, set()).add(str(version))
    return run


def _leaf(settings, dotted: str):
    for part in dotted.split("."):
        settings = settings.get(part) if isinstance(settings, dict) else None
    return settings


def _short_value(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def what_changed(baseline: Run, run: Run) -> list[str]:
    """The settings and code versions of ``run`` that differ from the baseline's, ``name (old -> new)``, and
    what one of them did not record (its settings; the image content of a run evaluated without
    ``--src_data_path``, whose samples are then matched by caption and polygons).

    >>> a = Run("a", settings={"seed": None, "pipeline": {"name": "v1"}})
    >>> what_changed(a, Run("b", settings={"seed": 0, "pipeline": {"name": "v2"}}))
    ['pipeline.name ("v1" -> "v2")', 'seed (null -> 0)']
    """
    changes = []
    if baseline.settings is None or run.settings is None:
        if baseline.settings != run.settings:
            missing = baseline.path if baseline.settings is None else run.path
            changes.append(f"settings (not recorded in {missing})")
    else:
        changes += [f"{name} ({_short_value(_leaf(baseline.settings, name))} -> "
                    f"{_short_value(_leaf(run.settings, name))})"
                    for name in settings_differences(baseline.settings, run.settings)]
    for missing, other in ((baseline, run), (run, baseline)):
        if any(key[2] is None for key in missing.samples) and any(key[2] for key in other.samples):
            changes.append(f"image content (not recorded in {missing.path}, evaluated without --src_data_path: "
                           "samples matched by caption and polygons)")
    for name in sorted(set(baseline.code) | set(run.code)):
        if baseline.code.get(name) != run.code.get(name):
            changes.append(f"{name} code version ({', '.join(sorted(baseline.code.get(name, ['?'])))} -> "
                           f"{', '.join(sorted(run.code.get(name, ['?'])))})")
    return changes


# ---- comparability -------------------------------------------------------------------------------------------

def _example(captions) -> str:
    """The first of ``captions``, quoted and cut at 60 characters."""
    caption = sorted(captions)[0].strip()
    return f"'{caption[:60]}{'...' if len(caption) > 60 else ''}'"


def coverage_differences(baseline: Run, run: Run) -> list[str]:
    """How the samples of ``run`` differ from the baseline's, phrase by phrase (empty when they cover the
    same samples): a caption with other polygons or another image content, samples only in one of them,
    results without recorded provenance."""
    only_base = [key for key in baseline.samples if not run.covers(key)]
    only_run = [key for key in run.samples if not baseline.covers(key)]
    other_polygons = [key for key in only_base if any(k[0] == key[0] and _agree(k[2], key[2]) for k in only_run)]
    other_image = [key for key in only_base
                   if key not in other_polygons and any(k[0] == key[0] and k[1] == key[1] for k in only_run)]
    changed = {key[0] for key in other_polygons + other_image}
    only_base = [key for key in only_base if key[0] not in changed]
    only_run = [key for key in only_run if key[0] not in changed]
    phrases = [f"{len(keys)} sample(s) {what} (e.g. {_example(key[0] for key in keys)})" for keys, what in (
        (other_polygons, "with other polygons"), (other_image, "with another image content"),
        (only_base, f"only in {baseline.path}"), (only_run, f"only in {run.path}")) if keys]
    for holder, other in ((baseline, run), (run, baseline)):
        if failed_only := [key[0] for key in holder.failed if not other.covers(key)]:
            phrases.append(f"{len(failed_only)} failed sample(s) only in {holder.path} (e.g. {_example(failed_only)})")
    for holder in (baseline, run):
        if holder.unidentified:
            phrases.append(f"{len(holder.unidentified)} result(s) without recorded provenance in {holder.path} "
                           f"({holder.unidentified[0]}{', ...' if len(holder.unidentified) > 1 else ''})")
    return phrases


def compared_keys(runs: list[Run]) -> tuple[list, list[str]]:
    """The samples every run covers (in the baseline's order, then the others'), and a line for each
    sample left out: not covered by some run, failed with no result in any run, or without provenance."""
    keys = [key for number, run in enumerate(runs) for key in run.samples
            if all(earlier.result(key) is None for earlier in runs[:number])]
    shared = [key for key in keys if all(run.covers(key) for run in runs)]
    left_out = [f"'{key[0].strip()}': not in {', '.join(run.path for run in runs if not run.covers(key))}"
                for key in keys if key not in shared]
    for run in runs:
        left_out += [f"'{item.caption.strip()}' ({item.jpg_name}): failed in {run.path}"
                     for key, item in run.failed.items() if all(other.result(key) is None for other in runs)]
        left_out += [f"{where} of {run.path}: no recorded provenance" for where in run.unidentified]
    return shared, left_out


# ---- the comparison ------------------------------------------------------------------------------------------

def _number(value):
    """A float for JSON: None for NaN."""
    return None if value is None or not math.isfinite(value) else float(value)


def run_summary(run: Run, keys: list, resamples: int, seed: int) -> dict:
    """``{"path", "n", "mean", "ci95", "apart"}`` of one run over the compared samples ``keys``."""
    usable = [outcome for key in keys if (outcome := run.result(key)) is not None and outcome.apart is None]
    summary = {"path": run.path, "n": len(usable), "mean": {}, "ci95": {}}
    for name in INDICATORS:
        values = [outcome.values[name] for outcome in usable]
        summary["mean"][name] = _number(float(np.mean(values)) if values else math.nan)
        summary["ci95"][name] = [_number(v) for v in bootstrap_ci(values, resamples, seed)]
    apart = Counter(run.outcome(key).apart.split(":")[0] for key in keys if run.outcome(key).apart)
    summary["apart"] = dict(sorted(apart.items()))
    return summary


def versus(baseline: Run, run: Run, keys: list, resamples: int, seed: int) -> dict:
    """Paired statistics of ``run`` against ``baseline`` over the compared samples both averaged."""
    pairs = [(base, other) for key in keys if (base := baseline.result(key)) is not None
             and (other := run.result(key)) is not None and base.apart is None and other.apart is None]
    entry = {"run": run.path, "baseline": baseline.path, "n": len(pairs), "delta": {}, "ci95": {},
             "wilcoxon_p": {}, "wins": {}, "ties": {}, "losses": {}}
    for name in INDICATORS:
        base = np.array([a.values[name] for a, _ in pairs], dtype=np.float64)
        other = np.array([b.values[name] for _, b in pairs], dtype=np.float64)
        difference = paired_differences(base, other)
        entry["delta"][name] = _number(float(difference.mean()) if pairs else math.nan)
        entry["ci95"][name] = [_number(v) for v in bootstrap_ci(difference, resamples, seed)]
        entry["wilcoxon_p"][name] = _number(wilcoxon_p(base, other))
        entry["wins"][name], entry["ties"][name], entry["losses"][name] = wins_ties_losses(
            base, other, name in LOWER_IS_BETTER)
    entry["what_changed"] = what_changed(baseline, run)
    return entry


def sample_rows(runs: list[Run], keys: list) -> list[dict]:
    """One entry per compared sample: ``{"image", "caption", "values": {path: {ind: v} or None}, "idx":
    {path: idx}, "apart": {path: why}}`` (values None where the sample is counted apart)."""
    rows = []
    for key in keys:
        outcomes = {run.path: run.outcome(key) for run in runs}
        named = next(outcome for run in runs if (outcome := run.result(key)) is not None)
        rows.append({"image": named.jpg_name, "caption": key[0],
                     "values": {path: ({n: _number(o.values[n]) for n in INDICATORS} if o.apart is None else None)
                                for path, o in outcomes.items()},
                     "idx": {path: o.idx for path, o in outcomes.items()},
                     "apart": {path: o.apart for path, o in outcomes.items() if o.apart}})
    return rows


def published_block(keys: list) -> dict:
    """The published Rmi values, and whether the compared samples are the real SLM testset's."""
    comparable = is_slm_testset((key[0], key[1]) for key in keys)
    return {"comparable": comparable,
            "note": ("the compared samples are the real SLM testset's 59" if comparable else
                     "the compared samples are not the real SLM testset's 59 (told by their captions and polygons): "
                     "numbers on another testset, synthetic or partial, do not compare with these"),
            "rows": [{"method": method, "Rmi": rmi, "source": source} for method, rmi, source in PUBLISHED_RMI],
            "sources": list(PUBLISHED_SOURCES)}


def compare_runs(runs: list[Run], common: bool = False, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """The comparison of ``runs`` (the baseline first) as ``compare.json`` holds it: ``{"runs", "versus",
    "samples"}`` (the issue's schema), plus ``"bootstrap"``, ``"left_out"`` and ``"published"``.

    Raises :class:`CompareError` (one line) when the runs do not cover the same samples and ``common`` is
    False, or when they share none."""
    baseline = runs[0]
    if not common:
        for run in runs[1:]:
            if differences := coverage_differences(baseline, run):
                shared = len(compared_keys(runs)[0])
                raise CompareError(f"{run.path}: not the samples of {baseline.path}: {'; '.join(differences)}; "
                                   f"rerun on the same annotations and images, or pass --common to compare the "
                                   f"{shared} sample(s) all runs share")
    keys, left_out = compared_keys(runs)
    if not keys:
        raise CompareError(f"{', '.join(run.path for run in runs)}: no sample in common")
    return {"runs": [run_summary(run, keys, resamples, seed) for run in runs],
            "versus": [versus(baseline, run, keys, resamples, seed) for run in runs[1:]],
            "samples": sample_rows(runs, keys),
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": CONFIDENCE},
            "left_out": left_out,
            "published": published_block(keys)}
