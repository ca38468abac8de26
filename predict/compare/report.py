"""What ``selo-compare`` writes: its table as text, Markdown, LaTeX, CSV or JSON, and ``compare.html``.

Every function takes the comparison as :func:`predict.compare.runs.compare_runs` returns it (the content of
``compare.json``): ``{"runs": [{"path", "n", "mean", "ci95", "apart"}], "versus": [{"run", "baseline", "n",
"delta", "ci95", "wilcoxon_p", "wins", "ties", "losses", "what_changed"}], "samples": [{"image", "caption",
"values", "idx", "apart"}], "bootstrap", "left_out", "published"}``.

``compare.html`` holds the summary, two figures drawn with matplotlib (``compare_files/delta_rmi.png``: each
run's per-sample ΔRmi against the baseline, sorted; ``compare_files/scatter_rmi.png``: baseline Rmi against
each run's), the published reference block, and one row per sample sorted by ΔRmi with every run's overlay
side by side: the run report's annotated thumbnail (``<run>/report/thumb_{idx}.jpg``, else a thumbnail of
``addmap_{idx}.jpg``) copied into ``compare_files/``, linked to the run's full-size drawing
(``report/overlay_{idx}.svg``) by a path relative to the output folder.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os

import cv2
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evaluations.metrics import INDICATORS
from predict.io.maps import map_path, write_jpeg
from predict.io.report import REDUCED_DECODES, REPORT_DIR, thumbnail
from predict.provenance.store import write_atomically

LOWER_IS_BETTER = frozenset({"Ras"})  # the other indicators are better higher
FORMATS = ("text", "md", "latex", "csv", "json")
LATEX_ESCAPES = str.maketrans({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "Δ": r"$\Delta$",
                               "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$"})
EXTENSIONS = {"text": "txt", "md": "md", "latex": "tex", "csv": "csv", "json": "json"}
FILES_DIR = "compare_files"
STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}td.num{text-align:right;
font-family:monospace;white-space:nowrap}img{display:block;max-width:360px}.note{color:#555}.warn{color:#b00}
.ref{background:#f6f6f6}.pos{color:#070}.neg{color:#b00}"""


# ---- numbers -------------------------------------------------------------------------------------------------

def format_number(value, signed: bool = False) -> str:
    """A mean or difference with 4 decimals ("nan" for None or NaN).

    >>> format_number(0.12345), format_number(0.01, signed=True), format_number(None)
    ('0.1235', '+0.0100', 'nan')
    """
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_p(value) -> str:
    """A p-value: 4 decimals, or 2 significant digits below 0.001.

    >>> format_p(0.5), format_p(0.000123), format_p(None)
    ('0.5000', '1.2e-04', 'nan')
    """
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def format_interval(pair, signed: bool = False) -> str:
    return f"[{format_number(pair[0], signed)}, {format_number(pair[1], signed)}]"


def delta(row: dict, baseline: str, run: str, name: str) -> float | None:
    """``run - baseline`` of one indicator for a sample row (None where either is counted apart)."""
    base, other = row["values"].get(baseline), row["values"].get(run)
    if base is None or other is None or base[name] is None or other[name] is None:
        return None
    return other[name] - base[name]


def rows_by_delta_rmi(comparison: dict) -> list[dict]:
    """The sample rows sorted by the first compared run's ΔRmi, lowest first; those without one last."""
    baseline, first = comparison["runs"][0]["path"], comparison["runs"][1]["path"]

    def order(row):
        value = delta(row, baseline, first, "Rmi")
        return value is None, value or 0.0

    return sorted(comparison["samples"], key=order)


# ---- tables: one model, five renderings ----------------------------------------------------------------------

