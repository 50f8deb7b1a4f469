"""Mask assembly against a naive per-tile painter; smoothing and shrinking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesift.assemble import assemble, shrink, smooth
from slidesift.tiles import TileGrid

CLASSES3 = ("non-tumor", "a", "b")


def paint(grid: TileGrid, keep: np.ndarray, probs: np.ndarray, mode: str) -> np.ndarray:
    """The obvious loops: paint every tile's box pixel by pixel."""
    h, w = grid.shape
    t = grid.tile
    labels = np.argmax(probs, axis=-1)
    count = np.zeros((h, w))
    total = np.zeros((h, w))
    hits: dict[int, np.ndarray] = {k: np.zeros((h, w), bool) for k in range(probs.shape[-1])}
    for r in range(grid.n_rows):
        for c in range(grid.n_cols):
            y, x = r * grid.stride, c * grid.stride
            count[y : y + t, x : x + t] += 1
            if keep[r, c]:
                total[y : y + t, x : x + t] += 1 - probs[r, c, 0]
                hits[int(labels[r, c])][y : y + t, x : x + t] = True
    if mode == "mean":
        return (count > 0) & (total > 0.5 * count)
    if mode == "union":
        return np.any([hits[k] for k in hits if k > 0], axis=0)
    votes = {k: int(((labels == k) & keep).sum()) for k in range(1, probs.shape[-1])}
    best = min((-n, k) for k, n in votes.items())
    return hits[best[1]] if -best[0] > 0 else np.zeros((h, w), bool)


def test_mean_threshold_is_strict_a_pixel_at_exactly_half_is_not_tumor() -> None:
    """Mean assembly: tumor where the mean tumor probability is strictly above 0.5 (as a tile
    at p = 0.5 is labelled non-tumor by argmax)."""
    grid = TileGrid.from_stride((4, 6), tile=4, stride=2)  # tiles at x = 0 and x = 2
    keep = np.ones(grid.grid_shape, bool)

    def probs(*tumor: float) -> np.ndarray:
        p = np.array(tumor).reshape(grid.grid_shape)
        return np.stack([1 - p, p], axis=-1)

    got = assemble(grid, keep, probs(1.0, 0.0), ("non-tumor", "tumor"), mode="mean").mask
    # columns 0-1: only the first tile (1.0); 2-3: both (mean 0.5); 4-5: only the second (0.0)
    np.testing.assert_array_equal(got[0], [True, True, False, False, False, False])
    half = assemble(grid, keep, probs(0.5, 0.5), ("non-tumor", "tumor"), mode="mean").mask
    assert not half.any()
    above = assemble(grid, keep, probs(0.5 + 2**-20, 0.5), ("non-tumor", "tumor"), mode="mean")
    np.testing.assert_array_equal(above.mask[0], [True, True, True, True, False, False])
    # a sifted-out tile counts as probability 0 in the mean
    dropped = assemble(grid, np.array([[True, False]]), probs(0.75, 1.0), ("n", "t"), mode="mean")
    np.testing.assert_array_equal(dropped.mask[0], [True, True, False, False, False, False])


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(20, 70), w=st.integers(20, 70), tile=st.integers(4, 20),
    stride=st.integers(1, 12), seed=st.integers(0, 10_000),
    mode=st.sampled_from(["mean", "union", "dominant"]),
)  # fmt: skip
def test_assembly_equals_the_naive_painter(
    h: int, w: int, tile: int, stride: int, seed: int, mode: str
) -> None:
    tile = min(tile, h, w)
    grid = TileGrid.from_stride((h, w), tile=tile, stride=stride)
    rng = np.random.default_rng(seed)
    keep = rng.random(grid.grid_shape) < 0.6
    probs = rng.dirichlet([1, 1, 1], size=grid.grid_shape)
    got = assemble(grid, keep, probs, CLASSES3, mode=mode)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got.mask, paint(grid, keep, probs, mode))
    labels = np.argmax(probs, axis=-1)
    assert got.counts == {
        "a": int(((labels == 1) & keep).sum()),
        "b": int(((labels == 2) & keep).sum()),
    }


def test_binary_default_is_mean_probability() -> None:
    grid = TileGrid.from_stride((10, 10), tile=4, stride=2)
    keep = np.ones(grid.grid_shape, bool)
    probs = np.zeros((*grid.grid_shape, 2))
    probs[..., 0] = 1.0
    probs[0, 0] = (0.2, 0.8)
    a = assemble(grid, keep, probs, ("non-tumor", "tumor"))
    assert a.mode == "mean" and a.dominant == "tumor"
    # pixel (0, 0) is covered only by tile (0, 0): mean 0.8; pixel (2, 2) by 4 tiles: 0.2
    assert a.mask[0, 0] and not a.mask[2, 2]


def test_smooth_removes_small_specks_and_keeps_large_regions() -> None:
    mask = np.zeros((200, 200), bool)
    mask[20:120, 20:120] = True  # a 100-px square
    mask[160:165, 160:165] = True  # a 5-px speck
    out = smooth(mask, 31)
    assert not out[160:165, 160:165].any()
    assert out[40:100, 40:100].all()
    assert 0.95 < out.sum() / mask[20:120, 20:120].sum() <= 1.0
    np.testing.assert_array_equal(smooth(mask, 0), mask)
    with pytest.raises(ValueError):
        smooth(mask, -1)


def test_shrink_scales_each_region_about_its_centroid() -> None:
    mask = np.zeros((300, 300), bool)
    mask[50:150, 50:150] = True
    mask[200:240, 180:280] = True
    out = shrink(mask, 0.1)
    for sl in (np.s_[0:170, 0:170], np.s_[180:300, 160:300]):
        before, after = mask[sl], out[sl]
        assert after.sum() / before.sum() == pytest.approx(0.81, abs=0.03)
        ys, xs = np.nonzero(before)
        ya, xa = np.nonzero(after)
        assert abs(ys.mean() - ya.mean()) < 1 and abs(xs.mean() - xa.mean()) < 1
    assert not (out & ~mask).any()
    np.testing.assert_array_equal(shrink(mask, 0.0), mask)
