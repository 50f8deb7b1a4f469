"""Segmentation: ONNX parity with torch, dense = per tile, empty slides, the result's pieces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from slidesift.assemble import assemble
from slidesift.checkpoint import Checkpoint, load_checkpoint
from slidesift.dataset import SlideImage, TileSetSpec, build_tileset
from slidesift.inference import DenseOnnx, OnnxTiles, TorchTiles, export_onnx
from slidesift.phantom import he_like_image
from slidesift.segment import NoTilesWarning, SegmentSpec, segment_pixels
from slidesift.train import TrainSpec, train

T = 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    slides = []
    for seed in (1, 3):
        pixels, tumor = he_like_image((360, 460), seed=seed, tumor_fraction=0.45)
        slides.append(SlideImage(f"s{seed}", "tumor", pixels, tumor, key=f"k{seed}"))
    tiles = build_tileset(slides, TileSetSpec(tile=T, longest=460))
    out = tmp_path_factory.mktemp("model")
    result = train(tiles, out, TrainSpec(epochs=1))
    return load_checkpoint(result.checkpoints[-1])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    pixels, _ = he_like_image((400, 560), seed=11, tumor_fraction=0.4)
    return pixels


def test_onnx_matches_torch_on_random_tiles(checkpoint: Checkpoint) -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (7, T, T, 3), dtype=np.uint8)
    onnx = OnnxTiles(checkpoint)(tiles)
    ref = TorchTiles(checkpoint)(tiles)
    assert onnx.shape == (7, 2)
    np.testing.assert_allclose(onnx, ref, atol=1e-4)
    np.testing.assert_allclose(onnx.sum(axis=1), 1.0, atol=1e-6)


def test_onnx_is_cached_beside_the_checkpoint_and_rebuilt_when_damaged(
    checkpoint: Checkpoint,
) -> None:
    path = export_onnx(checkpoint)
    assert path.parent == checkpoint.path.parent and path.suffix == ".onnx"  # type: ignore[union-attr]
    stamp = path.stat().st_mtime_ns
    assert export_onnx(checkpoint) == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(b"not onnx")
    assert export_onnx(checkpoint) == path
    assert path.stat().st_size > 1000


@pytest.mark.parametrize(("stride", "block_px"), [(16, 1280), (32, 1280), (16, 150)])
def test_dense_equals_per_tile(
    checkpoint: Checkpoint, image: np.ndarray, stride: int, block_px: int
) -> None:
    rng = np.random.default_rng(stride + block_px)
    noisy = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    n_rows = (noisy.shape[0] - T) // stride + 1
    n_cols = (noisy.shape[1] - T) // stride + 1
    rows, cols = np.nonzero(rng.random((n_rows, n_cols)) < 0.5)
    xy = np.stack([cols * stride, rows * stride], axis=1).astype(np.int64)
    dense = DenseOnnx(checkpoint, block_px=block_px)
    got = np.zeros((len(xy), 2), np.float32)
    for idx, p in dense.classify(noisy, xy, stride):
        got[idx] = p
    tiles = np.stack([noisy[y : y + T, x : x + T] for x, y in xy])
    expected = TorchTiles(checkpoint)(tiles)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_segment_pixels_picks_dense_when_exact_and_says_so(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    dense = segment_pixels(image, checkpoint, SegmentSpec(stride=32))
    per_tile = segment_pixels(image, checkpoint, SegmentSpec(stride=30))
    assert dense.inference == "onnx dense" and per_tile.inference == "onnx per tile"
    rounded = segment_pixels(image, checkpoint, SegmentSpec(stride=30, round_stride=True))
    assert rounded.grid.stride == 32 and rounded.inference == "onnx dense"
    tiles = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="tiles"))
    np.testing.assert_allclose(dense.probs, tiles.probs, atol=1e-4)
    # the mask is the assembly of the probabilities of the kept tiles
    a = assemble(dense.grid, dense.keep, dense.probs, dense.classes)
    np.testing.assert_array_equal(dense.mask, a.mask)
    assert not dense.probs[~dense.classified][:, 1].any()
    assert set(dense.seconds) == {"sift", "classify", "assemble"}


def test_slide_without_surviving_tiles_gives_an_empty_mask_and_a_warning(
    checkpoint: Checkpoint,
) -> None:
    blank = np.full((300, 300, 3), 245, np.uint8)
    with pytest.warns(NoTilesWarning, match="no tile survived"):
        r = segment_pixels(blank, checkpoint, SegmentSpec(stride=32))
    assert not r.mask.any() and r.vote is None and not r.keep.any()


def test_remask_runs_the_no_rails_ablation_without_classifying_again(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    r = segment_pixels(image, checkpoint, SegmentSpec(stride=32), classify_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_rails = r.remask(SegmentSpec(stride=32, rails=False))
        with_rails = r.remask(SegmentSpec(stride=32))
    np.testing.assert_array_equal(with_rails, r.mask)
    assert no_rails.sum() >= with_rails.sum() or not r.sifted.keep_background.any()


def test_torch_and_onnx_agree_inside_segment(checkpoint: Checkpoint, image: np.ndarray) -> None:
    t = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="torch"))
    o = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="tiles"))
    assert t.inference.startswith("torch")
    np.testing.assert_allclose(t.probs, o.probs, atol=1e-4)
    assert torch.get_num_threads() >= 1


def test_tile_larger_than_the_thumbnail_is_refused(checkpoint: Checkpoint) -> None:
    with pytest.raises(ValueError, match="shorter side"):
        segment_pixels(np.zeros((50, 300, 3), np.uint8), checkpoint)
