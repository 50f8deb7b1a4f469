"""The sift engine equals the naive per-tile computation exactly, for every geometry and mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from slidesift import ConfigError, Rails, SiftSpec, TileGrid, measure_tiles, sift
from slidesift.sift import (
    entropy_bits,
    measure_tiles_reference,
    tile_histograms_reference,
    to_gray,
)

specs = st.builds(
    SiftSpec,
    background=st.sampled_from(["gray-limits", "peak-frequency"]),
    gray_low=st.integers(0, 60),
    gray_high=st.integers(200, 255),
    max_background=st.floats(0.0, 1.0),
    peak_k=st.integers(1, 12),
    entropy=st.sampled_from(["rgb", "gray"]),
)


def image(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "flat":  # few distinct values: many ties in the histograms
        return rng.integers(0, 3, (h, w, 3), dtype=np.uint8) * 120
    # background-heavy: white glass, black border, some tissue
    img = np.full((h, w, 3), 245, np.uint8)
    img[: h // 4] = 5
    img[h // 2 :, w // 3 :] = rng.integers(80, 220, (h - h // 2, w - w // 3, 3), dtype=np.uint8)
    return img


@settings(max_examples=120, deadline=None)
@given(
    h=st.integers(8, 90),
    w=st.integers(8, 90),
    tile=st.integers(1, 40),
    stride=st.integers(1, 45),
    kind=st.sampled_from(["noise", "flat", "glass"]),
    spec=specs,
    workers=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_engine_equals_naive_per_tile(h, w, tile, stride, kind, spec, workers, seed) -> None:
    tile = min(tile, h, w)
    grid = TileGrid.from_stride((h, w), tile=tile, stride=stride)
    pixels = image(np.random.default_rng(seed), h, w, kind)
    fast = measure_tiles(pixels, grid, spec, workers=workers)
    slow = measure_tiles_reference(pixels, grid, spec)
    assert fast.entropy.shape == grid.grid_shape
    assert np.array_equal(fast.entropy, slow.entropy)
    assert np.array_equal(fast.background, slow.background)
    assert np.array_equal(fast.keep_background, slow.keep_background)


def test_engine_equals_naive_on_paper_geometry_scaled(rng) -> None:
    """T=400, 80% overlap, at 1/4 scale: T=100, stride 20, on a 1500x1125 image."""
    pixels = rng.integers(0, 256, (1125, 1500, 3), dtype=np.uint8)
    grid = TileGrid.from_overlap(pixels.shape[:2], tile=100, overlap=0.8)
    fast = measure_tiles(pixels, grid)
    slow = measure_tiles_reference(pixels, grid)
    assert np.array_equal(fast.entropy, slow.entropy)
    assert np.array_equal(fast.background, slow.background)


def test_reference_histograms_are_the_tile_histograms(rng) -> None:
    pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    grid = TileGrid.from_stride((40, 50), tile=16, stride=8)
    ent, gray = tile_histograms_reference(pixels, grid)
    tile = pixels[8:24, 16:32]
    assert np.array_equal(ent[1, 2], np.bincount(tile.ravel(), minlength=256))
    assert ent[1, 2].sum() == 16 * 16 * 3 and gray[1, 2].sum() == 16 * 16


def test_entropy_matches_skimage(rng) -> None:
    from skimage.measure import shannon_entropy

    for _ in range(5):
        tile = rng.integers(0, rng.integers(2, 256), (64, 64, 3), dtype=np.uint8)
        hist = np.bincount(tile.ravel(), minlength=256)
        assert entropy_bits(hist) == pytest.approx(shannon_entropy(tile, base=2), abs=1e-9)


def test_entropy_bounds() -> None:
    assert entropy_bits(np.bincount(np.zeros(100, np.uint8), minlength=256)) == 0.0
    assert entropy_bits(np.ones(256, np.int64)) == pytest.approx(8.0)


def test_gray_is_bt601_luma_as_pillow(rng) -> None:
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.abs(to_gray(rgb).astype(int) - pil).max() <= 1
    assert to_gray(rgb).shape == (30, 40)


def test_background_fraction_semantics() -> None:
    pixels = np.full((20, 20, 3), 128, np.uint8)
    pixels[:5] = 255  # 25% white (> 235)
    pixels[5:9] = 10  # 20% black (< 15)
    pixels[9:10] = 235  # exactly 235: not background
    pixels[10:11] = 15  # exactly 15: not background
    grid = TileGrid.from_stride((20, 20), tile=20, stride=20)
    stats = measure_tiles(pixels, grid)
    assert stats.background[0, 0] == pytest.approx(0.45)
    assert stats.keep_background[0, 0]
    strict = measure_tiles(pixels, grid, SiftSpec(max_background=0.1))
    assert not strict.keep_background[0, 0]


def test_peak_frequency_background_flags_uniform_tiles() -> None:
    pixels = np.full((32, 32, 3), (180, 120, 170), np.uint8)  # a flat tinted "background"
    pixels[16:] = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    grid = TileGrid.from_stride((32, 32), tile=16, stride=16)
    stats = measure_tiles(pixels, grid, SiftSpec(background="peak-frequency", peak_k=3))
    assert stats.background[0].tolist() == [1.0, 1.0]  # flat: one grey value holds all
    assert (stats.background[1] < 0.1).all()
    # the grey limits would call the tinted tiles tissue
    assert (measure_tiles(pixels, grid).background[0] == 0).all()


def test_sift_applies_rails_and_background() -> None:
    rng = np.random.default_rng(2)
    pixels = np.full((60, 60, 3), 250, np.uint8)
    pixels[:, 20:40] = rng.integers(100, 110, (60, 20, 3), dtype=np.uint8)  # low entropy
    pixels[:, 40:] = rng.integers(0, 256, (60, 20, 3), dtype=np.uint8)  # high entropy
    grid = TileGrid.from_stride((60, 60), tile=20, stride=20)
    stats = measure_tiles(pixels, grid)
    rails = Rails(lo=7.0, hi=8.0)
    result = sift(stats, rails)
    assert result.keep_background[:, 0].sum() == 0
    assert result.keep.tolist() == [[False, False, True]] * 3
    assert sift(stats).keep.tolist() == [[False, True, True]] * 3
    summary = result.summary()
    assert summary["tiles"] == 9 and summary["kept_background"] == 6 and summary["kept"] == 3


def test_rails_mode_mismatch_is_refused(rng) -> None:
    pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    stats = measure_tiles(pixels, TileGrid.from_stride((20, 20), tile=10, stride=10))
    with pytest.raises(ConfigError, match="fitted on 'gray'"):
        sift(stats, Rails(1.0, 2.0, entropy="gray"))


@pytest.mark.parametrize(
    "kwargs",
    [{"background": "otsu"}, {"entropy": "lab"}, {"gray_low": 240, "gray_high": 200},
     {"max_background": 1.5}, {"peak_k": 0}],
)  # fmt: skip
def test_bad_sift_specs(kwargs) -> None:
    with pytest.raises(ConfigError):
        SiftSpec(**kwargs)


def test_image_grid_mismatch_is_refused(rng) -> None:
    pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    with pytest.raises(ConfigError):
        measure_tiles(pixels, TileGrid.from_stride((30, 30), tile=10, stride=10))
    with pytest.raises(ConfigError):
        measure_tiles(pixels[..., 0], TileGrid.from_stride((20, 20), tile=10, stride=10))


_WARM_CHILD = """
import json, sys
import numpy as np
from slidesift._kernels import block_row_histograms, block_row_rgb_and_limits
from slidesift.sift import SiftSpec, measure_tiles, warm_up
from slidesift.tiles import TileGrid

