"""TileGrid arithmetic and coverage (the tile location map)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesift import ConfigError, TileGrid
from slidesift.tiles import stride_for_overlap


@pytest.mark.parametrize(
    ("tile", "overlap", "stride"),
    [(400, 0.8, 80), (400, 0.96, 16), (400, 0.5, 200), (200, 0.0, 200), (100, 0.999, 1)],
)
def test_stride_for_overlap(tile: int, overlap: float, stride: int) -> None:
    assert stride_for_overlap(tile, overlap) == stride


def test_paper_grid_has_3692_tiles() -> None:
    grid = TileGrid.from_overlap((4500, 6000), tile=400, overlap=0.8)
    assert grid.grid_shape == (52, 71)
    assert len(grid) == 3692
    assert grid.block == 80
    assert grid.covered_shape == (4480, 6000)


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5, float("nan")])
def test_overlap_outside_unit_interval_is_refused(overlap: float) -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        TileGrid.from_overlap((500, 500), tile=100, overlap=overlap)


def test_tile_larger_than_thumbnail_is_refused() -> None:
    with pytest.raises(ConfigError, match="shorter side") as err:
        TileGrid.from_overlap((300, 1000), tile=400, overlap=0.5)
    assert "400" in str(err.value)


@pytest.mark.parametrize(("tile", "stride"), [(0, 10), (10, 0), (-5, 2)])
def test_non_positive_geometry_is_refused(tile: int, stride: int) -> None:
    with pytest.raises(ConfigError):
        TileGrid.from_stride((100, 100), tile=tile, stride=stride)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 120), w=st.integers(1, 120), tile=st.integers(1, 60), stride=st.integers(1, 70)
)
def test_tiles_lie_inside_and_cover_the_grid(h: int, w: int, tile: int, stride: int) -> None:
    if tile > min(h, w):
        with pytest.raises(ConfigError):
            TileGrid.from_stride((h, w), tile=tile, stride=stride)
        return
    grid = TileGrid.from_stride((h, w), tile=tile, stride=stride)
    xy = grid.th_xy()
    assert len(xy) == len(grid) == grid.n_rows * grid.n_cols
    assert (xy >= 0).all()
    assert (xy[:, 0] + tile <= w).all() and (xy[:, 1] + tile <= h).all()
    # one more tile would not fit
    assert grid.n_cols * stride + tile > w and grid.n_rows * stride + tile > h
    boxes = grid.l0_boxes((2.5, 3.0))
    assert np.allclose(boxes[:, 0], xy[:, 0] * 2.5) and np.allclose(boxes[:, 3], tile * 3.0)


def naive_coverage(grid: TileGrid, values: np.ndarray) -> np.ndarray:
    out = np.zeros(grid.shape)
    for (x, y), v in zip(grid.th_xy(), values.ravel(), strict=True):
        out[y : y + grid.tile, x : x + grid.tile] += v
    return out


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(5, 80),
    w=st.integers(5, 80),
    tile=st.integers(1, 5),
    stride=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_coverage_equals_naive_painter(h, w, tile, stride, seed) -> None:
    grid = TileGrid.from_stride((h, w), tile=tile, stride=stride)
    rng = np.random.default_rng(seed)
    values = rng.random(grid.grid_shape)
    assert np.allclose(grid.coverage(values), naive_coverage(grid, values))
    keep = rng.random(grid.grid_shape) > 0.5
    assert np.array_equal(grid.location_map(keep), naive_coverage(grid, keep.astype(float)) > 0)


def test_coverage_rejects_wrong_shape() -> None:
    grid = TileGrid.from_stride((50, 50), tile=10, stride=5)
    with pytest.raises(ConfigError):
        grid.coverage(np.ones((3, 3)))
