"""predict.core by value, without ../shared: tile geometry, the per-cell mean, normalisation, the filters,
pipelines as data. Every expectation is worked out by hand (in the comments) or by a naive reference."""
import cv2
import numpy as np
import pytest

from predict.core import tiling
from predict.core.heatmap import MapFilter, mean_tile_scores, normalise_to_uint8, probability_map
from predict.core.pipelines import PIPELINES, Refinement, get_pipeline
from predict.encoders.base import EncoderSpecModel
from predict.localisation.maps import load_image, score_tiles
from predict.localisation.vectors import TileVectorStore


def test_axis_intervals():
    # starts 0, 256; the second reaches the edge (256 + 256 >= 512) and stays (256, 512)
    assert tiling.axis_intervals(512, 256, 0) == [(0, 256), (256, 512)]
    # starts 0, 256, 512: 512 + 256 >= 600 is moved back to (600 - 256, 600)
    assert tiling.axis_intervals(600, 256, 0) == [(0, 256), (256, 512), (344, 600)]
    # the half-offset grid: starts 128, 384; 384 + 256 >= 600
    assert tiling.axis_intervals(600, 256, 128) == [(128, 384), (344, 600)]
    assert tiling.axis_intervals(256, 256, 0) == [(0, 256)]
    assert tiling.axis_intervals(200, 256, 0) == [(-56, 200)]


def test_grid_tiles_columns_outer_rows_inner():
    rows, cols = [(0, 256), (256, 512)], [(0, 256), (256, 512), (344, 600)]
    assert tiling.grid_tiles(512, 600, 256) == [(r0, r1, c0, c1) for c0, c1 in cols for r0, r1 in rows]


def test_multiscale_tiles_union_of_grids():
    # offset 0: rows/cols {(0,256), (256,512)}; offset 128: {(128,384), (256,512)}; (256,512)^2 is in both
    base = {(a, b, c, d) for a, b in [(0, 256), (256, 512)] for c, d in [(0, 256), (256, 512)]}
    shifted = {(a, b, c, d) for a, b in [(128, 384), (256, 512)] for c, d in [(128, 384), (256, 512)]}
    tiles = tiling.multiscale_tiles(512, 512, [256])
    assert tiles == sorted(base | shifted) and len(tiles) == 7
    assert tiling.multiscale_tiles(512, 512, [256, 512], half_offset=False) == sorted(base | {(0, 512, 0, 512)})


def test_effective_box():
    assert tiling.effective_box((0, 256, 344, 600), 512, 600) == (0, 256, 344, 600)
    assert tiling.effective_box((-56, 200, 100, 356), 200, 300) == (144, 200, 100, 300)  # -56 counts from the end
    assert tiling.effective_box((-300, 200, 0, 10), 200, 300) == (0, 200, 0, 10)  # past the start: from 0


def test_keep_count():
    assert tiling.keep_count(20, 0.15) == 4  # int(3.0) + 1
    assert tiling.keep_count(6, 0.15) == 1  # int(0.9) + 1
    assert tiling.keep_count(100, 0.15) == 16


def test_refinement_boxes():
    # points (0,0) (0,512) (512,0) (512,512) (128,128) (128,384) (384,128) (384,384) (256,256), half 64:
    # start p - 64 if positive else 0, end start + 128
    assert tiling.refinement_boxes((0, 512, 0, 512), 1000, 1000, [64]) == [
        (0, 128, 0, 128), (0, 128, 448, 576), (448, 576, 0, 128), (448, 576, 448, 576),
        (64, 192, 64, 192), (64, 192, 320, 448), (320, 448, 64, 192), (320, 448, 320, 448), (192, 320, 192, 320)]
    # at the far edge the end is clipped, not the box moved: corner (1000, 1000), half 128 -> (872, 1000)
    boxes = tiling.refinement_boxes((488, 1000, 488, 1000), 1000, 1000, [64, 128])
    assert len(boxes) == 18 and boxes[6:8] == [(936, 1000, 936, 1000), (872, 1000, 872, 1000)]


def test_usable_steps():
    with pytest.warns(UserWarning, match=r"step\(s\) \[768\]"):
        assert tiling.usable_steps(600, 900, [256, 512, 768]) == [256, 512]
    with pytest.raises(ValueError, match="smaller than every tile step"):
        tiling.usable_steps(200, 900, [256, 512])


def test_parse_steps_rejects_bad_text():
    with pytest.raises(ValueError, match="expected integers"):
        tiling.parse_steps("256-512")
    with pytest.raises(ValueError, match="positive"):
        tiling.parse_steps([0])


def test_mean_tile_scores_overlap_and_uncovered_cells():
    # columns 0: tile A only (1); 1: A and B ((1 + 3) / 2); 2: B only (3); 3: no tile (0)
    cells = mean_tile_scores([(0, 2, 0, 2), (0, 2, 1, 3)], [1.0, 3.0], 2, 4)
    assert cells.row_edges.tolist() == [0, 2] and cells.col_edges.tolist() == [0, 1, 2, 3, 4]
    assert cells.values.tolist() == [[1.0, 2.0, 3.0, 0.0]]
    assert cells.expand(cells.values).tolist() == [[1.0, 2.0, 3.0, 0.0]] * 2


