"""The streaming pyramid writer and the window-exact rasterizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesift.errors import ConfigError
from slidesift.io.polygons import Polygon, rasterize
from slidesift.io.tiff import halve, pyramid_shapes, write_pyramidal_tiff, write_tiled_pyramid


def halve_reference(a: np.ndarray) -> np.ndarray:
    """Obvious 2 x 2 mean with edge repetition, pixel by pixel."""
    h, w = a.shape[:2]
    out = np.zeros(((h + 1) // 2, (w + 1) // 2, *a.shape[2:]), np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            rows = [min(2 * i, h - 1), min(2 * i + 1, h - 1)]
            cols = [min(2 * j, w - 1), min(2 * j + 1, w - 1)]
            block = a[np.ix_(rows, cols)].astype(int)
            out[i, j] = (block.sum(axis=(0, 1)) + 2) // 4
    return out


@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_halve_matches_the_obvious_box_mean(h: int, w: int, seed: int) -> None:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert np.array_equal(halve(a), halve_reference(a))
    assert np.array_equal(halve(a[..., 0], nearest=True), a[::2, ::2, 0])


def test_pyramid_shapes_halve_until_one_tile() -> None:
    assert pyramid_shapes((1000, 3000), tile=256) == [
        (1000, 3000), (500, 1500), (250, 750), (125, 375), (63, 188),
    ]  # fmt: skip
    assert pyramid_shapes((200, 100), tile=256) == [(200, 100)]


@pytest.mark.parametrize("shape", [(700, 1100), (256, 512), (513, 257)])
def test_streamed_levels_equal_halved_levels(tmp_path: Path, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    asked: list[tuple[int, int, int, int]] = []

    def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        asked.append((y0, y1, x0, x1))
        return img[y0:y1, x0:x1]

    path = write_tiled_pyramid(tmp_path / "x.tif", shape, source, compression="deflate",
                               tile=64, block_width=200, mpp=0.5)  # fmt: skip
    with tifffile.TiffFile(path) as tf:
        pages = [p.asarray() for p in tf.pages]
    expect = img
    assert len(pages) == len(pyramid_shapes(shape, tile=64))
    for page in pages:
        assert np.array_equal(page, expect)
        expect = halve(expect)
    # every level-0 pixel was asked for exactly once
    covered = np.zeros(shape, int)
    for y0, y1, x0, x1 in asked:
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()
    with openslide.OpenSlide(path) as s:
        assert s.level_count == len(pages)
        assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)


def test_aperio_flavor_is_an_svs_to_openslide(tmp_path: Path) -> None:
    img = np.full((600, 900, 3), 200, np.uint8)
    path = write_pyramidal_tiff(tmp_path / "x.svs", img, flavor="aperio", mpp=0.25, tile=128)
    with openslide.OpenSlide(path) as s:
        assert s.properties["openslide.vendor"] == "aperio"
        assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert s.level_dimensions[0] == (900, 600)


def test_a_source_of_the_wrong_shape_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    def bad(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.zeros((y1 - y0, x1 - x0 + 1, 3), np.uint8)

    with pytest.raises(ConfigError, match="source block"):
        write_tiled_pyramid(tmp_path / "x.tif", (300, 300), bad, tile=64)
    assert list(tmp_path.iterdir()) == []


def inside_reference(rings: list[np.ndarray], x: float, y: float) -> bool:
    """Even-odd point-in-polygon by ray crossing, one point at a time."""
    inside = False
    for ring in rings:
        n = len(ring)
        for k in range(n):
            (xa, ya), (xb, yb) = ring[k], ring[(k + 1) % n]
            if (ya <= y) != (yb <= y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
                inside = not inside
    return inside


@given(st.integers(0, 2**31), st.floats(0.5, 3.0))
@settings(max_examples=25, deadline=None)
def test_rasterize_is_the_pixel_centre_rule_and_window_exact(seed: int, s: float) -> None:
    rng = np.random.default_rng(seed)
    rings = [rng.uniform(0, 60 * s, (int(rng.integers(3, 9)), 2)) for _ in range(2)]
    poly = Polygon(tuple(rings), 1)
    whole = rasterize([poly], (40, 30), (s, s))
    for i in range(30):
        for j in range(40):
            assert whole[i, j] == inside_reference(rings, (j + 0.5) * s, (i + 0.5) * s)
    ox, oy = int(rng.integers(0, 30)), int(rng.integers(0, 20))
    window = rasterize([poly], (10, 10), (s, s), origin=(ox, oy))
    assert np.array_equal(window, whole[oy : oy + 10, ox : ox + 10])