def table_blocks(comparison: dict) -> list[tuple[str, str, list[str], list[list[str]], list[str]]]:
    """The comparison as ``(name, title, header, rows, notes)`` blocks of strings: means, differences,
    per-sample values, published results; ``notes`` are lines that follow a table (the Wilcoxon caveat, the
    published values' references)."""
    runs, boot = comparison["runs"], comparison["bootstrap"]
    baseline = runs[0]["path"]
    level = round(100 * boot["confidence"])
    means = [[run["path"] + (" (baseline)" if run["path"] == baseline else ""), str(run["n"]),
              *(f"{format_number(run['mean'][n])} {format_interval(run['ci95'][n])}" for n in INDICATORS),
              ", ".join(f"{count} {why}" for why, count in run.get("apart", {}).items()) or "-"] for run in runs]
    headings = [f"{n} {'↓' if n in LOWER_IS_BETTER else '↑'}" for n in INDICATORS]
    blocks = [("Means", f"Mean over samples [{level} % percentile bootstrap interval; {boot['resamples']} resamples, "
               f"seed {boot['seed']}]", ["run", "n", *headings, "counted apart"], means, [])]
    differences = []
    for entry in comparison["versus"]:
        for name in INDICATORS:
            differences.append([entry["run"], str(entry["n"]), name, format_number(entry["delta"][name], True),
                                format_interval(entry["ci95"][name], True), format_p(entry["wilcoxon_p"][name]),
                                f"{entry['wins'][name]}/{entry['ties'][name]}/{entry['losses'][name]}"])
    blocks.append(("Against the baseline", f"Against the baseline {baseline}: Δ = run - baseline over the samples "
                   f"both averaged [{level} % paired bootstrap interval]; Wilcoxon signed-rank p (two-sided); "
                   "wins/ties/losses (a win: higher Rsu, Rda, Rmi; lower Ras)",
                   ["run", "n", "indicator", "Δ", f"{level} % CI", "Wilcoxon p", "W/T/L"], differences,
                   ["Wilcoxon p: nan where there is no pair, or where scipy gives none (every difference 0, n of 14 "
                    "or more)"]))
    others = [run["path"] for run in runs[1:]]
    per_sample = []
    for row in rows_by_delta_rmi(comparison):
        cells = [row["image"], row["caption"].strip()]
        cells += [format_number((row["values"][run["path"]] or {}).get("Rmi")) for run in runs]
        cells += [format_number(delta(row, baseline, path, "Rmi"), True) for path in others]
        cells.append("; ".join(f"{path}: {why}" for path, why in row.get("apart", {}).items()) or "-")
        per_sample.append(cells)
    blocks.append(("Per sample", "Per sample, sorted by ΔRmi (counted-apart samples: no value)",
                   ["image", "caption", *(f"Rmi {run['path']}" for run in runs),
                    *(f"ΔRmi {path}" for path in others), "counted apart"], per_sample, []))
    published = comparison["published"]
    blocks.append(("Published results", "Published Rmi on the real SLM testset, for reference (not measured here): "
                   + ("comparable" if published["comparable"] else "NOT COMPARABLE") + f" ({published['note']})",
                   ["method", "Rmi", "source"],
                   [[row["method"], f"{row['Rmi']:.4f}", row["source"]] for row in published["rows"]],
                   published["sources"]))
    return blocks


