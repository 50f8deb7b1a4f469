"""Dense and ONNX classification equal per-tile torch, with models whose outputs vary.

A model whose outputs sit near one value cannot show a wrong tile: every tile gets about the
same probability. These models are randomly initialised, their BatchNorm statistics set from
real-looking tissue and their last layer scaled so that the tumor probabilities of the compared
tiles spread over at least [0.05, 0.95]; a tile classified from the wrong pixels then differs
by far more than the tolerance, which is relative to that spread. Per-tile torch (the network
as trained, each tile cut and run alone) is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import discriminative_checkpoint
from slidesift.checkpoint import Checkpoint
from slidesift.inference import DenseOnnx, OnnxTiles
from slidesift.phantom import he_like_image
from slidesift.tiles import TileGrid
from slidesift.torch_inference import TorchTiles

pytestmark = pytest.mark.learn

#: Probabilities must agree to this fraction of their spread (float32 summation order differs).
RELATIVE_TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Checkpoint]:
    folder = tmp_path_factory.mktemp("parity")
    return {t: discriminative_checkpoint(t, folder, seed=t) for t in (96, 200, 400)}


def _image(shape: tuple[int, int], seed: int) -> np.ndarray:
    pixels, _ = he_like_image(shape, seed=seed, tumor_fraction=0.4)
    return pixels


def _per_tile_torch(ck: Checkpoint, image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    t = ck.tile
    tiles = np.stack([image[y : y + t, x : x + t] for x, y in xy])
    return np.concatenate([TorchTiles(ck)(tiles[j : j + 16]) for j in range(0, len(tiles), 16)])


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    tumor = expected[:, 1]
    spread = float(tumor.max() - tumor.min())
    assert tumor.min() <= 0.05 and tumor.max() >= 0.95, "the model must be discriminative here"
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * spread)


# (tile, stride, (H, W)): non-square thumbnails; some end exactly on the last tile's edge, some
# leave a margin narrower than a stride.
CASES = [
    (96, 16, (96 + 16 * 7, 96 + 16 * 12 + 9)),
    (96, 32, (96 + 32 * 5 + 31, 96 + 32 * 3)),
    (96, 48, (96 + 48 * 4, 96 + 48 * 6 + 20)),
    (96, 80, (96 + 80 * 3 + 5, 96 + 80 * 2)),
    (200, 16, (200 + 16 * 4, 200 + 16 * 7 + 3)),
    (200, 32, (200 + 32 * 3 + 17, 200 + 32 * 5)),
    (200, 48, (200 + 48 * 2, 200 + 48 * 4 + 40)),
    (200, 80, (200 + 80 * 2 + 60, 200 + 80 * 3)),
    pytest.param(400, 48, (400 + 48 * 2, 400 + 48 * 3 + 7), marks=pytest.mark.slow),
    pytest.param(400, 80, (400 + 80 * 2 + 33, 400 + 80 * 3), marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("tile", "stride", "shape"), CASES)
def test_dense_equals_per_tile_torch_on_every_tile(
    models: dict[int, Checkpoint], tile: int, stride: int, shape: tuple[int, int]
) -> None:
    ck = models[tile]
    image = _image(shape, seed=tile + stride)
    xy = TileGrid.from_stride(shape, tile=tile, stride=stride).th_xy()
    got = np.zeros((len(xy), 2), np.float32)
    for idx, p in DenseOnnx(ck, block_px=max(300, 2 * tile)).classify(image, xy, stride):
        got[idx] = p
    _assert_same(got, _per_tile_torch(ck, image, xy))


@pytest.mark.parametrize("tile", [96, 200])
def test_dense_on_a_random_subset_of_tiles_and_small_blocks(
    models: dict[int, Checkpoint], tile: int
) -> None:
    """Only kept tiles are computed, block by block: the subset must not change any output."""
    ck, stride = models[tile], 32
    shape = (tile + 32 * 6 + 11, tile + 32 * 9)
    image = _image(shape, seed=7)
    xy = TileGrid.from_stride(shape, tile=tile, stride=stride).th_xy()
    rng = np.random.default_rng(tile)
    chosen = xy[rng.random(len(xy)) < 0.4]
    chosen = np.concatenate([chosen, xy[-1:]])  # the bottom-right edge tile
    got = np.zeros((len(chosen), 2), np.float32)
    for idx, p in DenseOnnx(ck, block_px=150).classify(image, chosen, stride):
        got[idx] = p
    _assert_same(got, _per_tile_torch(ck, image, chosen))


@pytest.mark.parametrize("tile", [96, 200])
def test_onnx_per_tile_equals_torch(models: dict[int, Checkpoint], tile: int) -> None:
    ck = models[tile]
    image = _image((tile * 2 + 40, tile * 3), seed=3)
    xy = TileGrid.from_stride(image.shape[:2], tile=tile, stride=40).th_xy()
    tiles = np.stack([image[y : y + tile, x : x + tile] for x, y in xy])
    _assert_same(OnnxTiles(ck)(tiles), _per_tile_torch(ck, image, xy))
