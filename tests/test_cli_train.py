"""``slidesift train`` and ``slidesift subsets`` end to end on a phantom cohort."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidesift.checkpoint import load_checkpoint
from slidesift.cli.main import main

pytestmark = pytest.mark.learn


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())  # rich wraps long messages


def test_train_then_resume_with_more_epochs(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cache = str(tmp_path / "cache")
    code, text, err = run(
        capsys, "train", str(tiny_cohort), "--out", str(out), "-N", "480", "-T", "96",
        "--epochs", "1", "--cache", cache, "--tumor-max-background", "0.3",
        "--rotations", "--hed-jitter", "0.1",
    )  # fmt: skip
    assert code == 0, err
    assert "training tiles" in text and "rails [" in text and "held-out tiles" in text
    assert "augmentation: flips, rot90 + HED 0.1" in text
    assert "epoch   1" in text
    ck = load_checkpoint(out / "epoch_001.safetensors")
    assert ck.meta["tumor_max_background"] == 0.3 and ck.tile == 96
    run_doc = json.loads((out / "run.json").read_text())
    assert Path(run_doc["manifest"]) == tiny_cohort.resolve()
    code, text, err = run(capsys, "train", "--resume", "--out", str(out), "--epochs", "2",
                          "--cache", cache)  # fmt: skip
    assert code == 0, err
    assert "resumed after epoch 1" in text
    assert "augmentation: flips, rot90 + HED 0.1" in text  # the run's own, read back
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["holdout_raw_accuracy"]) <= 1.0 for r in rows)
    assert all(int(r["holdout_raw_tiles"]) > 0 for r in rows)
    # a second plain run into the same folder is refused, nothing is overwritten
    before = (out / "epoch_002.safetensors").read_bytes()
    code, _, err = run(capsys, "train", str(tiny_cohort), "--out", str(out), "-N", "480",
                       "-T", "96", "--epochs", "1", "--cache", cache)  # fmt: skip
    assert code == 5 and "already holds a training run" in err
    assert (out / "epoch_002.safetensors").read_bytes() == before


def test_tiles_only_exports_pngs_and_subtype_classes(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    tiles = tmp_path / "tiles"
    # N 640: at 480 the glandular slide's small tumor (6% of it, 39% bright lumina) leaves no
    # 96-px tile at or under the 50% background limit, and the cohort has one tumor class only
    code, _, err = run(
        capsys, "train", str(tiny_cohort), "-N", "640", "-T", "96", "--classes", "subtype",
        "--tiles-only", "--export-tiles", str(tiles), "--cache", str(tmp_path / "cache"),
        "--out", str(tmp_path / "never"),
    )  # fmt: skip
    assert code == 0, err
    assert {p.name for p in tiles.iterdir()} == {"non-tumor", "glandular", "solid"}
    counts = [len(list((tiles / c).glob("*.png"))) for c in ("non-tumor", "glandular", "solid")]
    assert counts[0] == counts[1] == counts[2] > 0
    assert not (tmp_path / "never").exists()


def test_raw_tile_source_exports_the_slides_own_pixels(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    masked, raw = tmp_path / "masked", tmp_path / "raw"
    for source, folder in (("masked", masked), ("raw", raw)):
        code, _, err = run(
            capsys, "train", str(tiny_cohort), "-N", "480", "-T", "96", "--tile-source", source,
            "--tiles-only", "--export-tiles", str(folder), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "never"),
        )  # fmt: skip
        assert code == 0, err

    def black_share(folder: Path) -> float:
        tiles = [cv2.imread(str(p)) for p in (folder / "non-tumor").glob("*.png")]
        return float(np.mean([(t.max(axis=2) == 0).mean() for t in tiles]))

    # masked non-tumor tiles have the tumor blacked out; raw tiles are never blacked out
    assert black_share(masked) > 0 and black_share(raw) == 0.0


def test_train_errors_have_exit_codes(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "train", str(tiny_cohort), "-N", "480", "-T", "600",
                       "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "smaller thumbnails" in err
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "r"))
    assert code == 2 and "MANIFEST" in err
    code, _, err = run(capsys, "train", "--resume", "--out", str(tmp_path / "nothing"))
    assert code == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,annotation,label,split\nmissing.svs,,tumor,train\n")
    code, _, err = run(capsys, "train", str(bad), "--out", str(tmp_path / "r"))
    assert code == 4 and "missing.svs" in err


def test_subsets_command_writes_csvs(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    code, text, err = run(capsys, "subsets", str(tiny_cohort), "--out", str(tmp_path / "s"),
                          "-k", "2")  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["subset_1.csv", "subset_2.csv"]
    assert "1 / 0 / 1" in text  # train / val / test of each label


def test_normalising_suggests_the_peak_frequency_background(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    code, text, err = run(
        capsys, "train", str(tiny_cohort), "-N", "480", "-T", "96", "--normalize", "macenko",
        "--tiles-only", "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, err
    assert "peak-frequency" in " ".join(text.split())
    code, text, err = run(
        capsys, "train", str(tiny_cohort), "-N", "480", "-T", "96", "--normalize", "reinhard",
        "--background", "peak-frequency", "--tiles-only", "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, err
    assert "peak-frequency" not in " ".join(text.split())


def test_val_fraction_writes_the_split_and_holds_out_val(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from slidesift.manifest import read_manifest, write_manifest

    rows = [replace(e, split=None) for e in read_manifest(tiny_cohort)]  # 2 + 2 subtypes
    manifest = write_manifest(tiny_cohort.parent / "unsplit.csv", rows)
    out = tmp_path / "run"
    code, text, err = run(
        capsys, "train", str(manifest), "--out", str(out), "-N", "480", "-T", "96",
        "--epochs", "1", "--val-fraction", "0.5", "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, err
    split = read_manifest(out / "manifest.csv")
    val = split.split("val")
    assert sorted(e.label for e in val) == ["glandular", "solid"]  # type: ignore[type-var]
    assert len(split.split("train")) == 2 and not split.split("test")
    doc = json.loads((out / "run.json").read_text())
    assert doc["holdout_split"] == "val" and doc["holdout_slides"] == [e.name for e in val]
    assert Path(doc["manifest"]) == (out / "manifest.csv").resolve()
    assert "2 val slides" in " ".join(text.split())
    # resuming keeps the same split
    code, text, err = run(capsys, "train", "--resume", "--out", str(out), "--epochs", "2",
                          "--cache", str(tmp_path / "cache"))  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["holdout_slides"] == [e.name for e in val]
