"""The U-Net/EfficientNet-B0 baseline around the network: Otsu, its tiles, the 70% tile rule,
segmentation and training through the same checkpoints, select, evaluate and report as the CNN.

The network itself (shapes, parameter counts) is tests/test_unet_model.py's.
"""

from __future__ import annotations

import numpy as np
import pytest

from slidesift.otsu import otsu_image, otsu_threshold, otsu_tissue
from slidesift.sift import to_gray
from slidesift.tiles import TileGrid
from slidesift.unet_infer import TILE_RULE, tile_decisions
from slidesift.unet_segment import tile_sums

torch = pytest.importorskip("torch")


# --- Otsu ---------------------------------------------------------------------------------------


def otsu_reference(gray: np.ndarray) -> tuple[int, np.ndarray]:
    """Otsu 1979 by brute force: the between-class variance of every threshold t (classes
    v <= t and v > t); returns the first t reaching the maximum and all the variances."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    levels = np.arange(256, dtype=np.float64)
    var = np.zeros(256)
    for t in range(256):
        w0, w1 = p[: t + 1].sum(), p[t + 1 :].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (p[: t + 1] * levels[: t + 1]).sum() / w0
        m1 = (p[t + 1 :] * levels[t + 1 :]).sum() / w1
        var[t] = w0 * w1 * (m0 - m1) ** 2
    return int(np.argmax(var)), var


@pytest.mark.parametrize("seed", range(12))
def test_otsu_threshold_maximises_between_class_variance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 5000))
    dark = rng.normal(rng.uniform(60, 150), rng.uniform(5, 30), int(n * rng.uniform(0.1, 0.9)))
    bright = rng.normal(rng.uniform(190, 240), rng.uniform(3, 15), n - dark.size)
    gray = np.clip(np.concatenate([dark, bright]), 0, 255).astype(np.uint8).reshape(1, -1)
    t = otsu_threshold(gray)
    best, var = otsu_reference(gray)
    assert var[t] == pytest.approx(var[best], rel=1e-9, abs=1e-9)
    # thresholds in a gap of empty bins tie; they split the pixels alike
    np.testing.assert_array_equal(gray <= t, gray <= best)


def test_otsu_keeps_dark_tissue_and_blacks_out_bright_glass() -> None:
    rng = np.random.default_rng(0)
    pixels = np.full((40, 60, 3), 235, np.uint8) + rng.integers(0, 10, (40, 60, 3)).astype(np.uint8)
    pixels[10:30, 5:25] = (150, 60, 140)  # eosin-pink tissue
    pixels[12:20, 40:55] = (70, 40, 120)  # haematoxylin-dark tissue
    tissue = otsu_tissue(pixels)
    expected = np.zeros((40, 60), bool)
    expected[10:30, 5:25] = True
    expected[12:20, 40:55] = True
    np.testing.assert_array_equal(tissue, expected)
    image = otsu_image(pixels)
    np.testing.assert_array_equal(image[tissue], pixels[tissue])  # tissue unchanged
    assert not image[~tissue].any()  # glass black
    assert image is not pixels and pixels.min() > 0  # the input is not touched


def test_otsu_threshold_is_the_slides_not_the_tiles() -> None:
    """One threshold per slide: a tile of pure glass stays black (a per-tile threshold would
    split its noise into 'tissue' and 'background')."""
    rng = np.random.default_rng(1)
    pixels = np.full((64, 128, 3), 230, np.uint8) + rng.integers(0, 20, (64, 128, 3)).astype(
        np.uint8
    )
    pixels[:, :64] = (120, 50, 110)
    image = otsu_image(pixels)
    assert not image[:, 64:].any()
    t = otsu_threshold(to_gray(pixels))
    assert 120 * 0.299 < t < 230  # between the tissue's grey and the glass's


def test_a_blank_slide_has_no_tissue() -> None:
    assert not otsu_tissue(np.full((32, 32, 3), 240, np.uint8)).any()


# --- tile sums and the 70% rule -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_tile_sums_equal_a_loop_over_tiles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(40, 120, 2))
    tile = int(rng.integers(8, min(h, w)))
    stride = int(rng.integers(1, tile + 3))
    values = rng.random((h, w)) < rng.uniform(0.05, 0.9)
    grid = TileGrid.from_stride((h, w), tile=tile, stride=stride)
    sums = tile_sums(values, grid)
    slow = np.array([values[y : y + tile, x : x + tile].sum() for x, y in grid.th_xy()]).reshape(
        grid.grid_shape
    )
    np.testing.assert_array_equal(sums, slow)


def test_a_tile_is_tumor_at_70_percent_of_its_pixels() -> None:
    assert TILE_RULE == 0.7
    fractions = np.array([0.0, 0.5, 0.69, 0.6999, 0.7, 0.71, 1.0])
    np.testing.assert_array_equal(
        tile_decisions(fractions), [False, False, False, False, True, True, True]
    )
    np.testing.assert_array_equal(tile_decisions(fractions, 0.5), fractions >= 0.5)


class RowsTumor(torch.nn.Module):
    """A stand-in network: logit +8 on each tile's first ``k`` rows, -8 below, with ``k`` the
    tile's red channel at its corner (so a test sets each tile's predicted tumor share)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k = torch.round(x[:, 0, 0, 0] * 255).long()
        rows = torch.arange(h).view(1, h, 1).expand(b, h, w)
        return torch.where(rows < k.view(b, 1, 1), 8.0, -8.0).unsqueeze(1)