def test_mean_tile_scores_equals_a_naive_per_pixel_mean():
    rng = np.random.default_rng(7)
    height, width = 23, 31
    r0 = rng.integers(0, height - 1, 40)
    c0 = rng.integers(0, width - 1, 40)
    boxes = np.stack([r0, rng.integers(r0 + 1, height + 1), c0, rng.integers(c0 + 1, width + 1)], axis=1)
    scores = rng.normal(size=40)
    sums, counts = np.zeros((height, width)), np.zeros((height, width))
    for (a, b, c, d), score in zip(boxes, scores):  # the original's per-pixel float64 arrays
        sums[a:b, c:d] += score
        counts[a:b, c:d] += 1
    naive = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    cells = mean_tile_scores(boxes, scores, height, width)
    assert np.array_equal(cells.expand(cells.values), naive)  # same additions in the same order: bit-equal


def test_normalise_to_uint8_truncates():
    # (v - 2) / 4 * 255: 0, 127.5 -> 127, 255
    assert normalise_to_uint8(np.array([2.0, 4.0, 6.0])).tolist() == [0, 127, 255]
    assert normalise_to_uint8(np.array([[-1.0, 0.0], [1.0, -1.0]])).tolist() == [[0, 127], [255, 0]]
    with pytest.warns(UserWarning, match="all tile scores are equal"):
        assert normalise_to_uint8(np.full((2, 3), 0.4)).tolist() == [[0, 0, 0]] * 2


def test_map_filters_are_opencv_blurs():
    gray = np.random.default_rng(3).integers(0, 256, (40, 50), dtype=np.uint8)
    assert np.array_equal(MapFilter(median=5)(gray), cv2.medianBlur(gray, 5))
    assert np.array_equal(MapFilter(gaussian=7)(gray), cv2.GaussianBlur(gray, (7, 7), 0, 0))
    for bad in ({}, {"median": 5, "gaussian": 5}, {"median": 4}, {"gaussian": -1}):
        with pytest.raises(ValueError):
            MapFilter(**bad)


def test_a_variant_pipeline_changes_only_what_it_replaces():
    variant = PIPELINES["v1"].replace(name="v1-gauss", map_filter=MapFilter(gaussian=9), steps="256_512")
    assert variant.steps == (256, 512) and variant.map_filter == MapFilter(gaussian=9)
    assert variant.half_offset and variant.refinement is None
    assert PIPELINES["v1"].map_filter == MapFilter(median=251) and PIPELINES["v1"].steps == (256, 512, 768)
    cells = mean_tile_scores([(0, 20, 0, 20), (10, 30, 5, 40)], [0.2, 0.9], 30, 40)
    unfiltered = cells.expand(normalise_to_uint8(cells.values))
    assert np.array_equal(probability_map(cells, variant.map_filter), cv2.GaussianBlur(unfiltered, (9, 9), 0, 0))
    assert get_pipeline(variant) is variant
    with pytest.raises(ValueError, match="unknown pipeline 'v3'"):
        get_pipeline("v3")


def test_first_stage_tiles():
    with pytest.warns(UserWarning, match=r"\[768\]"):
        assert PIPELINES["v1"].first_stage_tiles(600, 900) == tiling.multiscale_tiles(600, 900, [256, 512])
    # v2 keeps a step longer than the image: rows (-112, 400); columns (0, 512), (88, 600)
    with pytest.warns(UserWarning, match="stretching strips"):
        assert PIPELINES["v2"].first_stage_tiles(400, 600) == [(-112, 400, 0, 512), (-112, 400, 88, 600)]
    assert PIPELINES["v2"].first_stage_tiles(1024, 1024) == [(0, 512, 0, 512), (0, 512, 512, 1024),
                                                           (512, 1024, 0, 512), (512, 1024, 512, 1024)]


class ColumnEncoder(EncoderSpecModel):
    """Scores a tile by its mean red value; on an image whose red channel grows with the column, tiles further
    right score higher."""

    def image_encoder(self, tiles):
        return np.asarray(tiles, np.float64)[..., 0].mean(axis=(1, 2))[:, None]

    def text_encoder(self, text):
        return np.ones(1)

    def cosine_sim(self, image_vectors, text_vector):
        return np.asarray(image_vectors, np.float64)[:, 0]


def test_v2_refines_the_best_tiles_with_boxes():
    # 1024 x 2048: eight 512 tiles; keep int(0.15 * 8) + 1 = 2, the two rightmost (columns 1536:2048, equal
    # scores, kept in tile order), then their deduplicated boxes
    rgb = np.zeros((1024, 2048, 3), np.uint8)
    rgb[..., 0] = (np.arange(2048) // 8).astype(np.uint8)
    spec = PIPELINES["v2"].replace(name="v2-test", refinement=Refinement(keep_fraction=0.15, box_half_sizes=(64,)),
                                   shuffled_copies=0)
    encoder = ColumnEncoder()
    tiles, scores = score_tiles(load_image(rgb), "x", encoder, spec, TileVectorStore(encoder))
    assert tiles[:2] == [(0, 512, 1536, 2048), (512, 1024, 1536, 2048)]
    boxes = list(dict.fromkeys(box for tile in tiles[:2] for box in tiling.refinement_boxes(tile, 1024, 2048, [64])))
    assert tiles[2:] == boxes and len(boxes) == 16  # 2 x 9 boxes, less the 2 corners the tiles share
    assert scores.shape == (len(tiles),) and scores[0] == scores[1] > scores[2:].min()
