"""The HTML report of a SeLo run: ``<cache_path>/report.html`` with its drawn images in ``<cache_path>/report/``.

At the top the mean indicators and the time per stage (Cut / Sim / Gnt / Flt); then one row per sample:
caption, Rsu / Ras / Rda / Rmi and a thumbnail of the overlay (``addmap_{idx}.jpg``, or the probmap when
there is no overlay) with the annotation polygons (green), the annotation circles used by Ras / Rda
(yellow) and the numbered attention centres (magenta), as in the paper's figures. A thumbnail opens the
full-size drawing, ``report/overlay_{idx}.svg``: the same marks as vector shapes over the map file itself,
so no full-size image is encoded (or stored) a second time. A link opens the probmap. Failed samples are
listed with their error. All links are relative, so the folder can be moved or zipped as it is.
"""
from __future__ import annotations

import html
import os
from collections.abc import Collection

import cv2
import numpy as np
from tqdm import tqdm

from evaluations.metrics import INDICATORS
from predict.core.preview import shrink_by
from predict.io.annotations import load_annotations
from predict.io.images import image_size
from predict.io.maps import map_path, write_jpeg
from predict.io.results import STAGES, MetricsStore
from predict.provenance.store import write_atomically

REPORT_DIR = "report"
THUMB_SIZE = 360  # longest side of a thumbnail, pixels
# OpenCV decodes a JPEG at 1/8, 1/4 or 1/2 of its size for little more than the cost of reading it
REDUCED_DECODES = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
POLYGON_BGR, CIRCLE_BGR, CENTRE_BGR = (0, 255, 0), (0, 255, 255), (255, 0, 255)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-family:monospace}img{display:block}.err{color:#b00}"""


def stroke_width(height: int, width: int) -> int:
    """Pixels of the drawings' strokes on an image of that size: they scale with it, at least 2."""
    return max(2, round(max(height, width) / 400))


def annotate(image_bgr: np.ndarray, polygons: list, circles: list, centres: list, *, scale: float = 1.0,
             copy: bool = True) -> np.ndarray:
    """A uint8 BGR image ``(H, W, 3)`` with the polygons ``[[x, y], ...]``, the circles ``(cx, cy, r)`` and
    the attention centres ``(x, y)`` numbered from 1 drawn on it, their coordinates (pixels of the map)
    times ``scale`` (the image's size over the map's); strokes scale with the image's size. Drawn on a
    copy, or on ``image_bgr`` itself with ``copy=False``."""
    canvas = image_bgr.copy() if copy else image_bgr
    thickness = stroke_width(*canvas.shape[:2])
    outlines = [np.round(np.array(polygon, np.float64).reshape(-1, 1, 2) * scale).astype(np.int32)
                for polygon in polygons if len(polygon)]
    cv2.polylines(canvas, outlines, True, POLYGON_BGR, thickness, cv2.LINE_AA)
    for cx, cy, radius in circles:
        cv2.circle(canvas, (round(cx * scale), round(cy * scale)), round(radius * scale), CIRCLE_BGR, thickness,
                   cv2.LINE_AA)
    font_scale = thickness / 2
    for number, (x, y) in enumerate(centres, start=1):
        x, y = round(x * scale), round(y * scale)
        cv2.circle(canvas, (x, y), 3 * thickness, CENTRE_BGR, -1, cv2.LINE_AA)
        cv2.circle(canvas, (x, y), 3 * thickness, WHITE, max(1, thickness // 2), cv2.LINE_AA)
        for colour, width in ((BLACK, 3 * thickness), (WHITE, thickness)):  # outlined: readable on any map
            cv2.putText(canvas, str(number), (x + 4 * thickness, y - 2 * thickness),
                        cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, width, cv2.LINE_AA)
    return canvas


def _hex(bgr: tuple) -> str:
    return "#{2:02x}{1:02x}{0:02x}".format(*bgr)


def svg_drawing(href: str, height: int, width: int, polygons: list, circles: list, centres: list) -> str:
    """An SVG document showing the image ``href`` (``height`` x ``width`` pixels) with the marks of
    :func:`annotate` as vector shapes, in the image's pixel coordinates.

    >>> print(svg_drawing("../probmap_0.jpg", 20, 30, [[[1, 2], [5, 2], [5, 8]]], [(3.5, 4, 2.5)], [(4, 5)]))
    <svg xmlns="http://www.w3.org/2000/svg" width="30" height="20" viewBox="0 0 30 20">
    <image href="../probmap_0.jpg" width="30" height="20"/>
    <g fill="none" stroke-width="2">
    <polygon stroke="#00ff00" points="1,2 5,2 5,8"/>
    <circle stroke="#ffff00" cx="3.5" cy="4" r="2.5"/>
    </g>
    <g font-family="sans-serif" font-size="12" paint-order="stroke">
    <circle cx="4" cy="5" r="6" fill="#ff00ff" stroke="#ffffff" stroke-width="1"/>
    <text x="12" y="1" fill="#ffffff" stroke="#000000" stroke-width="4">1</text>
    </g>
    </svg>
    """
    thickness = stroke_width(height, width)
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<image href="{html.escape(href)}" width="{width}" height="{height}"/>',
             f'<g fill="none" stroke-width="{thickness}">']
    lines += [f'<polygon stroke="{_hex(POLYGON_BGR)}" points="{" ".join(f"{x:g},{y:g}" for x, y in polygon)}"/>'
              for polygon in polygons if len(polygon)]
    lines += [f'<circle stroke="{_hex(CIRCLE_BGR)}" cx="{cx:g}" cy="{cy:g}" r="{radius:g}"/>'
              for cx, cy, radius in circles]
    lines += ["</g>", f'<g font-family="sans-serif" font-size="{6 * thickness}" paint-order="stroke">']
    for number, (x, y) in enumerate(centres, start=1):
        lines += [f'<circle cx="{x}" cy="{y}" r="{3 * thickness}" fill="{_hex(CENTRE_BGR)}" stroke="{_hex(WHITE)}" '
                  f'stroke-width="{max(1, thickness // 2)}"/>',
                  f'<text x="{x + 4 * thickness}" y="{y - 2 * thickness}" fill="{_hex(WHITE)}" stroke="{_hex(BLACK)}" '
                  f'stroke-width="{2 * thickness}">{number}</text>']
    return "\n".join([*lines, "</g>", "</svg>"])


def shrink_factor(height: int, width: int, size: int = THUMB_SIZE) -> int:
    """The whole factor :func:`thumbnail` first shrinks an ``height`` x ``width`` image by (1: none): area
    averaging by a whole factor is OpenCV's fast path, and this one leaves at least twice ``size``.

    >>> shrink_factor(10000, 10001), shrink_factor(1000, 1200)
    (13, 1)
    """
    return max(1, min(int(max(height, width) / size) // 2, height, width))


def thumbnail(image: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """``image`` shrunk (area averaging) so that its longest side is at most ``size`` pixels.

    A large image is first shrunk by a whole factor (:func:`shrink_factor`, :func:`shrink_by`), then to
    the final size: ten times less work on a 10000 x 10001 overlay, for the same picture.
    """
    scale = size / max(image.shape[:2])
    if scale >= 1:
        return image
    width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    shrunk = shrink_by(image, shrink_factor(*image.shape[:2], size))
    return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_AREA)


def _background(cache_path: str, idx: int) -> tuple[str, tuple[int, int], np.ndarray] | None:
    """The map a drawing of sample ``idx`` goes over (the overlay, else the probmap): its file name, its
    ``(height, width)`` and its image (BGR), decoded at a reduced scale when it is large; None if neither."""
    for kind in ("addmap", "probmap"):
        path = map_path(cache_path, kind, idx)
        if not os.path.isfile(path):
            continue
        size, flag = None, cv2.IMREAD_COLOR
        try:
            size = image_size(path)
        except Exception:  # no size from the header: decoded whole (or found unreadable) below
            pass
        if size is not None:
            flag = next((flag for factor, flag in REDUCED_DECODES if max(size) // factor >= 2 * THUMB_SIZE), flag)
        image = cv2.imread(path, flag)
        if image is not None:
            return os.path.basename(path), size or image.shape[:2], image
    return None


def _drawing_paths(idx: int) -> tuple[str, str]:
    """The full-size drawing and its thumbnail, relative to the cache folder."""
    return f"{REPORT_DIR}/overlay_{idx}.svg", f"{REPORT_DIR}/thumb_{idx}.jpg"


def draw_sample(cache_path: str, idx: int, background: np.ndarray, map_name: str, size: tuple[int, int],
                polygons: list, circles: list, centres: list) -> None:
    """Write the report's drawings of sample ``idx``: ``report/thumb_{idx}.jpg``, ``background`` (BGR, the
    map ``map_name`` of the cache folder at any scale, e.g. the overlay in memory during a run) shrunk and
    annotated by :func:`annotate`, and ``report/overlay_{idx}.svg``, the marks over ``map_name`` at its full
    ``size`` (height, width)."""
    os.makedirs(os.path.join(cache_path, REPORT_DIR), exist_ok=True)
    full, thumb = (os.path.join(cache_path, path) for path in _drawing_paths(idx))
    small = thumbnail(background)
    scale = small.shape[1] / size[1]
    write_jpeg(thumb, annotate(small, polygons, circles, centres, scale=scale, copy=small is background))
    write_atomically(full, svg_drawing(f"../{map_name}", *size, polygons, circles, centres) + "\n")


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
        found = _background(cache_path, idx)
        drawn = found is not None
        if drawn:
            draw_sample(cache_path, idx, found[2], found[0], found[1], polygons, record.get("circles", []),
                        record.get("centers", []))
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

    The samples in ``drawn`` had their drawings written by :func:`draw_sample` during the run; the others
    are drawn here from their maps on disk (decoded at a reduced scale)."""
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
