"""Training the U-Net baseline, and its checkpoints in segment, select, evaluate and report.

Real training on the tiny phantom cohort at N 300, T 64 (the network's smallest sensible
tile), two epochs: checkpoints, the log, an exact resume, and the commands that take runs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

N, T = 300, 64


@dataclass(frozen=True)
class UnetRun:
    manifest: Path
    run: Path
    cache: Path


def _train(manifest: Path, out: Path, cache: Path, *, epochs: int = 2, **kw: object) -> object:
    from slidesift.cache import ThumbCache
    from slidesift.prepare import prepare_slides
    from slidesift.tileset import TileSetSpec
    from slidesift.train_spec import TrainSpec
    from slidesift.unet_train import train_unet

    slides = prepare_slides(manifest, longest=N, mpp=None, cache=ThumbCache(cache))
    spec = TrainSpec(epochs=epochs, batch_size=8, lr=1e-3, workers=0, device="cpu")
    return train_unet(
        slides.train, out, spec, TileSetSpec(tile=T, longest=N), holdout=slides.holdout, **kw
    )


@pytest.fixture(scope="module")
def unet_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> UnetRun:
    root = tmp_path_factory.mktemp("unet")
    _train(tiny_cohort, root / "run", root / "cache")
    return UnetRun(tiny_cohort, root / "run", root / "cache")


def test_a_run_has_a_unet_checkpoint_per_epoch_and_a_log(unet_run: UnetRun) -> None:
    from slidesift.checkpoint import UNET, load_checkpoint
    from slidesift.unet_infer import unet_from_checkpoint

    ckpt = load_checkpoint(unet_run.run / "epoch_002.safetensors")
    assert ckpt.architecture == UNET and ckpt.tile == T and ckpt.epoch == 2
    assert ckpt.meta["tile_rule"] == 0.7 and ckpt.meta["parameters"]["trainable"] == 10_071_501
    net = unet_from_checkpoint(ckpt)
    assert sum(p.numel() for p in net.parameters()) == 10_071_501
    log = (unet_run.run / "log.csv").read_text().splitlines()
    assert len(log) == 3
    row = dict(zip(log[0].split(","), log[2].split(","), strict=True))
    assert 0.0 <= float(row["holdout_raw_accuracy"]) <= 1.0 and int(row["holdout_raw_tiles"]) > 0
    assert row["masked_holdout_accuracy"] == ""  # no blacked-out tiles for the U-Net
    run = json.loads((unet_run.run / "run.json").read_text())
    assert run["arch"] == UNET and run["tiles"]["count"] > 0
    a = load_checkpoint(unet_run.run / "epoch_001.safetensors").state
    b = ckpt.state
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # it trained


def test_an_interrupted_run_resumes_to_the_same_weights(unet_run: UnetRun, tmp_path: Path) -> None:
    from slidesift.checkpoint import load_checkpoint
    from slidesift.train_spec import TrainCallbacks

    class Stop(Exception):
        pass

    def stop(record: object, path: Path) -> None:
        raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        _train(unet_run.manifest, out, unet_run.cache, callbacks=TrainCallbacks(on_epoch_end=stop))
    assert (out / "epoch_001.safetensors").exists() and not (out / "epoch_002.safetensors").exists()
    result = _train(unet_run.manifest, out, unet_run.cache, resume=True)
    assert result.resumed_from == 1  # type: ignore[attr-defined]
    resumed = load_checkpoint(out / "epoch_002.safetensors").state
    straight = load_checkpoint(unet_run.run / "epoch_002.safetensors").state
    assert resumed.keys() == straight.keys()
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


def test_a_finished_run_is_not_overwritten(unet_run: UnetRun) -> None:
    from slidesift.errors import TrainingError

    with pytest.raises(TrainingError, match="already holds"):
        _train(unet_run.manifest, unet_run.run, unet_run.cache)


def test_segment_select_evaluate_and_report_take_unet_runs(
    unet_run: UnetRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from slidesift.cli.main import cli

    monkeypatch.setenv("SLIDESIFT_CACHE", str(unet_run.cache))
    run = tmp_path / "run"
    shutil.copytree(unet_run.run, run)
    runner = CliRunner()
    sel = runner.invoke(cli, ["select", str(run), str(unet_run.manifest), "--min-accuracy", "-1"])
    assert sel.exit_code == 0, sel.output
    chosen = json.loads((run / "selection.json").read_text())
    assert Path(chosen["best"]).name in {"epoch_001.safetensors", "epoch_002.safetensors"}
    out = tmp_path / "seg"
    ev = runner.invoke(
        cli,
        ["evaluate", str(run / "epoch_002.safetensors"), str(unet_run.manifest), "--split",
         "test", "--workers", "0", "--out", str(out)],
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slides"] == 2 and summary["ok"] == 2
    assert summary["mean_oracle_jaccard"] > 0  # the ceilings are measured on the U-Net's grid
    assert "torch unet-effb0" in (out / "scores.csv").read_text()
    rep = runner.invoke(cli, ["report", str(out), "--run", str(run)])
    assert rep.exit_code == 0, rep.output
    html = (out / "report.html").read_text()
    assert "U-Net/EfficientNet-B0" in html and "10,071,501" in html
    info = runner.invoke(cli, ["info", str(run / "epoch_002.safetensors")])
    assert info.exit_code == 0 and "U-Net/EfficientNet-B0" in info.output
    assert "10,071,501" in info.output and ">= 70%" in info.output
    exp = runner.invoke(
        cli, ["export", str(run / "epoch_002.safetensors"), "--out", str(tmp_path / "m.slidesift")]
    )
    assert exp.exit_code != 0 and "U-Net" in str(exp.exception)