def header_lines(comparison: dict) -> list[str]:
    """What is compared: the baseline, what changed per run, the samples compared and left out."""
    lines = [f"Baseline: {comparison['runs'][0]['path']}"]
    for entry in comparison["versus"]:
        lines.append(f"{entry['run']}: what changed: {'; '.join(entry['what_changed']) or 'nothing recorded'}")
    lines.append(f"Compared: {len(comparison['samples'])} sample(s), the same caption, polygons and image content "
                 "(where recorded) in every run")
    if comparison["left_out"]:
        lines.append(f"Left out (--common): {len(comparison['left_out'])}: " + "; ".join(comparison["left_out"]))
    return lines


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _latex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (Δ as ``$\\Delta$``), each once: one pass over the
    text, so that the braces of an escape (``\\textbackslash{}``) are not escaped again.

    >>> _latex("50 % of a_b & Δ"), _latex("C:\\\\maps")
    ('50 \\\\% of a\\\\_b \\\\& $\\\\Delta$', 'C:\\\\textbackslash{}maps')
    """
    return text.translate(LATEX_ESCAPES)


def csv_text(comparison: dict) -> str:
    """Long-format CSV of the measured numbers, one row per (kind, run, indicator[, sample]): kind ``mean``
    (a run's mean and interval), ``delta`` (against the baseline, with p and wins/ties/losses) or
    ``sample`` (a sample's value, empty when counted apart). The published values are not in it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "run", "baseline", "image", "caption", "indicator", "n", "value", "ci95_low",
                     "ci95_high", "wilcoxon_p", "wins", "ties", "losses", "counted_apart"])
    baseline = comparison["runs"][0]["path"]

    def number(value):
        return "" if value is None else repr(value)

    for run in comparison["runs"]:
        for name in INDICATORS:
            writer.writerow(["mean", run["path"], baseline, "", "", name, run["n"], number(run["mean"][name]),
                             *map(number, run["ci95"][name]), "", "", "", "",
                             "; ".join(f"{c} {why}" for why, c in run.get("apart", {}).items())])
    for entry in comparison["versus"]:
        for name in INDICATORS:
            writer.writerow(["delta", entry["run"], baseline, "", "", name, entry["n"], number(entry["delta"][name]),
                             *map(number, entry["ci95"][name]), number(entry["wilcoxon_p"][name]),
                             entry["wins"][name], entry["ties"][name], entry["losses"][name], ""])
    for row in comparison["samples"]:
        for path, values in row["values"].items():
            for name in INDICATORS:
                writer.writerow(["sample", path, baseline, row["image"], row["caption"].strip(), name, "",
                                 number(values[name]) if values else "", "", "", "", "", "", "",
                                 row.get("apart", {}).get(path, "")])
    return out.getvalue()


