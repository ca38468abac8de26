"""The HTML report of a SeLo run: ``<cache_path>/report.html`` with its drawn images in ``<cache_path>/report/``.

At the top the mean indicators and the time per stage (Cut / Sim / Gnt / Flt); then one row per sample:
caption, Rsu / Ras / Rda / Rmi and a thumbnail of the overlay (``addmap_{idx}.jpg``, or the probmap when
there is no overlay) with the annotation polygons (green), the annotation circles used by Ras / Rda
(yellow) and the numbered attention centres (magenta), as in the paper's figures. A thumbnail opens the
full-size drawing; a link opens the probmap. Failed samples are listed with their error. All links are
relative, so the folder can be moved or zipped as it is.
"""
from __future__ import annotations

import html
import os
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from tqdm import tqdm

from evaluations.metrics import INDICATORS
from predict.io.annotations import load_annotations
from predict.io.atomic import write_atomically
from predict.io.maps import map_path, write_jpeg
from predict.io.results import STAGES, MetricsStore

REPORT_DIR = "report"
THUMB_SIZE = 360  # longest side of a thumbnail, pixels
POLYGON_BGR, CIRCLE_BGR, CENTRE_BGR = (0, 255, 0), (0, 255, 255), (255, 0, 255)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-family:monospace}img{display:block}.err{color:#b00}"""


def annotate(image_bgr: np.ndarray, polygons: list, circles: list, centres: list, *, copy: bool = True) -> np.ndarray:
    """A uint8 BGR image ``(H, W, 3)`` with the polygons ``[[x, y], ...]``, the circles ``(cx, cy, r)`` and
    the attention centres ``(x, y)`` numbered from 1 drawn on it; strokes scale with size. Drawn on a copy,
    or on ``image_bgr`` itself with ``copy=False`` (a full-size overlay is 300 MB at 10000 x 10001)."""
    canvas = image_bgr.copy() if copy else image_bgr
    thickness = max(2, round(max(canvas.shape[:2]) / 400))
    outlines = [np.array(polygon, np.int32).reshape(-1, 1, 2) for polygon in polygons if len(polygon)]
    cv2.polylines(canvas, outlines, True, POLYGON_BGR, thickness, cv2.LINE_AA)
    for cx, cy, radius in circles:
        cv2.circle(canvas, (int(cx), int(cy)), int(radius), CIRCLE_BGR, thickness, cv2.LINE_AA)
    font_scale = thickness / 2
    for number, (x, y) in enumerate(centres, start=1):
        cv2.circle(canvas, (int(x), int(y)), 3 * thickness, CENTRE_BGR, -1, cv2.LINE_AA)
        cv2.circle(canvas, (int(x), int(y)), 3 * thickness, WHITE, max(1, thickness // 2), cv2.LINE_AA)
        for colour, width in ((BLACK, 3 * thickness), (WHITE, thickness)):  # outlined: readable on any map
            cv2.putText(canvas, str(number), (int(x) + 4 * thickness, int(y) - 2 * thickness),
                        cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, width, cv2.LINE_AA)
    return canvas


def thumbnail(image: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """``image`` shrunk (area averaging) so that its longest side is at most ``size`` pixels."""
    scale = size / max(image.shape[:2])
    if scale >= 1:
        return image
    width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _background(cache_path: str, idx: int) -> np.ndarray | None:
    """The overlay of sample ``idx`` (BGR), else its probmap as BGR, else None."""
    for kind in ("addmap", "probmap"):
        path = map_path(cache_path, kind, idx)
        image = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if image is not None:
            return image
    return None


def _drawing_paths(idx: int) -> tuple[str, str]:
    """The full-size drawing and its thumbnail, relative to the cache folder."""
    return f"{REPORT_DIR}/overlay_{idx}.jpg", f"{REPORT_DIR}/thumb_{idx}.jpg"


def draw_sample(cache_path: str, idx: int, background: np.ndarray, polygons: list, circles: list, centres: list,
                *, copy: bool = True) -> None:
    """Write the report's drawing of sample ``idx`` (``report/overlay_{idx}.jpg``) and its thumbnail:
    ``background`` (BGR, the overlay) annotated by :func:`annotate` (on itself with ``copy=False``).
    A run calls it while the overlay is still in memory; the two encodes run concurrently."""
    os.makedirs(os.path.join(cache_path, REPORT_DIR), exist_ok=True)
    full, thumb = (os.path.join(cache_path, path) for path in _drawing_paths(idx))
    drawn = annotate(background, polygons, circles, centres, copy=copy)
    with ThreadPoolExecutor(1) as pool:
        full_written = pool.submit(write_jpeg, full, drawn)
        write_jpeg(thumb, thumbnail(drawn))
        full_written.result()


def _number(value) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _sample_row(cache_path: str, record: dict, polygons: list, drawn: bool) -> str:
    """One table row; draws the sample from its maps on disk into ``report/`` unless ``drawn`` already."""
    idx = record["idx"]
    caption = html.escape(record["caption"].strip()) + f"<br><small>{html.escape(record['jpg_name'])}</small>"
    if record.get("degenerate"):
        caption += '<br><span class="err">degenerate map (tile scores all equal or not finite): left out of the mean</span>'
    if record.get("nonfinite_tiles"):
        caption += f'<br><span class="err">{record["nonfinite_tiles"]} non-finite tile score(s) left out</span>'
    cells = [str(idx), caption]
    cells += [_number(record.get(name)) for name in INDICATORS]
    full, thumb = _drawing_paths(idx)
    if not drawn:
        image = _background(cache_path, idx)
        drawn = image is not None
        if drawn:
            draw_sample(cache_path, idx, image, polygons, record.get("circles", []), record.get("centers", []),
                        copy=False)
            del image
    if not drawn:
        cells.append("no map")
    else:
        figure = f'<a href="{full}"><img src="{thumb}" alt="sample {idx}"></a>'
        probmap = os.path.basename(map_path(cache_path, "probmap", idx))
        if os.path.isfile(os.path.join(cache_path, probmap)):
            figure += f'<a href="{probmap}">probmap</a>'
        cells.append(figure)
    classes = ["", "", "num", "num", "num", "num", ""]
    return "<tr>" + "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
                            for c, v in zip(classes, cells)) + "</tr>"


def write_report(cache_path: str, anno_path: str, drawn: Collection[int] = ()) -> str:
    """Write ``<cache_path>/report.html`` (and ``<cache_path>/report/*.jpg``) from ``metrics.json``, the
    polygons of ``anno_path`` and the maps in ``cache_path``; return the path of report.html.

    The samples in ``drawn`` had their drawing written by :func:`draw_sample` during the run; the others
    are drawn here from their maps on disk (decoding the full-size overlay)."""
    if not os.path.isfile(os.path.join(cache_path, "metrics.json")):
        raise FileNotFoundError(f"{os.path.join(cache_path, 'metrics.json')}: not found; evaluate the folder first")
    store = MetricsStore(cache_path)
    samples = load_annotations(anno_path)
    store.set_current(samples, anno_path)
    polygons = {sample.idx: sample.polygons for sample in samples}
    os.makedirs(os.path.join(cache_path, REPORT_DIR), exist_ok=True)

    mean = store.mean()
    degenerate = sum(bool(record.get("degenerate")) for record in store.samples)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>SeLo report: {html.escape(os.path.basename(os.path.abspath(cache_path)))}</title>",
             f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>SeLo report</h1><p>{len(store.samples)} sample(s) evaluated, {len(store.errors)} failed"
             + (f", {degenerate} degenerate (left out of the mean)" if degenerate else "") + ".</p>",
             f"<p>The mean covers {len(store.mean_over)} sample(s) of {html.escape(anno_path)}"
             + (f"; results of samples not in it are kept but not counted (idx {', '.join(map(str, others))})."
                if (others := store.not_counted) else ".") + "</p>",
             "<h2>Mean indicators</h2><table><tr>" + "".join(f"<th>{n}</th>" for n in INDICATORS) + "</tr><tr>"
             + "".join(f'<td class="num">{_number(mean[n])}</td>' for n in INDICATORS) + "</tr></table>"]
    if store.timings:
        timings = store.timings
        parts.append("<h2>Time per stage (s)</h2><table><tr>" + "".join(f"<th>{s.capitalize()}</th>" for s in (*STAGES, "total"))
                     + "</tr><tr>" + "".join(f'<td class="num">{_number(timings.get(s))}</td>' for s in (*STAGES, "total"))
                     + "</tr></table>")
    parts.append("<h2>Samples</h2><p>Green: annotation polygons; yellow: annotation circles (Ras, Rda); magenta: "
                 "attention centres, numbered by probability. Click a thumbnail for the full size.</p>")
    parts.append("<table><tr><th>idx</th><th>caption</th>" + "".join(f"<th>{n}</th>" for n in INDICATORS)
                 + "<th>overlay</th></tr>")
    for record in tqdm(store.samples, desc="report", unit="sample", leave=False):
        parts.append(_sample_row(cache_path, record, polygons.get(record["idx"], []), record["idx"] in drawn))
    parts.append("</table>")
    if store.errors:
        parts.append("<h2>Failed samples</h2><ul>")
        parts += [f'<li class="err">{e["idx"]} ({html.escape(e["jpg_name"])}): {html.escape(e["error"])}</li>'
                  for e in store.errors]
        parts.append("</ul>")
    parts += ["</body>", "</html>"]
    path = os.path.join(cache_path, "report.html")
    write_atomically(path, "\n".join(parts) + "\n")
    return path
