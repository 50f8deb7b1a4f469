"""The CNN, the training loop, checkpoints and resume: real torch, real safetensors files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from slidesift.architecture import feature_side, parameter_count
from slidesift.checkpoint import CheckpointError, load_checkpoint
from slidesift.dataset import build_tileset
from slidesift.errors import OutputError, SlidesiftError
from slidesift.io.downsample import Downsample
from slidesift.model import LightweightCNN, probabilities
from slidesift.phantom import he_like_image
from slidesift.tile_truth import classify_raw_tiles
from slidesift.tileset import SlideImage, TileSet, TileSetSpec
from slidesift.torch_inference import TorchTiles
from slidesift.train import holdout_raw_tiles, train
from slidesift.train_data import TileBatches, epoch_plan
from slidesift.train_spec import TrainCallbacks, TrainSpec

pytestmark = pytest.mark.learn
torch = pytest.importorskip(
    "torch", reason="needs torch, the 'learn' extra: pip install 'slidesift[learn]'"
)

T = 96


# --- the network ------------------------------------------------------------------------------


def test_parameter_count_at_400_matches_the_architecture_arithmetic() -> None:
    convs = [(3, 32), (32, 64), (64, 96), (96, 96), (96, 64)]
    by_hand = sum(9 * a * b + b + 2 * b for a, b in convs)  # conv weights + bias + BN affine
    side = 400
    for _ in convs:
        side = (side - 2) // 2  # valid 3x3 conv, 2x2 pool
    assert side == 10
    by_hand += (64 * side * side) * 400 + 400 + 400 * 200 + 200 + 200 * 1 + 1
    assert by_hand == 2_854_689
    assert parameter_count(400) == by_hand
    net = LightweightCNN(400, 2)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == by_hand
    assert abs(by_hand - 2.85e6) / 2.85e6 < 0.01


@pytest.mark.parametrize(("tile", "n_classes"), [(94, 2), (96, 3), (128, 2), (200, 4)])
def test_any_tile_size_and_class_count(tile: int, n_classes: int) -> None:
    net = LightweightCNN(tile, n_classes).eval()
    out = net(torch.rand(2, 3, tile, tile))
    assert out.shape == (2, 1 if n_classes == 2 else n_classes)
    assert sum(p.numel() for p in net.parameters()) == parameter_count(tile, out.shape[1])
    p = probabilities(out)
    assert p.shape == (2, n_classes)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2))
    assert feature_side(tile) >= 1


def test_tiles_too_small_for_five_blocks_are_refused() -> None:
    with pytest.raises(SlidesiftError, match="at least 94"):
        LightweightCNN(93)


# --- data ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiles() -> TileSet:
    slides = []
    for seed in (1, 3):
        pixels, tumor = he_like_image((360, 460), seed=seed, tumor_fraction=0.45)
        slides.append(SlideImage(f"s{seed}", "tumor", pixels, tumor, key=f"k{seed}"))
    ts = build_tileset(slides, TileSetSpec(tile=T, longest=500))
    assert 16 < len(ts) < 400
    return ts


@pytest.fixture(scope="module")
def holdout(tiles: TileSet) -> TileSet:
    pixels, tumor = he_like_image((360, 460), seed=7, tumor_fraction=0.45)
    s = SlideImage("s7", "tumor", pixels, tumor, key="k7")
    return build_tileset(
        [s], tiles.spec, rails=tiles.rails, overlaps=tiles.overlaps, classes=tiles.classes
    )


def test_flips_keep_labels_and_flip_pixels(tiles: TileSet) -> None:
    batches = TileBatches(tiles)
    items = [(i, h, v) for i in range(4) for h in (0, 1) for v in (0, 1)]
    x, y = batches.__getitems__(items)
    for k, (i, h, v) in enumerate(items):
        expected = tiles.tile(i)
        if h:
            expected = expected[:, ::-1]
        if v:
            expected = expected[::-1]
        np.testing.assert_array_equal(x[k].numpy(), expected)
        assert int(y[k]) == tiles.label[i]


def test_epoch_plan_is_a_seeded_permutation() -> None:
    plan = epoch_plan(50, 16, seed=0, epoch=3, flips=True)
    assert [len(b) for b in plan] == [16, 16, 16, 2]
    assert sorted(i for b in plan for i, _, _, _ in b) == list(range(50))
    assert plan == epoch_plan(50, 16, seed=0, epoch=3, flips=True)
    assert plan != epoch_plan(50, 16, seed=0, epoch=4, flips=True)
    flips = np.array([(h, v) for b in plan for _, h, v, _ in b])
    assert 0 < flips.mean() < 1
    assert all(h == v == 0 for b in epoch_plan(50, 16, 0, 3, False) for _, h, v, _ in b)
    assert all(s == 0 for b in plan for *_, s in b)  # no augmentation: no seeds


def test_augmentation_seeds_leave_order_and_flips_alone_and_differ_per_tile() -> None:
    plain = epoch_plan(50, 16, seed=0, epoch=3, flips=True)
    augmented = epoch_plan(50, 16, seed=0, epoch=3, flips=True, augment=True)
    assert [[t[:3] for t in b] for b in augmented] == [[t[:3] for t in b] for b in plain]
    seeds = [t[3] for b in augmented for t in b]
    assert len(set(seeds)) == len(seeds)
    again = epoch_plan(50, 16, seed=0, epoch=4, flips=True, augment=True)
    assert seeds != [t[3] for b in again for t in b]


def test_batches_augment_each_tile_from_its_seed(tiles: TileSet) -> None:
    from slidesift.augment import AugmentSpec, augment_tile

    spec = AugmentSpec(rotations=True, hed=0.1, scale=0.1)
    batches = TileBatches(tiles, spec)
    items = [(i, 1, 0, 1000 + i) for i in range(6)]
    x, y = batches.__getitems__(items)
    for k, (i, _, _, seed) in enumerate(items):
        expected = augment_tile(np.ascontiguousarray(tiles.tile(i)[:, ::-1]), spec, seed)
        np.testing.assert_array_equal(x[k].numpy(), expected)
        assert not np.array_equal(x[k].numpy(), tiles.tile(i)[:, ::-1])
        assert int(y[k]) == tiles.label[i]
    # the held-out set is never augmented: a spec with everything off changes nothing
    x0, _ = TileBatches(tiles, AugmentSpec()).__getitems__(items)
    np.testing.assert_array_equal(x0[0].numpy(), tiles.tile(0)[:, ::-1])


def test_train_spec_reads_its_augmentation_back_from_json() -> None:
    import json

    from slidesift.augment import AugmentSpec

    spec = TrainSpec(epochs=2, augment=AugmentSpec(rotations=True, hed=0.05))
    again = TrainSpec(**json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert isinstance(again.augment, AugmentSpec)


# --- training, checkpoints, resume --------------------------------------------------------------


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in load_checkpoint(path).state.items()}


def test_checkpoint_holds_everything_to_segment(
    tiles: TileSet, holdout: TileSet, tmp_path: Path
) -> None:
    result = train(tiles, tmp_path / "run", TrainSpec(epochs=2, seed=1), holdout=holdout)
    assert [p.name for p in result.checkpoints] == [
        "epoch_001.safetensors",
        "epoch_002.safetensors",
    ]
    ck = load_checkpoint(result.checkpoints[-1])
    assert ck.tile == T and ck.classes == tiles.classes
    assert ck.rails == tiles.rails
    assert ck.sift == tiles.spec.sift
    assert ck.downsample == Downsample(longest=500)
    assert ck.epoch == 2 and ck.normalizer is None
    assert ck.meta["overlaps"] == tiles.overlaps
    assert ck.meta["slidesift_version"]
    assert ck.metrics["train_loss"] == pytest.approx(result.records[-1].train_loss)
    # beside it, named as such: the held-out tile set as training cuts it (other class black)
    masked = np.stack([holdout.tile(i) for i in range(len(holdout))])
    masked_pred = np.argmax(TorchTiles(ck)(masked), axis=1)
    assert ck.metrics["masked_holdout_accuracy"] == pytest.approx(
        float((masked_pred == holdout.label).mean()), abs=1e-9
    )
    # the model's accuracy: the held-out slides' raw tiles, as segmentation cuts them
    raw = holdout_raw_tiles(holdout, ck.rails)
    assert ck.metrics["holdout_raw_tiles"] == len(raw) > 0
    pred = classify_raw_tiles(
        raw, [np.asarray(s.pixels) for s in holdout.slides], TorchTiles(ck), tile=T
    )
    assert ck.metrics["holdout_raw_accuracy"] == pytest.approx(
        float((pred == raw.label).mean()), abs=1e-9
    )
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss,train_accuracy,holdout_raw_accuracy")
    assert len(log) == 3
    # the saved weights reproduce the model's outputs
    x = torch.rand(3, 3, T, T)
    assert ck.model()(x).shape == (3, 1)
    again = load_checkpoint(result.checkpoints[-1]).model()
    torch.testing.assert_close(ck.model()(x), again(x), rtol=0, atol=0)


def test_resumed_run_equals_uninterrupted_run(tiles: TileSet, tmp_path: Path) -> None:
    spec = TrainSpec(epochs=3, seed=5)
    full = train(tiles, tmp_path / "full", spec)

    class Interrupt(Exception):
        pass

    def stop(epoch: int, batch: int, loss: float) -> None:
        if epoch == 2 and batch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiles, tmp_path / "cut", spec, callbacks=TrainCallbacks(on_batch=stop))
    assert (tmp_path / "cut" / "epoch_001.safetensors").exists()
    assert not (tmp_path / "cut" / "epoch_002.safetensors").exists()
    with pytest.raises(SlidesiftError, match="already holds a training run"):
        train(tiles, tmp_path / "cut", spec)
    resumed = train(tiles, tmp_path / "cut", spec, resume=True)
    assert resumed.resumed_from == 1
    for epoch in (1, 2, 3):
        a = _weights(tmp_path / "full" / f"epoch_{epoch:03d}.safetensors")
        b = _weights(tmp_path / "cut" / f"epoch_{epoch:03d}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (epoch, k)
    assert [r.train_loss for r in full.records] == [r.train_loss for r in resumed.records]
    assert (tmp_path / "full" / "log.csv").read_text().splitlines()[1:] != []
    # more epochs later: resume continues past the old end
    longer = train(tiles, tmp_path / "cut", TrainSpec(epochs=4, seed=5), resume=True)
    assert longer.resumed_from == 3 and len(longer.records) == 4
    with pytest.raises(SlidesiftError, match="another tile set or with other options"):
        train(tiles, tmp_path / "cut", TrainSpec(epochs=5, seed=6), resume=True)


def test_resume_with_augmentation_is_bit_identical(tiles: TileSet, tmp_path: Path) -> None:
    from slidesift.augment import AugmentSpec

    spec = TrainSpec(epochs=2, seed=3, augment=AugmentSpec(rotations=True, hed=0.1, scale=0.1))
    full = train(tiles, tmp_path / "full", spec)
    plain = train(tiles, tmp_path / "plain", TrainSpec(epochs=1, seed=3))
    assert full.records[0].train_loss != plain.records[0].train_loss  # augmentation is applied

    class Interrupt(Exception):
        pass

    def stop(epoch: int, batch: int, loss: float) -> None:
        if epoch == 2 and batch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiles, tmp_path / "cut", spec, callbacks=TrainCallbacks(on_batch=stop))
    resumed = train(tiles, tmp_path / "cut", spec, resume=True)
    a = _weights(tmp_path / "full" / "epoch_002.safetensors")
    b = _weights(tmp_path / "cut" / "epoch_002.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.train_loss for r in full.records] == [r.train_loss for r in resumed.records]
    other = TrainSpec(epochs=3, seed=3, augment=AugmentSpec(rotations=True))
    with pytest.raises(SlidesiftError, match="another tile set or with other options"):
        train(tiles, tmp_path / "cut", other, resume=True)


def test_corrupt_checkpoints_give_clear_errors_and_never_unpickle(
    tiles: TileSet, tmp_path: Path
) -> None:
    result = train(tiles, tmp_path / "run", TrainSpec(epochs=1))
    good = result.checkpoints[0]
    data = good.read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(half)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        load_checkpoint(empty)

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="No such file"):
        load_checkpoint(tmp_path / "missing.safetensors")
    assert load_checkpoint(good).epoch == 1


def test_failed_write_keeps_previous_epoch_intact(
    tiles: TileSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    train(tiles, out, TrainSpec(epochs=1))
    before = (out / "epoch_001.safetensors").read_bytes()
    import slidesift.io.atomic as atomic

    real_replace = os.replace

    def full_disk(src: str, dst: str) -> None:
        if str(dst).endswith("epoch_002.safetensors"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OutputError, match=r"epoch_002\.safetensors.*disk is full"):
        train(tiles, out, TrainSpec(epochs=2), resume=True)
    monkeypatch.undo()
    assert (out / "epoch_001.safetensors").read_bytes() == before
    assert not (out / "epoch_002.safetensors").exists()
    assert not list(out.glob(".*.tmp"))
    resumed = train(tiles, out, TrainSpec(epochs=2), resume=True)
    assert resumed.resumed_from == 1
    assert load_checkpoint(out / "epoch_002.safetensors").epoch == 2


def test_dataloader_workers_give_the_same_batches(tiles: TileSet, tmp_path: Path) -> None:
    a = train(tiles, tmp_path / "w0", TrainSpec(epochs=1, workers=0, seed=2))
    b = train(tiles, tmp_path / "w1", TrainSpec(epochs=1, workers=1, seed=2))
    wa, wb = _weights(a.checkpoints[0]), _weights(b.checkpoints[0])
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