def render_table(comparison: dict, form: str) -> str:
    """The comparison as text (``form`` one of :data:`FORMATS`), ending with a newline."""
    if form == "json":
        return json.dumps(comparison, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    if form == "csv":
        return csv_text(comparison)
    lines = []
    if form == "text":
        lines += header_lines(comparison)
        for _, title, header, rows, notes in table_blocks(comparison):
            lines += ["", title, *_text_table(header, rows), *notes]
    elif form == "md":
        lines += [f"- {_md_cell(line)}" for line in header_lines(comparison)]
        for _, title, header, rows, notes in table_blocks(comparison):
            lines += ["", f"**{_md_cell(title)}**", "", "| " + " | ".join(map(_md_cell, header)) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            lines += ["", *(f"- {_md_cell(note)}" for note in notes)] if notes else []
    else:  # latex: one tabular per block, the published one apart
        lines += [f"% {_latex(line)}" for line in header_lines(comparison)]
        for _, title, header, rows, notes in table_blocks(comparison):
            lines += ["", f"% {_latex(title)}", r"\begin{tabular}{" + "l" * len(header) + "}", r"\hline",
                      " & ".join(map(_latex, header)) + r" \\", r"\hline"]
            lines += [" & ".join(map(_latex, row)) + r" \\" for row in rows]
            lines += [r"\hline", r"\end{tabular}", *(f"% {_latex(note)}" for note in notes)]
    return "\n".join(lines) + "\n"


# ---- compare.html ----------------------------------------------------------------------------------------------

def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def delta_figure(comparison: dict) -> bytes:
    """PNG: each run's per-sample ΔRmi against the baseline, sorted, as bars (green: better, red: worse)."""
    baseline, versus = comparison["runs"][0]["path"], comparison["versus"]
    figure = Figure(figsize=(8, 2.6 * len(versus)), dpi=100, layout="constrained")
    for axes, entry in zip(figure.subplots(len(versus), 1, squeeze=False)[:, 0], versus):
        values = sorted(d for row in comparison["samples"]
                        if (d := delta(row, baseline, entry["run"], "Rmi")) is not None)
        axes.bar(range(len(values)), values, color=["#2a8a2a" if v > 0 else "#c03030" for v in values], width=0.85)
        axes.axhline(0, color="#444", linewidth=0.8)
        axes.set_title(f"ΔRmi = {entry['run']} - {baseline} per sample, sorted "
                       f"(mean {format_number(entry['delta']['Rmi'], True)}, n {entry['n']})", fontsize=9)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("samples, sorted by ΔRmi", fontsize=8)
        axes.set_ylabel("ΔRmi", fontsize=8)
    return _png(figure)


def scatter_figure(comparison: dict) -> bytes:
    """PNG: Rmi of the baseline (x) against each run's (y), one point per sample averaged in both; the
    diagonal is 'no change'."""
    baseline = comparison["runs"][0]["path"]
    figure = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    axes = figure.subplots()
    low = 1.0
    for entry in comparison["versus"]:
        pairs = [(row["values"][baseline]["Rmi"], row["values"][entry["run"]]["Rmi"]) for row in comparison["samples"]
                 if delta(row, baseline, entry["run"], "Rmi") is not None]
        axes.scatter([x for x, _ in pairs], [y for _, y in pairs], s=18, alpha=0.75, label=entry["run"])
        low = min([low, *(min(pair) for pair in pairs)])
    low = max(0.0, math.floor(10 * low - 0.5) / 10)  # from the lowest value's tenth below: Rmi lies in [0, 1]
    axes.plot([low, 1], [low, 1], color="#888", linewidth=0.8, linestyle="--")
    axes.set_xlim(low, 1)
    axes.set_ylim(low, 1)
    axes.set_aspect("equal")
    axes.set_xlabel(f"Rmi, {baseline} (baseline)", fontsize=8)
    axes.set_ylabel("Rmi, run", fontsize=8)
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def overlay_thumbnail(run_path: str, idx: int, out_dir: str, tag: str) -> str | None:
    """A thumbnail of sample ``idx``'s overlay in run ``run_path`` written into ``out_dir/compare_files/``
    (the run report's annotated one copied, else one shrunk from ``addmap_{idx}.jpg``); its path relative to
    ``out_dir``, or None when the run has neither."""
    name = f"{FILES_DIR}/{tag}_thumb_{idx}.jpg"
    report_thumb = os.path.join(run_path, REPORT_DIR, f"thumb_{idx}.jpg")
    if os.path.isfile(report_thumb):
        with open(report_thumb, "rb") as f:
            write_atomically(os.path.join(out_dir, name), f.read())
        return name
    addmap = map_path(run_path, "addmap", idx)
    image = cv2.imread(addmap, REDUCED_DECODES[-1][1]) if os.path.isfile(addmap) else None
    if image is None:
        return None
    write_jpeg(os.path.join(out_dir, name), thumbnail(image))
    return name


def full_size_link(run_path: str, idx: int, out_dir: str) -> str | None:
    """Relative link from ``out_dir`` to the run's full-size drawing of sample ``idx`` (else its overlay)."""
    for path in (os.path.join(run_path, REPORT_DIR, f"overlay_{idx}.svg"), map_path(run_path, "addmap", idx)):
        if os.path.isfile(path):
            return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    return None


def _html_table(header: list[str], rows: list[list[str]], numeric=()) -> str:
    """An HTML table of escaped text cells; columns in ``numeric`` right-aligned."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' if i in numeric else
                                    f"<td>{html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _sample_row_html(row: dict, comparison: dict, out_dir: str, tags: dict) -> str:
    runs = [run["path"] for run in comparison["runs"]]
    cells = [f"{html.escape(row['caption'].strip())}<br><small>{html.escape(row['image'])}</small>"]
    for path in runs:
        idx = row["idx"].get(path)
        thumb = overlay_thumbnail(path, idx, out_dir, tags[path]) if idx is not None else None
        link = full_size_link(path, idx, out_dir) if idx is not None else None
        figure = (f'<a href="{html.escape(link or thumb)}"><img src="{html.escape(thumb)}" '
                  f'alt="{html.escape(path)} sample {idx}"></a>' if thumb else "no map")
        values = row["values"].get(path)
        note = (f"Rmi {format_number(values['Rmi'])}" if values else
                f'<span class="warn">{html.escape(row["apart"].get(path, "counted apart"))}</span>')
        cells.append(f"{figure}<small>{html.escape(path)} (idx {idx}): {note}</small>")
    for path in runs[1:]:
        deltas = []
        for name in INDICATORS:
            value = delta(row, runs[0], path, name)
            better = value is not None and value != 0 and ((value < 0) == (name in LOWER_IS_BETTER))
            css = "" if value in (None, 0) else (' class="pos"' if better else ' class="neg"')
            deltas.append(f"<span{css}>Δ{name} {format_number(value, True)}</span>")
        cells.append("<br>".join(deltas))
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def write_html(comparison: dict, out_dir: str) -> str:
    """Write ``out_dir/compare.html`` and its files in ``out_dir/compare_files/``; return its path."""
    os.makedirs(os.path.join(out_dir, FILES_DIR), exist_ok=True)
    write_atomically(os.path.join(out_dir, FILES_DIR, "delta_rmi.png"), delta_figure(comparison))
    write_atomically(os.path.join(out_dir, FILES_DIR, "scatter_rmi.png"), scatter_figure(comparison))
    runs = [run["path"] for run in comparison["runs"]]
    tags = {path: f"run{number}" for number, path in enumerate(runs)}
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>SeLo comparison: {html.escape(' vs '.join(runs))}</title>", f"<style>{STYLE}</style>",
             "</head>", "<body>", "<h1>SeLo comparison</h1>",
             "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in header_lines(comparison)) + "</ul>"]
    blocks = table_blocks(comparison)
    for name, title, header, rows, notes in blocks[:2]:
        parts += [f"<h2>{html.escape(name)}</h2>", f'<p class="note">{html.escape(title)}</p>',
                  _html_table(header, rows, range(1, 7)), *(f'<p class="note">{html.escape(n)}</p>' for n in notes)]
    parts += ["<h2>Figures</h2>",
              f'<p><img src="{FILES_DIR}/delta_rmi.png" alt="per-sample ΔRmi, sorted" style="max-width:800px"></p>',
              f'<p><img src="{FILES_DIR}/scatter_rmi.png" alt="Rmi of the baseline against each run" '
              'style="max-width:500px"></p>']
    _, title, header, rows, notes = blocks[-1]
    parts += ['<div class="ref"><h2>Published results (reference, not measured here)</h2>',
              f'<p class="{"note" if comparison["published"]["comparable"] else "warn"}">{html.escape(title)}</p>',
              _html_table(header, rows, (1,)), "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
              "</div>"]
    parts += ["<h2>Per sample, sorted by ΔRmi</h2>",
              '<p class="note">Overlays as in each run\'s report (green: annotation polygons; yellow: annotation '
              "circles; magenta: attention centres). Click one for the full size.</p>",
              "<table><tr><th>sample</th>" + "".join(f"<th>{html.escape(p)}</th>" for p in runs)
              + "".join(f"<th>{html.escape(p)} - baseline</th>" for p in runs[1:]) + "</tr>"]
    parts += [_sample_row_html(row, comparison, out_dir, tags) for row in rows_by_delta_rmi(comparison)]
    parts += ["</table>", "</body>", "</html>"]
    path = os.path.join(out_dir, "compare.html")
    write_atomically(path, "\n".join(parts) + "\n")
    return path


def write_outputs(comparison: dict, out_dir: str, form: str) -> list[str]:
    """Write ``compare.json``, the table in ``form`` (``compare.txt``/``.md``/``.tex``/``.csv``; none more
    for json) and ``compare.html`` into ``out_dir``; return their paths."""
    written = [os.path.join(out_dir, "compare.json")]
    write_atomically(written[0], render_table(comparison, "json"))
    if form != "json":
        written.append(os.path.join(out_dir, f"compare.{EXTENSIONS[form]}"))
        write_atomically(written[-1], render_table(comparison, form))
    written.append(write_html(comparison, out_dir))
    return written
