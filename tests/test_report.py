"""The HTML report renders: valid HTML with balanced tags, and every linked file exists."""
import json
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np

from evaluations.metrics import SeloScore
from predict.io.report import THUMB_SIZE, annotate, write_report
from predict.io.results import MetricsStore

SVG = "{http://www.w3.org/2000/svg}"
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class TagChecker(HTMLParser):
    """Collects unbalanced tags and every href/src of a page."""

    def __init__(self):
        super().__init__()
        self.open, self.problems, self.links = [], [], []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("href", "src")]
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.problems.append(f"unexpected </{tag}>")


def make_cache(folder: Path) -> Path:
    """Sample 0 with overlay and probmap, sample 1 with a probmap only, sample 2 failed; timings set."""
    polygon = [[20, 30], [120, 30], [120, 110], [20, 110]]
    cv2.imwrite(str(folder / "addmap_0.jpg"), np.full((200, 300, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "probmap_0.jpg"), np.full((200, 300), 40, np.uint8))
    cv2.imwrite(str(folder / "probmap_1.jpg"), np.full((900, 500), 40, np.uint8))
    anno = [{"caption": "a <red> & white roof\n", "jpg_name": "a.jpg", "points": [polygon]},
            {"caption": "a pond", "jpg_name": "b.jpg", "points": [polygon]},
            {"caption": "a road", "jpg_name": "c.jpg", "points": [polygon]}]
    (folder / "anno.json").write_text(json.dumps(anno), encoding="utf-8")
    store = MetricsStore(str(folder))
    centres_circles = dict(centers=[(70, 70), (200, 150)], circles=[(70, 70, 80)])
    store.record(0, "a.jpg", anno[0]["caption"], SeloScore(0.9, 0.1, 1.0, 0.9, **centres_circles))
    store.record(1, "b.jpg", anno[1]["caption"], SeloScore(0.5, 0.5, 0.5, 0.5, **centres_circles))
    store.record_error(2, "c.jpg", anno[2]["caption"], "probmap_2.jpg: probability map not found")
    store.set_timings({"cut": 1.5, "sim": 2.0, "gnt": 0.5, "flt": 0.25, "total": 4.25})
    return folder / "anno.json"


def test_report_is_valid_html_with_existing_links(tmp_path):
    path = Path(write_report(str(tmp_path), str(make_cache(tmp_path))))
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.problems == [] and checker.open == []
    assert checker.links, "the report links no image"
    for link in checker.links:
        assert not link.startswith(("/", "http")), link  # relative: the folder moves as a whole
        assert (tmp_path / link).is_file(), link
    assert "report/overlay_0.svg" in checker.links and "probmap_1.jpg" in checker.links
    assert "a &lt;red&gt; &amp; white roof" in text  # captions escaped
    assert "probmap_2.jpg: probability map not found" in text  # errors listed
    assert "<th>Cut</th>" in text and "4.2500" in text  # stage times at the top
    thumb = cv2.imread(str(tmp_path / "report" / "thumb_1.jpg"))
    assert max(thumb.shape[:2]) == THUMB_SIZE  # 900x500 probmap shrunk
    # the full-size drawings: the marks as vector shapes over the map file, at the map's size
    svg = ElementTree.parse(tmp_path / "report" / "overlay_1.svg").getroot()
    assert svg.get("viewBox") == "0 0 500 900"
    background = svg.find(f"{SVG}image")
    assert background.get("href") == "../probmap_1.jpg" and (tmp_path / "report" / background.get("href")).is_file()
    assert svg.find(f"{SVG}g/{SVG}polygon").get("points") == "20,30 120,30 120,110 20,110"
    svg = ElementTree.parse(tmp_path / "report" / "overlay_0.svg").getroot()
    assert svg.find(f"{SVG}image").get("href") == "../addmap_0.jpg" and svg.get("viewBox") == "0 0 300 200"
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["1", "2"]  # the attention centres, numbered


def test_report_of_a_large_map_draws_from_a_reduced_decode(tmp_path):
    """A map larger than 8 thumbnails is decoded at 1/8 scale; the thumbnail and the drawing's size hold."""
    polygon = [[400, 300], [2400, 300], [2400, 1800], [400, 1800]]
    cv2.imwrite(str(tmp_path / "addmap_0.jpg"), np.full((3001, 6000, 3), 90, np.uint8))
    (tmp_path / "anno.json").write_text(json.dumps([{"caption": "a", "jpg_name": "a.jpg", "points": [polygon]}]))
    MetricsStore(str(tmp_path)).record(0, "a.jpg", "a", SeloScore(0.9, 0.1, 1.0, 0.9, [(1400, 1000)], [(1400, 1050, 1200)]))
    write_report(str(tmp_path), str(tmp_path / "anno.json"))
    thumb = cv2.imread(str(tmp_path / "report" / "thumb_0.jpg"))
    assert thumb.shape[:2] == (180, 360)
    assert tuple(int(v) for v in thumb[18, 40]) != (90, 90, 90)  # the polygon's corner (400, 300), scaled 0.06
    assert ElementTree.parse(tmp_path / "report" / "overlay_0.svg").getroot().get("viewBox") == "0 0 6000 3001"


def test_annotate_draws_polygon_circle_and_centres():
    image = np.zeros((100, 100, 3), np.uint8)
    drawn = annotate(image, [[[10, 10], [50, 10], [50, 50], [10, 50]]], [(30, 30, 40)], [(30, 30)])
    assert image.max() == 0  # input untouched
    assert tuple(drawn[10, 30]) == (0, 255, 0)  # polygon's top edge, green
    assert drawn[30, 70].any()  # circle of radius 40 around (30, 30) passes (70, 30)
    assert drawn[30, 30][0] > 200 and drawn[30, 30][2] > 200 and drawn[30, 30][1] < 60  # centre dot, magenta
