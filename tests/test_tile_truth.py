"""Raw held-out tiles: truth fractions, the labelling rule, and classification on raw pixels."""

from __future__ import annotations

import numpy as np
import pytest

from slidesift.errors import ConfigError
from slidesift.rails import Rails
from slidesift.sift import SiftSpec, measure_tiles, sift, to_gray
from slidesift.tile_truth import (
    RawTileRule,
    classify_raw_tiles,
    raw_tiles,
    score_raw_tiles,
    truth_fractions,
)
from slidesift.tiles import TileGrid


def _fractions_reference(pixels: np.ndarray, truth: np.ndarray, grid: TileGrid) -> np.ndarray:
    gray = to_gray(pixels)
    out = np.zeros(grid.grid_shape)
    for r in range(grid.n_rows):
        for c in range(grid.n_cols):
            y, x, t = r * grid.stride, c * grid.stride, grid.tile
            tissue = (gray[y : y + t, x : x + t] >= 15) & (gray[y : y + t, x : x + t] <= 235)
            tumor = tissue & truth[y : y + t, x : x + t]
            out[r, c] = tumor.sum() / tissue.sum() if tissue.sum() else 0.0
    return out


@pytest.mark.parametrize(("shape", "tile", "stride"), [((61, 83), 20, 7), ((40, 40), 40, 1),
                                                       ((97, 64), 16, 16)])  # fmt: skip
def test_truth_fractions_equal_a_per_tile_count(
    rng: np.random.Generator, shape: tuple[int, int], tile: int, stride: int
) -> None:
    pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    pixels[: shape[0] // 3] = 250  # a band of glass
    truth = rng.random(shape) < 0.4
    grid = TileGrid.from_stride(shape, tile=tile, stride=stride)
    got = truth_fractions(pixels, truth, grid, SiftSpec())
    np.testing.assert_allclose(got, _fractions_reference(pixels, truth, grid), atol=1e-12)


def test_labels_follow_the_rule_and_ambiguous_tiles_are_counted() -> None:
    # 4 tiles of 10 px in a row (stride 10); truth covers 0%, 30%, 60% and 100% of them
    pixels = np.full((10, 40, 3), 120, np.uint8)
    truth = np.zeros((10, 40), bool)
    truth[:, 17:20] = True
    truth[:, 24:30] = True
    truth[:, 30:] = True
    grid_args = {"tile": 10, "stride": 10, "spec": SiftSpec(), "rails": None}
    strict = raw_tiles([(pixels, truth, 1)], **grid_args, rule=RawTileRule(0.5, 0.25))
    # 0.3 and 0.6 lie within 0.25 of 0.5: left out
    assert strict.th_xy[:, 0].tolist() == [0, 30] and strict.label.tolist() == [0, 1]
    assert strict.ambiguous == 2
    every = raw_tiles([(pixels, truth, 2)], **grid_args, rule=RawTileRule(0.5, 0.0))
    assert every.label.tolist() == [0, 0, 2, 2] and every.ambiguous == 0
    np.testing.assert_allclose(every.fraction, [0.0, 0.3, 0.6, 1.0])
    # "at least half": a tile exactly half tumor is tumor
    half = np.zeros((10, 10), bool)
    half[:, :5] = True
    at_half = raw_tiles([(pixels[:, :10], half, 1)], **grid_args, rule=RawTileRule(0.5, 0.0))
    assert at_half.fraction.tolist() == [0.5] and at_half.label.tolist() == [1]
    assert "at least 0.5" in RawTileRule().describe() and "0.25 and 0.75" in (
        RawTileRule().describe()
    )
    with pytest.raises(ConfigError, match="margin"):
        RawTileRule(0.5, 1.0)


def test_raw_tiles_are_the_segmentation_sift(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    pixels[:, :50] = 250  # glass: background
    truth = np.zeros((120, 150), bool)
    spec = SiftSpec()
    grid = TileGrid.from_stride(pixels.shape[:2], tile=30, stride=15)
    stats = measure_tiles(pixels, grid, spec)
    rails = Rails(float(np.quantile(stats.entropy, 0.3)), float(stats.entropy.max()))
    got = raw_tiles([(pixels, truth, 1)], tile=30, stride=15, spec=spec, rails=rails)
    keep = sift(stats, rails).keep
    expected = grid.th_xy()[np.flatnonzero(keep.ravel())]
    np.testing.assert_array_equal(got.th_xy, expected)
    assert len(got) == int(keep.sum()) > 0 and not got.label.any()


def test_classifier_sees_the_raw_pixels_of_each_tile(rng: np.random.Generator) -> None:
    """Nothing is blacked out: each tile handed to the classifier is the slide's own pixels."""
    a = rng.integers(30, 220, (64, 80, 3), dtype=np.uint8)
    b = rng.integers(30, 220, (50, 50, 3), dtype=np.uint8)
    truth_a = np.zeros((64, 80), bool)
    truth_a[:, 40:] = True
    truth_b = np.ones((50, 50), bool)
    tiles = raw_tiles([(a, truth_a, 1), (b, truth_b, 1)], tile=16, stride=8, spec=SiftSpec(),
                      rails=None)  # fmt: skip
    seen: list[np.ndarray] = []

    def classify(batch: np.ndarray) -> np.ndarray:
        seen.extend(batch.copy())
        tumor = batch[..., 0].mean(axis=(1, 2)) > 127  # anything deterministic
        return np.stack([~tumor, tumor], axis=1).astype(np.float32)

    pred = classify_raw_tiles(tiles, [a, b], classify, tile=16, batch=5)
    assert len(seen) == len(tiles) == pred.size
    for k in range(len(tiles)):
        x, y = tiles.th_xy[k]
        img = (a, b)[int(tiles.slide[k])]
        np.testing.assert_array_equal(seen[k], img[y : y + 16, x : x + 16])
        assert pred[k] == int(img[y : y + 16, x : x + 16, 0].mean() > 127)
    assert {0, 1} <= set(tiles.label.tolist())


def test_scores_are_accuracy_and_mean_class_recall() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 0])
    s = score_raw_tiles(y, p, ambiguous=3)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.per_class == {0: 0.75, 1: 0.5}
    assert s.balanced_accuracy == pytest.approx(0.625)
    assert s.tiles == 6 and s.ambiguous == 3
    assert np.isnan(score_raw_tiles(np.empty(0, int), np.empty(0, int)).accuracy)
