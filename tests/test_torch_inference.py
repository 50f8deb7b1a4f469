"""Torch per-tile inference: the GPU path's options, checked on the CPU.

No GPU is needed: BatchNorm folding (what ``compile=True`` runs) must equal the plain network,
bf16 must run and mostly agree, and the options must be validated. The GPU speed itself is
measured by ``benchmarks/bench_gpu.py`` where a device exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import discriminative_checkpoint
from slidesift.checkpoint import Checkpoint
from slidesift.errors import ConfigError
from slidesift.model import probabilities, to_input
from slidesift.phantom import he_like_image
from slidesift.torch_inference import TorchTiles, fold_batchnorms

T = 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return discriminative_checkpoint(T, tmp_path_factory.mktemp("model"), seed=5)


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    pixels, _ = he_like_image((420, 420), seed=3, tumor_fraction=0.4)
    xy = np.random.default_rng(0).integers(0, 420 - T, (48, 2))
    return np.stack([pixels[y : y + T, x : x + T] for x, y in xy])


def test_folded_batchnorms_compute_the_same_network(
    checkpoint: Checkpoint, tiles: np.ndarray
) -> None:
    net = checkpoint.model()
    folded = fold_batchnorms(net)
    batchnorms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(batchnorms) == 1  # 1-4 folded, 5 kept
    with torch.no_grad():
        plain = probabilities(net(to_input(tiles))).numpy()
        fast = probabilities(folded(to_input(tiles))).numpy()
    assert plain[:, 1].std() > 0.1  # a model whose outputs differ between tiles
    assert np.abs(plain - fast).max() <= 1e-4


def test_bf16_runs_and_mostly_agrees_with_fp32(checkpoint: Checkpoint, tiles: np.ndarray) -> None:
    fp32 = TorchTiles(checkpoint)
    bf16 = TorchTiles(checkpoint, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32(tiles), bf16(tiles)
    assert a.shape == b.shape == (len(tiles), 2)
    assert np.allclose(b.sum(axis=1), 1.0, atol=1e-3)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() >= 0.9
    assert np.abs(a - b).max() > 0  # bf16 really ran in lower precision


def test_precision_options_are_checked(checkpoint: Checkpoint) -> None:
    with pytest.raises(ConfigError, match="precision"):
        TorchTiles(checkpoint, precision="int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fp16 on CUDA only"):
        TorchTiles(checkpoint, precision="fp16")
    assert TorchTiles(checkpoint).name == "torch cpu fp32"


def test_checkpoint_weights_load_as_numpy_and_build_the_same_model(
    checkpoint: Checkpoint, tiles: np.ndarray
) -> None:
    from slidesift.checkpoint import load_checkpoint

    assert checkpoint.path is not None and Path(checkpoint.path).is_file()
    again = load_checkpoint(checkpoint.path)
    assert all(isinstance(v, np.ndarray) for v in again.state.values())
    assert np.array_equal(TorchTiles(again)(tiles), TorchTiles(checkpoint)(tiles))