def compiled():
    return sorted(str(s) for k in (block_row_histograms, block_row_rgb_and_limits)
                  for s in k.signatures)

spec = SiftSpec(**json.loads(sys.argv[1]))
thread = warm_up(spec)
same = warm_up(SiftSpec(**json.loads(sys.argv[1]))) is thread
thread.join()
warmed = compiled()
rng = np.random.default_rng(0)
for shape, tile, stride in (((700, 563), 400, 80), ((480, 480), 96, 16)):
    pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    measure_tiles(pixels, TileGrid.from_stride(shape, tile=tile, stride=stride), spec)
print(json.dumps({"same": same, "warmed": warmed, "after": compiled()}))
"""


@pytest.mark.parametrize(
    "spec",
    [{}, {"entropy": "gray"}, {"background": "peak-frequency"}, {"gray_low": 30}],
    ids=["default", "gray-entropy", "peak-frequency", "other-limits"],
)
def test_warm_up_compiles_what_a_real_sift_then_uses(spec) -> None:
    """In a fresh process, :func:`warm_up` loads the very kernel signatures that measuring a
    slide with that spec needs (the real calls add none), and once per spec."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WARM_CHILD, json.dumps(spec)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["same"]
    assert got["warmed"], got  # something was compiled before any slide was measured
    assert got["after"] == got["warmed"], got
