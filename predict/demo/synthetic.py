"""Seeded generator of SLM-style aerial scenes: images, object polygons and captions.

A scene is a lawn/forest background crossed by roads, sometimes a river or a strip of sea, with
objects of the kinds the real SLM testset queries (football fields, baseball fields, tennis courts,
parking lots, airports, lakes, bridges, residential areas, oil tanks, ships, bare land). Every
function is pure: it takes a ``numpy.random.Generator`` (or a seed) and returns arrays, so one seed
always gives the same pixels. Images are uint8 RGB ``(H, W, 3)``; coordinates are pixels with
x = column, y = row, as in ``anno.json``.

Captions are written (:func:`make_caption`) from the demo encoder's caption grammar
(:mod:`predict.encoders.demo_text`), whose words are its vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from predict.encoders.demo_text import BACKGROUND_CAPTIONS, CAPTIONS, CONTEXTS, NUMBER_WORDS, ROOF_WORDS

# ----------------------------------------------------------------------------------------------
# Object kinds and their captions
# ----------------------------------------------------------------------------------------------

TRAIN_SEED = 20220901  # the demo encoder's training scenes are [TRAIN_SEED, i]; never use it for a testset
JPEG_QUALITY = 95  # of the testset images and of the training scenes

KINDS = ("football_field", "baseball_field", "tennis_courts", "parking_lot", "airport", "lake",
         "bridge", "residential", "oil_tanks", "ships", "bare_land")
# Never queried: the backgrounds, and distractors that look like parts of the queried kinds
# (a plain grass pitch, an empty concrete pad, large pale roofs).
DISTRACTOR_KINDS = ("grass_field", "concrete", "buildings")
BACKGROUND_KINDS = ("forest", "lawn", "road", "river", "sea") + DISTRACTOR_KINDS
# Label values of the label mask: 0 = nothing drawn yet, then objects, then backgrounds.
LABELS = {name: i + 1 for i, name in enumerate(KINDS + BACKGROUND_KINDS)}

ROOF_COLOURS = dict(zip(ROOF_WORDS, [(235, 235, 230), (170, 50, 40), (70, 190, 190), (40, 40, 45)]))  # RGB


def make_caption(rng: np.random.Generator, kind: str, attributes: dict) -> str:
    """A caption for ``kind`` from the grammar: a main phrase, sometimes a context phrase, a full stop.

    ``attributes`` fills the slots: ``n`` (int, tennis courts) and ``roofs`` (list of colour names).
    """
    templates = CAPTIONS[kind] if kind in CAPTIONS else BACKGROUND_CAPTIONS[kind]
    template = templates[rng.integers(len(templates))]
    if "{n}" in template and attributes.get("n") not in NUMBER_WORDS:
        template = "some tennis courts"  # counts only where the count is exact and in words
    roofs = attributes.get("roofs", ["red"])
    text = template.format(n=NUMBER_WORDS.get(attributes.get("n"), ""),
                           roofs=" and ".join(roofs) if len(roofs) <= 2 else ", ".join(roofs[:-1]) + " and " + roofs[-1])
    if rng.random() < 0.5:
        text += " " + CONTEXTS[rng.integers(len(CONTEXTS))]
    return text + "."


# ----------------------------------------------------------------------------------------------
# Drawing helpers
# ----------------------------------------------------------------------------------------------

@dataclass
class ObjectPatch:
    """One drawn object in local coordinates.

    Attributes:
        rgb: uint8 ``(h, w, 3)`` pixels.
        painted: bool ``(h, w)``, where the object paints (elsewhere the scene shows through).
        polygon: float ``(n, 2)`` (x, y) outline of the object, in patch pixels.
        attributes: caption slots (``n``, ``roofs``).
    """
    rgb: np.ndarray
    painted: np.ndarray
    polygon: np.ndarray
    attributes: dict = field(default_factory=dict)


def jitter(rng: np.random.Generator, colour, amount: int = 12) -> tuple:
    """``colour`` (RGB) with each channel moved by up to ``amount``, as ints cv2 accepts."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth random field in [0, 1] of ``shape`` (rows, cols), features about ``cell`` pixels wide."""
    coarse = rng.random((max(2, shape[0] // cell + 2), max(2, shape[1] // cell + 2))).astype(np.float32)
    return np.clip(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), 0, 1)


def stadium_polygon(cx: float, cy: float, half_w: float, half_h: float, n_arc: int = 10) -> np.ndarray:
    """Outline of a running-track shape (two half circles joined by straights), long axis vertical."""
    r = half_w
    straight = half_h - r
    top = np.linspace(np.pi, 2 * np.pi, n_arc)
    bottom = np.linspace(0, np.pi, n_arc)
    top_pts = np.stack([cx + r * np.cos(top), cy - straight + r * np.sin(top)], axis=1)
    bottom_pts = np.stack([cx + r * np.cos(bottom), cy + straight + r * np.sin(bottom)], axis=1)
    return np.concatenate([top_pts, bottom_pts])


def fill(rgb: np.ndarray, painted: np.ndarray, polygon: np.ndarray, colour) -> None:
    """Fill ``polygon`` with ``colour`` in ``rgb`` and mark it in ``painted`` (both in place)."""
    pts = [np.round(polygon).astype(np.int32)]
    cv2.fillPoly(rgb, pts, colour)
    cv2.fillPoly(painted.view(np.uint8), pts, 1)


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def blank(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), bool)


# ----------------------------------------------------------------------------------------------
# Object kinds: each draws one object of about ``size`` pixels (its longer side)
# ----------------------------------------------------------------------------------------------

def rectangular_pad(rng, size, aspect: tuple, colour, spread: int = 12):
    """A rectangle ``size`` wide and ``size * uniform(*aspect)`` high filled with a jittered ``colour``:
    the ground most objects stand on. Returns ``(rgb, painted, outline)``; the polygon is the rectangle."""
    h, w = int(size * rng.uniform(*aspect)), int(size)
    rgb, painted = blank(h, w)
    outline = box_polygon(0, 0, w - 1, h - 1)
    fill(rgb, painted, outline, jitter(rng, colour, spread))
    return rgb, painted, outline


def draw_football_field(rng, size):
    """Green pitch with white lines inside a red running track; the polygon is the track's outer edge."""
    h = int(size)
    w = int(size * rng.uniform(0.6, 0.72))
    rgb, painted = blank(h, w)
    outer = stadium_polygon(w / 2, h / 2, w / 2 - 2, h / 2 - 2)
    fill(rgb, painted, outer, jitter(rng, (180, 70, 55)))
    track = 0.11 * w
    fill(rgb, painted, stadium_polygon(w / 2, h / 2, w / 2 - track, h / 2 - track), jitter(rng, (70, 150, 60)))
    px, py = 0.3 * w, 0.3 * h
    cv2.rectangle(rgb, (int(w / 2 - px), int(h / 2 - py)), (int(w / 2 + px), int(h / 2 + py)), (235, 235, 235), 2)
    cv2.line(rgb, (int(w / 2 - px), h // 2), (int(w / 2 + px), h // 2), (235, 235, 235), 2)
    cv2.circle(rgb, (w // 2, h // 2), int(0.1 * w), (235, 235, 235), 2)
    for lane in (0.35, 0.7):  # white lane lines on the track
        cv2.polylines(rgb, [np.round(stadium_polygon(w / 2, h / 2, w / 2 - lane * track, h / 2 - lane * track)).astype(np.int32)],
                      True, (225, 200, 190), 1)
    return ObjectPatch(rgb, painted, outer)


def draw_baseball_field(rng, size):
    """A quarter-circle green outfield with a sandy infield diamond; the polygon is the outfield fan."""
    s = int(size)
    rgb, painted = blank(s, s)
    home = np.array([s * 0.08, s * 0.92])
    t = np.linspace(-np.pi / 2, 0, 12)
    arc = np.stack([home[0] + 0.86 * s * np.cos(t), home[1] + 0.86 * s * np.sin(t)], axis=1)
    fan = np.concatenate([home[None], arc])
    fill(rgb, painted, fan, jitter(rng, (85, 155, 65)))
    d = 0.3 * s
    infield_arc = np.stack([home[0] + 0.42 * s * np.cos(t), home[1] + 0.42 * s * np.sin(t)], axis=1)
    fill(rgb, painted, np.concatenate([home[None], infield_arc]), jitter(rng, (190, 150, 100)))
    diamond = np.array([home, home + [d, 0], home + [d, -d], home + [0, -d]])
    fill(rgb, painted, diamond[[0, 1, 2, 3]] + [[4, -4], [-4, -4], [-4, 4], [4, 4]], jitter(rng, (95, 160, 70)))
    cv2.polylines(rgb, [np.round(diamond).astype(np.int32)], True, (240, 240, 240), 2)
    cv2.circle(rgb, tuple(int(v) for v in home + [d * 0.5, -d * 0.5]), max(3, int(0.02 * s)), (200, 160, 110), -1)
    if rng.random() < 0.5:  # mirror so home plate is not always bottom-left
        rgb, painted = rgb[:, ::-1].copy(), painted[:, ::-1].copy()
        fan = np.stack([s - 1 - fan[:, 0], fan[:, 1]], axis=1)
    return ObjectPatch(rgb, painted, fan)


def draw_tennis_courts(rng, size):
    """2-6 courts side by side with white lines on a shared surface; the polygon is the surface."""
    n = int(rng.integers(2, 7))
    court_w, court_h = int(size * 0.2), int(size * 0.42)
    gap = max(4, court_w // 6)
    h, w = court_h + 2 * gap, n * court_w + (n + 1) * gap
    rgb, painted = blank(h, w)
    surround = jitter(rng, [(150, 70, 60), (120, 125, 130), (60, 120, 80)][rng.integers(3)])
    court = jitter(rng, [(60, 110, 160), (70, 140, 80), (140, 140, 145)][rng.integers(3)])
    outline = box_polygon(0, 0, w - 1, h - 1)
    fill(rgb, painted, outline, surround)
    for i in range(n):
        x0 = gap + i * (court_w + gap)
        cv2.rectangle(rgb, (x0, gap), (x0 + court_w, gap + court_h), court, -1)
        cv2.rectangle(rgb, (x0, gap), (x0 + court_w, gap + court_h), (245, 245, 245), 2)
        cv2.line(rgb, (x0, gap + court_h // 2), (x0 + court_w, gap + court_h // 2), (245, 245, 245), 2)
        cv2.line(rgb, (x0 + court_w // 2, gap + court_h // 4), (x0 + court_w // 2, gap + 3 * court_h // 4), (245, 245, 245), 1)
    return ObjectPatch(rgb, painted, outline, {"n": n})


def draw_parking_lot(rng, size):
    """A grey lot with parking rows full of small cars of random colours; the polygon is the lot."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.6, 1.0), (125, 125, 128), 8)
    h, w = painted.shape
    car_w, car_l = 12, 24
    car_colours = np.array([(230, 230, 230), (30, 30, 35), (180, 40, 40), (60, 80, 160), (200, 200, 190), (110, 110, 115)])
    for y in range(10, h - car_l - 10, car_l + 22):
        cv2.line(rgb, (6, y + car_l + 11), (w - 6, y + car_l + 11), (200, 200, 200), 1)
        xs = np.arange(8, w - car_w - 8, car_w + 6)
        occupied = rng.random(len(xs)) < 0.8
        colours = car_colours[rng.integers(len(car_colours), size=len(xs))]
        for x, on, c in zip(xs, occupied, colours):
            if on:
                cv2.rectangle(rgb, (int(x), y), (int(x) + car_w, y + car_l), tuple(int(v) for v in c), -1)
    return ObjectPatch(rgb, painted, outline)


def plane_polygons(cx: float, cy: float, length: float, angle: float) -> list[np.ndarray]:
    """Fuselage, wings and tail of a plane seen from above, rotated by ``angle`` (radians)."""
    L = length
    body = np.array([[-0.06, -0.5], [0.06, -0.5], [0.06, 0.5], [0, 0.56], [-0.06, 0.5]]) * L
    wings = np.array([[-0.5, 0.05], [0.5, 0.05], [0.5, 0.14], [0.05, 0.0], [-0.05, 0.0], [-0.5, 0.14]]) * L
    tail = np.array([[-0.18, -0.44], [0.18, -0.44], [0.18, -0.38], [-0.18, -0.38]]) * L
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [p @ rot.T + [cx, cy] for p in (body, wings, tail)]


def draw_airport(rng, size):
    """A light grey apron with white planes parked in rows; the polygon is the apron."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.55, 0.8), (165, 165, 160), 8)
    h, w = painted.shape
    length = size * rng.uniform(0.09, 0.14)
    for row_y in np.arange(length * 0.8, h - length * 0.6, length * 1.4):
        cv2.line(rgb, (0, int(row_y + length * 0.65)), (w - 1, int(row_y + length * 0.65)), (215, 200, 60), 2)
        for cx in np.arange(length * 0.7, w - length * 0.6, length * 1.25):
            if rng.random() < 0.75:
                for part in plane_polygons(cx, row_y, length * rng.uniform(0.85, 1.0), rng.uniform(-0.1, 0.1)):
                    cv2.fillPoly(rgb, [np.round(part + 3).astype(np.int32)], (100, 100, 100))  # shadow
                    cv2.fillPoly(rgb, [np.round(part).astype(np.int32)], jitter(rng, (245, 245, 245), 6))
    return ObjectPatch(rgb, painted, outline)


def blob_polygon(rng, cx: float, cy: float, rx: float, ry: float, n: int = 28) -> np.ndarray:
    """An irregular closed outline (lake shore, bare patch) within the ellipse ``rx`` x ``ry``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = 1 + 0.08 * np.sin(2 * t + rng.uniform(0, 6)) + 0.06 * np.sin(3 * t + rng.uniform(0, 6))
    wobble = wobble * rng.uniform(0.92, 1.0, n)
    wobble = wobble / wobble.max()
    return np.stack([cx + rx * wobble * np.cos(t), cy + ry * wobble * np.sin(t)], axis=1)


def draw_lake(rng, size):
    """Dark green water with a darker rim and a light shore; the polygon is the shore line."""
    h, w = int(size * rng.uniform(0.6, 1.0)), int(size)
    rgb, painted = blank(h, w)
    shore = blob_polygon(rng, w / 2, h / 2, w / 2 - 2, h / 2 - 2)
    fill(rgb, painted, shore, jitter(rng, (50, 75, 45), 8))
    inner = (shore - [w / 2, h / 2]) * 0.9 + [w / 2, h / 2]
    cv2.fillPoly(rgb, [np.round(inner).astype(np.int32)], jitter(rng, (35, 80, 60), 8))
    return ObjectPatch(rgb, painted, shore)


def draw_residential(rng, size, roofs):
    """A grid of houses with roofs of the ``roofs`` colours along small streets; the polygon is the block."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.7, 1.0), (105, 130, 85), 8)
    h, w = painted.shape
    house = int(rng.integers(26, 40))
    pitch = house + 22
    for y in range(6, h - house - 6, pitch):
        cv2.rectangle(rgb, (0, y + house + 6), (w - 1, y + house + 14), (150, 150, 150), -1)
        for x in range(8, w - house - 8, pitch):
            colour = ROOF_COLOURS[roofs[rng.integers(len(roofs))]]
            hw, hh = int(house * rng.uniform(0.8, 1.0)), int(house * rng.uniform(0.6, 0.9))
            cv2.rectangle(rgb, (x + 3, y + 3), (x + hw + 3, y + hh + 3), (50, 55, 45), -1)  # shadow
            cv2.rectangle(rgb, (x, y), (x + hw, y + hh), jitter(rng, colour, 8), -1)
    return ObjectPatch(rgb, painted, outline, {"roofs": list(roofs)})


def draw_oil_tanks(rng, size):
    """White round tanks with shadows in a grid on grey concrete; the polygon is the concrete pad."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.6, 1.0), (140, 138, 130), 8)
    h, w = painted.shape
    r = int(size * rng.uniform(0.06, 0.1))
    pitch = int(2.6 * r)
    for y in range(r + 10, h - r - 10, pitch):
        for x in range(r + 10, w - r - 10, pitch):
            cv2.circle(rgb, (x + r // 4, y + r // 4), r, (70, 70, 70), -1)
            cv2.circle(rgb, (x, y), r, jitter(rng, (240, 240, 238), 5), -1)
            cv2.circle(rgb, (x, y), int(r * 0.7), (215, 215, 212), 1)
    return ObjectPatch(rgb, painted, outline)


def draw_ships(rng, size):
    """White, grey and cyan ships on dark water by a pier; only the ships and pier paint.

    The polygon is the area the ships occupy (drawn on the sea the scene already has).
    """
    h, w = int(size * rng.uniform(0.6, 0.9)), int(size)
    rgb, painted = blank(h, w)
    outline = box_polygon(0, 0, w - 1, h - 1)
    fill(rgb, painted, box_polygon(0, 0, w - 1, 0.08 * h), jitter(rng, (150, 150, 145), 6))  # pier
    length = size * rng.uniform(0.25, 0.35)
    beam = length * 0.2
    for x in np.arange(beam, w - beam, beam * 2.2):
        y0 = 0.12 * h + rng.uniform(0, 0.3) * h
        hull = np.array([[x - beam / 2, y0], [x + beam / 2, y0], [x + beam / 2, y0 + length * 0.85],
                         [x, y0 + length], [x - beam / 2, y0 + length * 0.85]])
        if hull[:, 1].max() >= h - 2:
            continue
        colour = [(240, 240, 240), (170, 170, 175), (70, 190, 190)][rng.integers(3)]
        fill(rgb, painted, hull, jitter(rng, colour, 6))
        cv2.rectangle(rgb, (int(x - beam / 3), int(y0 + length * 0.15)), (int(x + beam / 3), int(y0 + length * 0.35)),
                      (90, 90, 95), -1)  # deck house
    return ObjectPatch(rgb, painted, outline)


def draw_bare_land(rng, size):
    """Sandy brown ground with sparse shrubs; the polygon is its outline."""
    h, w = int(size * rng.uniform(0.6, 1.0)), int(size)
    rgb, painted = blank(h, w)
    outline = blob_polygon(rng, w / 2, h / 2, w / 2 - 2, h / 2 - 2, n=20)
    fill(rgb, painted, outline, jitter(rng, (185, 160, 115), 10))
    shade = smooth_field(rng, (h, w), 40)
    rgb[:] = np.clip(rgb * (0.85 + 0.3 * shade[..., None]), 0, 255).astype(np.uint8) * painted[..., None]
    for _ in range(int(w * h / 9000)):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        if painted[y, x]:
            cv2.circle(rgb, (x, y), int(rng.integers(3, 8)), (75, 110, 55), -1)
    return ObjectPatch(rgb, painted, outline)


def draw_grass_field(rng, size):
    """Distractor: a mown green pitch (stripes) without a track, beside which a football field looks alike."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.5, 0.8), (80, 150, 60), 8)
    w = painted.shape[1]
    stripe = max(8, w // 12)
    rgb[:, (np.arange(w) // stripe) % 2 == 1] = np.clip(rgb[:, (np.arange(w) // stripe) % 2 == 1].astype(int) + 12, 0, 255)
    return ObjectPatch(rgb, painted, outline)


def draw_concrete(rng, size):
    """Distractor: an empty grey pad with faint joints, as grey as a parking lot or an apron."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.5, 1.0), (135, 135, 132), 12)
    h, w = painted.shape
    for x in range(0, w, int(rng.integers(40, 90))):
        cv2.line(rgb, (x, 0), (x, h - 1), (150, 150, 147), 1)
    return ObjectPatch(rgb, painted, outline)


def draw_buildings(rng, size):
    """Distractor: two to four large flat roofs, white or light grey, with shadows."""
    rgb, painted, outline = rectangular_pad(rng, size, (0.5, 0.9), (120, 120, 118), 8)
    h, w = painted.shape
    n = int(rng.integers(2, 5))
    for i in range(n):
        x0, x1 = int(i * w / n + 8), int((i + 1) * w / n - 14)
        y0, y1 = int(rng.uniform(0.05, 0.3) * h), int(rng.uniform(0.7, 0.95) * h)
        cv2.rectangle(rgb, (x0 + 6, y0 + 6), (x1 + 6, y1 + 6), (60, 60, 60), -1)
        cv2.rectangle(rgb, (x0, y0), (x1, y1), jitter(rng, (225, 225, 222), 15), -1)
    return ObjectPatch(rgb, painted, outline)


DRAWERS = {
    "football_field": draw_football_field, "baseball_field": draw_baseball_field,
    "tennis_courts": draw_tennis_courts, "parking_lot": draw_parking_lot, "airport": draw_airport,
    "lake": draw_lake, "residential": draw_residential, "oil_tanks": draw_oil_tanks,
    "ships": draw_ships, "bare_land": draw_bare_land,
    "grass_field": draw_grass_field, "concrete": draw_concrete, "buildings": draw_buildings,
}
# Longer side in pixels (min, max) at scale 1 (a scene of about 2500 px).
SIZES = {
    "football_field": (550, 800), "baseball_field": (550, 800), "tennis_courts": (500, 700),
    "parking_lot": (450, 800), "airport": (900, 1300), "lake": (600, 1100), "bridge": (0, 0),
    "residential": (600, 950), "oil_tanks": (450, 750), "ships": (500, 750), "bare_land": (600, 1000),
    "grass_field": (400, 700), "concrete": (400, 800), "buildings": (400, 700),
}


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------

@dataclass
class SceneObject:
    kind: str
    polygon: np.ndarray  # (n, 2) float (x, y) in scene pixels
    attributes: dict


@dataclass
class Scene:
    """A generated scene.

    Attributes:
        rgb: uint8 ``(H, W, 3)`` image.
        labels: uint8 ``(H, W)`` label mask (``LABELS``): which kind painted each pixel last.
        objects: the queryable objects with their polygons.
    """
    rgb: np.ndarray
    labels: np.ndarray
    objects: list


def background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Lawn and forest mosaic: uint8 RGB ``(H, W, 3)`` and its labels (``LABELS['lawn'|'forest']``).

    Built at quarter resolution and upsampled, so a 10000 x 10000 scene takes about a second.
    """
    lh, lw = height // 4 + 1, width // 4 + 1
    forest = smooth_field(rng, (lh, lw), 200) > 0.55
    crowns = smooth_field(rng, (lh, lw), 3)
    lawn_shade = smooth_field(rng, (lh, lw), 60)
    lawn_colour = np.array([100, 140, 65], np.float32)
    forest_colour = np.array([45, 80, 40], np.float32)
    low = np.where(forest[..., None], forest_colour * (0.6 + 0.8 * crowns[..., None]),
                   lawn_colour * (0.85 + 0.3 * lawn_shade[..., None]))
    rgb = cv2.resize(np.clip(low, 0, 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(np.where(forest, LABELS["forest"], LABELS["lawn"]).astype(np.uint8), (width, height),
                        interpolation=cv2.INTER_NEAREST)
    grain = rng.integers(-6, 7, size=(512, 512), dtype=np.int16)  # fine grain, tiled to save time
    row_of_grain = np.tile(grain, (1, width // 512 + 1))[:, :width, None]
    for r0 in range(0, height, 512):  # a band of rows at a time: int16 copies of a 10000 px scene are large
        band = rgb[r0:r0 + 512]
        band[:] = np.clip(band.astype(np.int16) + row_of_grain[:len(band)], 0, 255)
    return rgb, labels


def river_polygon(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float, np.ndarray]:
    """A meandering vertical river: its outline, its width and its centre line ``x(y)`` per row."""
    river_w = rng.uniform(140, 240)
    x0 = rng.uniform(0.25, 0.75) * width
    period = rng.uniform(1.5, 3.0) * max(height, 2000)
    ys = np.arange(height, dtype=np.float64)
    centre = x0 + 0.08 * width * np.sin(2 * np.pi * ys / period + rng.uniform(0, 6))
    step = max(1, height // 200)
    left = np.stack([centre[::step] - river_w / 2, ys[::step]], axis=1)
    right = np.stack([centre[::step] + river_w / 2, ys[::step]], axis=1)
    return np.concatenate([left, right[::-1]]), river_w, centre


def sea_polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sea along the right edge with a wavy coast, as an outline."""
    depth = rng.uniform(0.25, 0.35) * width
    ys = np.linspace(0, height - 1, 60)
    coast = width - depth + 0.03 * width * np.sin(ys / height * 2 * np.pi * rng.uniform(1, 2) + rng.uniform(0, 6))
    return np.concatenate([np.stack([coast, ys], axis=1), [[width + 10, height + 10], [width + 10, -10]]])


def draw_roads(rng: np.random.Generator, rgb: np.ndarray, labels: np.ndarray, count: int) -> None:
    """Straight grey roads with a dashed centre line across the scene (in place)."""
    height, width = labels.shape
    for i in range(count):
        thickness = int(rng.integers(30, 60))
        if i % 2 == 0:  # alternate roughly horizontal and vertical roads
            y0, y1 = rng.uniform(0.1, 0.9, 2) * height
            p0, p1 = (0, int(y0)), (width - 1, int(y0 + 0.15 * (y1 - y0)))
        else:
            x0, x1 = rng.uniform(0.1, 0.9, 2) * width
            p0, p1 = (int(x0), 0), (int(x0 + 0.15 * (x1 - x0)), height - 1)
        cv2.line(rgb, p0, p1, jitter(rng, (128, 128, 128), 8), thickness)
        cv2.line(labels, p0, p1, LABELS["road"], thickness)
        cv2.line(rgb, p0, p1, (225, 225, 215), 2, lineType=cv2.LINE_4)


class Occupancy:
    """Coarse grid of the scene (cells of ``cell`` pixels) recording where objects or water are."""

    def __init__(self, height: int, width: int, cell: int = 16):
        self.cell = cell
        self.grid = np.zeros((height // cell + 2, width // cell + 2), bool)

    def _cells(self, x0, y0, x1, y1):
        c = self.cell
        return slice(max(0, int(y0) // c), max(0, int(y1) // c + 1)), slice(max(0, int(x0) // c), max(0, int(x1) // c + 1))

    def free(self, x0, y0, x1, y1) -> bool:
        return not self.grid[self._cells(x0, y0, x1, y1)].any()

    def take(self, x0, y0, x1, y1) -> None:
        self.grid[self._cells(x0, y0, x1, y1)] = True

    def take_polygon(self, polygon: np.ndarray) -> None:
        small = np.round(np.asarray(polygon) / self.cell).astype(np.int32)
        cv2.fillPoly(self.grid.view(np.uint8), [small], 1)
        self.grid = cv2.dilate(self.grid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)


def paste(scene_rgb, scene_labels, patch: ObjectPatch, x: int, y: int, label: int) -> np.ndarray:
    """Paste ``patch`` with its top-left corner at (x, y) (in place); returns its polygon in scene pixels."""
    h, w = patch.painted.shape
    target = scene_rgb[y:y + h, x:x + w]
    target[patch.painted] = patch.rgb[patch.painted]
    scene_labels[y:y + h, x:x + w][patch.painted] = label
    return patch.polygon + [x, y]


def orient(rng: np.random.Generator, patch: ObjectPatch) -> ObjectPatch:
    """The patch turned by a random multiple of 90 degrees (polygon turned with it)."""
    k = int(rng.integers(4))
    rgb, painted, poly = patch.rgb, patch.painted, patch.polygon.astype(np.float64)
    for _ in range(k):  # np.rot90 counter-clockwise: (x, y) -> (y, w - 1 - x)
        w = rgb.shape[1]
        rgb, painted = np.rot90(rgb), np.rot90(painted)
        poly = np.stack([poly[:, 1], w - 1 - poly[:, 0]], axis=1)
    return ObjectPatch(np.ascontiguousarray(rgb), np.ascontiguousarray(painted), poly, patch.attributes)


def place(rng, occupancy: Occupancy, height: int, width: int, h: int, w: int, margin: int,
          region: np.ndarray | None = None, tries: int = 60):
    """A random free top-left corner for an ``h`` x ``w`` box (``margin`` pixels clear around it), or None.

    ``region`` (bool coarse grid) restricts the box centre to where it is True (e.g. the sea).
    """
    for _ in range(tries):
        x = int(rng.integers(margin, max(margin + 1, width - w - margin)))
        y = int(rng.integers(margin, max(margin + 1, height - h - margin)))
        if x + w > width or y + h > height:
            continue
        if region is not None:
            gy, gx = (y + h // 2) // occupancy.cell, (x + w // 2) // occupancy.cell
            corners = [(y // occupancy.cell, x // occupancy.cell), ((y + h) // occupancy.cell, (x + w) // occupancy.cell),
                       (y // occupancy.cell, (x + w) // occupancy.cell), ((y + h) // occupancy.cell, x // occupancy.cell)]
            if not region[gy, gx] or not all(region[cy, cx] for cy, cx in corners):
                continue
        if occupancy.free(x - margin, y - margin, x + w + margin, y + h + margin):
            return x, y
    return None


def generate_scene(seed, height: int, width: int, max_per_kind: int = 2) -> Scene:
    """One scene of ``height`` x ``width`` pixels from ``seed`` (an int or a sequence of ints).

    Objects of the same kind are at least 1500 px apart, so each can get its own attention centre
    (the evaluator's maximum filter is 1000 px wide).
    """
    rng = np.random.default_rng(seed)
    rgb, labels = background(rng, height, width)
    occupancy = Occupancy(height, width)
    scale = float(np.clip(min(height, width) / 2500, 0.75, 1.2))
    draw_roads(rng, rgb, labels, int(rng.integers(1, 4)) + (max(height, width) > 5000) * 2)
    objects: list[SceneObject] = []
    water = rng.random()
    if water < 0.35:  # river with one or two bridges
        poly, river_w, centre = river_polygon(rng, height, width)
        cv2.fillPoly(rgb, [np.round(poly).astype(np.int32)], jitter(rng, (30, 45, 80), 6))
        cv2.fillPoly(labels, [np.round(poly).astype(np.int32)], LABELS["river"])
        occupancy.take_polygon(poly)
        bridge_rows = rng.uniform(0.2, 0.8, 1 + (height > 5000)) * height
        for row in sorted(bridge_rows):
            y = int(row)
            half = river_w / 2 + 70
            thick = int(rng.integers(30, 48))
            x0, x1 = centre[y] - half, centre[y] + half
            if any(abs(o.polygon[:, 1].mean() - y) < 1500 for o in objects):
                continue
            cv2.rectangle(rgb, (int(x0), y + 6), (int(x1), y + thick + 6), (25, 30, 40), -1)  # shadow
            cv2.rectangle(rgb, (int(x0), y), (int(x1), y + thick), jitter(rng, (200, 200, 195), 10), -1)
            cv2.rectangle(labels, (int(x0), y), (int(x1), y + thick), LABELS["bridge"], -1)
            pad = 200
            bridge_poly = box_polygon(x0 - 20, y - pad, x1 + 20, y + thick + pad)
            objects.append(SceneObject("bridge", bridge_poly, {}))
            occupancy.take(x0 - 200, y - 300, x1 + 200, y + thick + 300)
        sea_region = None
    elif water < 0.7:  # sea on one side, with ships
        poly = sea_polygon(rng, height, width)
        cv2.fillPoly(rgb, [np.round(poly).astype(np.int32)], jitter(rng, (20, 30, 50), 6))
        cv2.fillPoly(labels, [np.round(poly).astype(np.int32)], LABELS["sea"])
        sea_region = np.zeros_like(occupancy.grid)
        cv2.fillPoly(sea_region.view(np.uint8), [np.round(poly / occupancy.cell).astype(np.int32)], 1)
        sea_region = cv2.erode(sea_region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        occupancy.take_polygon(poly)
    else:
        sea_region = None

    land_kinds = [k for k in KINDS if k not in ("bridge", "ships")]
    order = list(rng.permutation(land_kinds))
    if sea_region is not None:
        order.insert(0, "ships")
    roofs = list(rng.choice(list(ROOF_COLOURS), size=int(rng.integers(1, 4)), replace=False))
    max_objects = len(objects) + max(2, round(rng.uniform(4.5, 7) * height * width / 2500 ** 2))  # room for distractors
    for kind in order * max_per_kind:
        if len(objects) >= max_objects:
            break
        lo, hi = SIZES[kind]
        size = rng.uniform(lo, hi) * scale
        patch = draw_residential(rng, size, roofs) if kind == "residential" else DRAWERS[kind](rng, size)
        patch = orient(rng, patch)
        h, w = patch.painted.shape
        if kind == "ships":  # on the sea, which the land occupancy marks as taken
            spot = place(rng, Occupancy(height, width), height, width, h, w, 20, region=sea_region)
        else:
            spot = place(rng, occupancy, height, width, h, w, margin=60)
        if spot is None:
            continue
        x, y = spot
        centre = np.array([x + w / 2, y + h / 2])
        if any(o.kind == kind and np.hypot(*(o.polygon.mean(0) - centre)) < 1500 for o in objects):
            continue
        polygon = paste(rgb, labels, patch, x, y, LABELS[kind])
        occupancy.take(x, y, x + w, y + h)
        objects.append(SceneObject(kind, polygon, patch.attributes))
    add_distractors(rng, rgb, labels, occupancy, objects, scale)
    return Scene(rgb, labels, objects)


def add_distractors(rng, rgb, labels, occupancy: Occupancy, objects: list, scale: float) -> None:
    """Distractors (in place, not added to ``objects``), most of them 40-120 px beside a queried object."""
    height, width = labels.shape
    count = int(rng.integers(3, 6)) * max(1, round(height * width / 2500 ** 2))
    for _ in range(count):
        kind = DISTRACTOR_KINDS[rng.integers(len(DISTRACTOR_KINDS))]
        lo, hi = SIZES[kind]
        patch = orient(rng, DRAWERS[kind](rng, rng.uniform(lo, hi) * scale))
        h, w = patch.painted.shape
        spot = None
        if objects and rng.random() < 0.7:
            anchor = objects[rng.integers(len(objects))].polygon
            spot = place_beside(rng, occupancy, height, width, h, w, anchor)
        if spot is None:
            spot = place(rng, occupancy, height, width, h, w, margin=30)
        if spot is not None:
            paste(rgb, labels, patch, *spot, LABELS[kind])
            occupancy.take(spot[0], spot[1], spot[0] + w, spot[1] + h)


def place_beside(rng, occupancy: Occupancy, height: int, width: int, h: int, w: int, anchor: np.ndarray,
                 tries: int = 30):
    """A free top-left corner for an ``h`` x ``w`` box 40-120 px to one side of ``anchor``'s bounding box."""
    x0, y0 = anchor.min(0)
    x1, y1 = anchor.max(0)
    for _ in range(tries):
        gap = rng.uniform(40, 120)
        side = rng.integers(4)
        if side == 0:
            x, y = x1 + gap, rng.uniform(y0 - h / 2, y1 - h / 2)
        elif side == 1:
            x, y = x0 - gap - w, rng.uniform(y0 - h / 2, y1 - h / 2)
        elif side == 2:
            x, y = rng.uniform(x0 - w / 2, x1 - w / 2), y1 + gap
        else:
            x, y = rng.uniform(x0 - w / 2, x1 - w / 2), y0 - gap - h
        x, y = int(x), int(y)
        if 0 <= x and 0 <= y and x + w < width and y + h < height and occupancy.free(x + 8, y + 8, x + w - 8, y + h - 8):
            return x, y
    return None


@dataclass
class Sample:
    caption: str
    polygons: list  # list of (n, 2) float arrays


def scene_samples(rng: np.random.Generator, scene: Scene, count: int) -> list[Sample]:
    """``count`` captions for distinct object kinds of ``scene`` (fewer if it has fewer kinds).

    A caption refers to every object of its kind in the scene, so all their polygons go with it.
    """
    kinds = sorted({o.kind for o in scene.objects}, key=KINDS.index)
    chosen = rng.permutation(kinds)[:count]
    samples = []
    for kind in sorted(chosen, key=KINDS.index):
        instances = [o for o in scene.objects if o.kind == kind]
        attributes = dict(instances[0].attributes)
        if len(instances) > 1:
            attributes.pop("n", None)  # several groups: no single count is right
        samples.append(Sample(make_caption(rng, kind, attributes), [o.polygon for o in instances]))
    return samples