class RasterTumor(torch.nn.Module):
    """A stand-in network: logit +8 on each tile's first ``k`` pixels in raster order (a full
    row, then part of the next), -8 after, with ``k`` twice the tile's red at its corner."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k = 2 * torch.round(x[:, 0, 0, 0] * 255).long()
        order = torch.arange(h * w).view(1, h, w).expand(b, h, w)
        return torch.where(order < k.view(b, 1, 1), 8.0, -8.0).unsqueeze(1)


def test_decisions_count_the_share_of_pixels_predicted_tumor() -> None:
    from slidesift.unet_infer import decision_probabilities, pixel_probabilities

    t = 20  # 400 px a tile
    red = np.array([0, 100, 139, 140, 150, 200])  # shares 0, .5, .695, .7, .75, 1
    tiles = np.zeros((red.size, t, t, 3), np.uint8)
    tiles[:, 0, 0, 0] = red
    p = pixel_probabilities(RasterTumor(), tiles, "cpu")
    assert p.shape == (red.size, t, t)
    np.testing.assert_allclose((p > 0.5).mean(axis=(1, 2)), 2 * red / (t * t))
    d = decision_probabilities(RasterTumor(), tiles, "cpu")
    assert d.shape == (red.size, 2) and d.dtype == np.float32
    np.testing.assert_array_equal(d[:, 1], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(d.sum(axis=1), 1)


# --- segmentation: the paper's rule over the Otsu image -----------------------------------------


def unet_meta(tile: int, overlap: float = 0.5) -> dict[str, object]:
    from slidesift.rails import Rails
    from slidesift.sift import SiftSpec

    return {
        "format": "slidesift-checkpoint/1",
        "architecture": "unet-effb0",
        "tile": tile,
        "longest": 1000,
        "mpp": None,
        "rails": Rails(0.0, 24.0).to_dict(),
        "sift": SiftSpec().to_dict(),
        "classes": ["non-tumor", "tumor"],
        "segment_overlap": overlap,
        "tile_rule": 0.7,
        "epoch": 1,
    }


def tissue_picture(rng: np.random.Generator, h: int = 160, w: int = 224) -> np.ndarray:
    """Glass with blobs of tissue whose red channel varies (RowsTumor reads it)."""
    pixels = np.full((h, w, 3), 238, np.uint8) + rng.integers(0, 8, (h, w, 3)).astype(np.uint8)
    for _ in range(6):
        y, x = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
        pixels[y : y + 40, x : x + 60] = (int(rng.integers(1, 33)), 40, 120)
    return pixels


@pytest.mark.parametrize("seed", range(3))
def test_segment_unet_is_the_union_of_tiles_passing_the_rule_on_the_otsu_image(seed: int) -> None:
    """Reference: loop over the grid, cut each tile of the Otsu image, count the pixels the
    network calls tumor, keep tiles at >= 70%, paint their union; tiles without tissue are
    never shown to the network."""
    from slidesift.checkpoint import Checkpoint
    from slidesift.segment import SegmentSpec
    from slidesift.unet_infer import decision_probabilities, pixel_probabilities
    from slidesift.unet_segment import segment_unet

    rng = np.random.default_rng(seed)
    pixels = tissue_picture(rng)
    t = 32
    ckpt = Checkpoint(None, unet_meta(t), {})
    seen: list[np.ndarray] = []

    def classify(tiles: np.ndarray) -> np.ndarray:
        seen.append(tiles.copy())
        return decision_probabilities(RowsTumor(), tiles, "cpu")

    result = segment_unet(pixels, ckpt, SegmentSpec(), classify)
    image = otsu_image(pixels)
    tissue = otsu_tissue(pixels)
    expected = np.zeros(pixels.shape[:2], bool)
    stride = 16
    n_with_tissue = 0
    for y in range(0, pixels.shape[0] - t + 1, stride):
        for x in range(0, pixels.shape[1] - t + 1, stride):
            if not tissue[y : y + t, x : x + t].any():
                continue
            n_with_tissue += 1
            tile = image[y : y + t, x : x + t][None]
            share = (pixel_probabilities(RowsTumor(), tile, "cpu") > 0.5).mean()
            if share >= 0.7:
                expected[y : y + t, x : x + t] = True
    assert result.grid.stride == stride and result.grid.tile == t
    assert sum(len(s) for s in seen) == n_with_tissue == int(result.classified.sum())
    assert all(not s[np.all(s == 0, axis=-1)].any() for s in seen)  # Otsu: glass is black
    assert expected.any() and not expected.all()  # the case is not trivial
    np.testing.assert_array_equal(result.mask, expected)
    assert result.assembly.mode == "union"
    assert result.assembly.counts["tumor"] == int(result.probs[..., 1].sum())


def test_segment_unet_takes_an_explicit_stride_and_refuses_onnx_backends() -> None:
    from slidesift.checkpoint import Checkpoint
    from slidesift.errors import ConfigError
    from slidesift.segment import SegmentSpec
    from slidesift.unet_infer import decision_probabilities
    from slidesift.unet_segment import segment_unet

    pixels = tissue_picture(np.random.default_rng(5))
    ckpt = Checkpoint(None, unet_meta(32), {})

    def classify(tiles: np.ndarray) -> np.ndarray:
        return decision_probabilities(RowsTumor(), tiles, "cpu")

    assert segment_unet(pixels, ckpt, SegmentSpec(stride=32), classify).grid.stride == 32
    assert segment_unet(pixels, ckpt, SegmentSpec(overlap=0.9), classify).grid.stride == 16
    for mode in ("dense", "int8", "tiles"):
        with pytest.raises(ConfigError, match="U-Net"):
            segment_unet(pixels, ckpt, SegmentSpec(inference=mode), classify)  # type: ignore[arg-type]


def test_a_unet_checkpoint_is_no_lightweight_cnn() -> None:
    """ONNX export, bundles and the page build the CNN: they refuse a U-Net checkpoint."""
    from slidesift.checkpoint import Checkpoint, CheckpointError

    with pytest.raises(CheckpointError, match="U-Net baseline"):
        Checkpoint(None, unet_meta(32), {}).model()


# --- training tiles -----------------------------------------------------------------------------


def test_training_tiles_have_tissue_and_their_masks_flip_with_them() -> None:
    from slidesift.tileset import SlideImage
    from slidesift.unet_data import seg_tiles

    rng = np.random.default_rng(2)
    pixels = tissue_picture(rng)
    tumor = np.zeros(pixels.shape[:2], bool)
    tumor[40:100, 50:150] = True
    tiles = seg_tiles([SlideImage("s", "tumor", pixels, tumor)], 32, overlap=0.5, min_tissue=0.1)
    tissue = otsu_tissue(pixels)
    grid = TileGrid.from_stride(pixels.shape[:2], tile=32, stride=16)
    share = np.array([tissue[y : y + 32, x : x + 32].mean() for x, y in grid.th_xy()])
    expected = {tuple(xy) for xy, s in zip(grid.th_xy(), share, strict=True) if s >= 0.1}
    assert {tuple(xy) for xy in tiles.th_xy} == expected
    x_u8, y_u8 = tiles.batch([(i, i % 2, (i // 2) % 2, 0) for i in range(len(tiles))])
    for i in range(len(tiles)):
        x, y = tiles.th_xy[i]
        img, msk = otsu_image(pixels)[y : y + 32, x : x + 32], tumor[y : y + 32, x : x + 32]
        if i % 2:
            img, msk = img[:, ::-1], msk[:, ::-1]
        if (i // 2) % 2:
            img, msk = img[::-1], msk[::-1]
        np.testing.assert_array_equal(x_u8[i], img)
        np.testing.assert_array_equal(y_u8[i], msk)
        assert tiles.tumor_fraction[i] == pytest.approx(tumor[y : y + 32, x : x + 32].mean())


def test_remask_keeps_the_unets_union_unless_told_otherwise() -> None:
    """Ablations re-assemble a result: a U-Net result stays a union of its tiles."""
    from slidesift.checkpoint import Checkpoint
    from slidesift.segment import SegmentSpec
    from slidesift.unet_infer import decision_probabilities
    from slidesift.unet_segment import segment_unet

    pixels = tissue_picture(np.random.default_rng(0))
    ckpt = Checkpoint(None, unet_meta(32), {})
    result = segment_unet(
        pixels, ckpt, SegmentSpec(), lambda t: decision_probabilities(RowsTumor(), t, "cpu")
    )
    np.testing.assert_array_equal(result.remask(SegmentSpec()), result.mask)
    mean = result.remask(SegmentSpec(mode="mean"))
    assert mean.sum() < result.mask.sum()  # the case tells the two apart
