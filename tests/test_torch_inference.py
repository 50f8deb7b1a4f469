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
from slidesift.torch_inference import TorchHead, TorchMaps, TorchTiles, fold_batchnorms, torch_dense

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


# --- dense in torch (what a CUDA device runs, checked here on the CPU) --------------------------


def _dense_probs(net, image: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    from slidesift.tiles import TileGrid

    xy = TileGrid.from_stride(image.shape[:2], tile=T, stride=stride).th_xy()
    p = np.full((len(xy), 2), np.nan, np.float32)
    for idx, q in net.classify(image, xy, stride):
        p[idx] = q
    return xy, p


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    pixels, _ = he_like_image((T + 16 * 13, T + 16 * 18), seed=3, tumor_fraction=0.4)
    return pixels


def test_torch_dense_fp32_equals_the_network_on_each_tile(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    net = torch_dense(checkpoint)
    assert net.name == "torch dense cpu fp32"
    xy, got = _dense_probs(net, image, 16)
    tiles = np.stack([image[y : y + T, x : x + T] for x, y in xy])
    with torch.no_grad():
        expected = probabilities(checkpoint.model()(to_input(tiles))).numpy()
    assert expected[:, 1].std() > 0.1  # tiles the model tells apart
    assert np.abs(got - expected).max() <= 1e-4  # every tile, every crop offset


def test_torch_dense_pieces_are_the_onnx_dense_pieces(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    """Trunk and head one by one against the ONNX graphs they stand in for."""
    from slidesift.inference import DenseOnnx, _side_after

    onnx = DenseOnnx(checkpoint)
    region = np.ascontiguousarray(image[None, : T + 32, : T + 48])
    ours = TorchMaps(checkpoint)(region)
    theirs = onnx.run_maps(region)
    assert ours.shape == theirs.shape and ours.shape[1] == 64
    assert np.abs(ours - theirs).max() <= 1e-3 * max(1.0, float(np.abs(theirs).max()))
    side = _side_after(T, 5)
    feats = np.random.default_rng(1).random((5, 64, side, side), dtype=np.float32) * 3
    np.testing.assert_allclose(TorchHead(checkpoint)(feats), onnx.run_head(feats), atol=1e-5)


def test_torch_dense_bf16_runs_in_lower_precision_and_follows_fp32(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    net = torch_dense(checkpoint, precision="bf16")
    assert net.name == "torch dense cpu bf16"
    _, fp32 = _dense_probs(torch_dense(checkpoint), image, 32)
    _, bf16 = _dense_probs(net, image, 32)
    assert np.abs(fp32 - bf16).max() > 0  # really bf16
    assert float(np.corrcoef(fp32[:, 1], bf16[:, 1])[0, 1]) >= 0.9
    with pytest.raises(ConfigError, match="fp16 on CUDA only"):
        torch_dense(checkpoint, precision="fp16")


def test_segment_runs_torch_dense_and_auto_takes_it_where_cuda_is(
    checkpoint: Checkpoint, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from slidesift.segment import Classifiers, SegmentSpec, segment_pixels

    seg = importlib.import_module("slidesift.segment")
    ours = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="torch-dense"))
    onnx = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="dense"))
    assert ours.inference == "torch dense cpu fp32" and onnx.inference == "onnx dense"
    np.testing.assert_allclose(ours.probs, onnx.probs, atol=1e-4)
    assert ours.mask.any() and (ours.mask == onnx.mask).all()
    with pytest.raises(ConfigError, match="multiple of 16"):
        segment_pixels(image, checkpoint, SegmentSpec(stride=30, inference="torch-dense"))
    # what auto picks when torch sees a GPU: dense where exact, per tile otherwise
    monkeypatch.setattr(seg, "_cuda_available", lambda: True)
    classifiers = Classifiers(checkpoint, probe=False)
    monkeypatch.setattr(classifiers, "get", lambda kind: _Named(kind))
    picked = [segment_pixels(image, checkpoint, SegmentSpec(stride=s),
                             classifiers=classifiers).inference for s in (32, 30)]  # fmt: skip
    assert picked == ["torch-dense", "torch"]


class _Named:
    """Stands in for a classifier to show which one segmentation asked for (answers 0.0)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def classify(self, pixels: np.ndarray, xy: np.ndarray, stride: int):  # type: ignore[no-untyped-def]
        yield np.arange(len(xy)), np.tile(np.float32([1.0, 0.0]), (len(xy), 1))

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return np.tile(np.float32([1.0, 0.0]), (len(tiles), 1))


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_path_in_a_dry_run(tmp_path: Path) -> None:
    """The prepared GPU script must not fail on the device, where time is short: its dry run
    takes every path (per tile, training, torch-dense, the cohort both ways) on the CPU."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SLIDESIFT_BENCH_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "bench_gpu.py"), "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "bench_gpu_dry.json").read_text())
    extra = doc.get("extra", doc)
    assert extra["dry_run"] and extra["dense_tiles_per_s"] > 0
    assert set(extra["cohort"]) == {"one after another", "pipelined"}
    for way in extra["cohort"].values():
        assert way["inference"] == "onnx dense" and way["slides_per_min"] > 0
