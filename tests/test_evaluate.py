"""Cohort segmentation and scoring, outputs a pathologist opens, model selection, the CLI."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from slidesift.checkpoint import Checkpoint, load_checkpoint
from slidesift.cli.main import main
from slidesift.evaluate import (
    SlideOutcome,
    classification_accuracy,
    ensemble_csv,
    ensemble_votes,
    evaluate_slides,
    summary,
)
from slidesift.io.annotations import read_geojson, read_truth
from slidesift.io.segment_outputs import write_segmentation
from slidesift.manifest import read_manifest
from slidesift.metrics import confusion, scores
from slidesift.segment import SegmentSpec
from slidesift.select import select_epoch

SPEC = SegmentSpec(stride=32)


@pytest.fixture(scope="module")
def run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's two-epoch run (select writes selection.json into it)."""
    import shutil

    copy = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.fixture(scope="module")
def checkpoint(run: Path) -> Checkpoint:
    return load_checkpoint(run / "epoch_002.safetensors")


def test_outputs_and_geojson_round_trip(
    tiny_cohort: Path, checkpoint: Checkpoint, tmp_path: Path
) -> None:
    entries = read_manifest(tiny_cohort).split("test")
    outcomes = evaluate_slides(entries, checkpoint, SPEC, out=tmp_path, keep_results=True)
    assert [o.name for o in outcomes] == [e.name for e in entries]
    for o in outcomes:
        assert o.scores is not None and 0 <= o.scores.jaccard <= 1
        for kind in ("mask.png", "overlay.png", "errors.png", "tumor.geojson", "tiles.csv",
                     "locations.png"):  # fmt: skip
            assert (tmp_path / f"{o.name}_{kind}").stat().st_size > 0
        r = o.result
        assert r is not None and r.thumb is not None
        if r.mask.any():
            back = read_geojson(tmp_path / f"{o.name}_tumor.geojson", r.thumb) > 0
            assert scores(confusion(back, r.mask)).jaccard >= 0.99
        # a mask that is surely not empty: the truth, written as a segmentation
        truth = read_truth(entries[0].annotation, r.thumb) if o is outcomes[0] else None
        if truth is not None:
            write_segmentation(tmp_path / "truth", "t", replace(r, mask=truth))
            back = read_geojson(tmp_path / "truth" / "t_tumor.geojson", r.thumb) > 0
            assert truth.any() and scores(confusion(back, truth)).jaccard >= 0.99
        rows = list(csv.DictReader((tmp_path / f"{o.name}_tiles.csv").open()))
        assert len(rows) == len(r.grid)
        assert sum(int(row["keep"]) for row in rows) == o.kept_tiles
    figures = summary(outcomes, checkpoint.classes)
    assert figures["mean_slides"] == len(entries)
    assert np.isnan(classification_accuracy(outcomes, checkpoint.classes))  # binary: no vote


def test_selection_scores_every_epoch_and_picks_the_best(tiny_cohort: Path, run: Path) -> None:
    entries = read_manifest(tiny_cohort).split("test")
    sel = select_epoch(run, entries, SPEC, metric="recall")
    assert [e.epoch for e in sel.epochs] == [1, 2]
    assert sel.best is not None
    best = max(e.figures["mean_recall"] for e in sel.epochs)
    assert sel.best.figures["mean_recall"] == best
    with pytest.raises(ValueError, match="metric"):
        select_epoch(run, entries, SPEC, metric="accuracy")


def test_segment_and_select_commands(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "seg"
    code = main(["segment", str(run / "epoch_002.safetensors"), str(tiny_cohort), "--split",
                 "test", "--stride", "32", "--out", str(out)])  # fmt: skip
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "mean Jaccard" in text and "inference: onnx dense" in text
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 2 and all(0 <= float(r["jaccard"]) <= 1 for r in rows)
    assert "mean_jaccard" in json.loads((out / "summary.json").read_text())
    code = main(["select", str(run), str(tiny_cohort), "--stride", "32"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "best by mean jaccard" in text
    assert json.loads((run / "selection.json").read_text())["epoch"] in (1, 2)


def test_ablation_table_has_the_papers_rows(tiny_cohort: Path, checkpoint: Checkpoint) -> None:
    from slidesift.ablate import ablate

    entries = read_manifest(tiny_cohort).split("test")
    rows = ablate(entries, checkpoint, SPEC)
    assert [r.condition.split(" (")[0] for r in rows] == [
        "rails", "no rails", "rails + smoothing 50 px", "rails + smoothing 100 px",
        "rails + smoothing 150 px", "rails + shrink 5%", "rails + shrink 10%",
    ]  # fmt: skip
    plain = summary(evaluate_slides(entries, checkpoint, SPEC), checkpoint.classes)
    assert rows[0].figures["jaccard"] == pytest.approx(plain["mean_jaccard"], nan_ok=True)
    assert rows[2].smooth == round(50 * 480 / 6000)
    rec = [r.figures["recall"] for r in rows]
    if not np.isnan(rec[0]):
        assert rec[6] <= rec[5] + 1e-12 <= rec[0] + 2e-12  # shrinking never finds more


def _outcome(name: str, label: str | None, counts: dict[str, int]) -> SlideOutcome:
    vote = max(counts, key=lambda k: counts[k]) if any(counts.values()) else None
    return SlideOutcome(name, label, vote, counts, None, sum(counts.values()), "x", {})


def test_ensemble_adds_counts_before_voting() -> None:
    a = [_outcome("s1", "solid", {"glandular": 10, "solid": 2}), _outcome("s2", None, {})]
    b = [_outcome("s1", "solid", {"glandular": 1, "solid": 6}), _outcome("s2", None, {})]
    c = [_outcome("s1", "solid", {"glandular": 0, "solid": 4}), _outcome("s2", None, {})]
    votes = ensemble_votes([a, b, c])
    # two of three models say solid, but glandular has more tiles: 11 vs 12 -> solid
    assert votes[0].votes == ("glandular", "solid", "solid") and votes[0].vote == "solid"
    c[0] = _outcome("s1", "solid", {"glandular": 0, "solid": 2})
    # 11 glandular vs 10 solid: counts win over the 2-to-1 majority of models
    assert ensemble_votes([a, b, c])[0].vote == "glandular"
    assert votes[1].vote is None
    text = ensemble_csv(votes, ["m1", "m2", "m3"])
    assert text.splitlines()[0] == "slide,label,vote_m1,vote_m2,vote_m3,ensemble_vote"
    with pytest.raises(ValueError, match="same slides"):
        ensemble_votes([a, b[::-1]])


def test_segment_ensemble_of_one_model_twice_agrees_with_it(
    capsys: pytest.CaptureFixture[str], tiny_cohort: Path, run: Path, tmp_path: Path
) -> None:
    ck = str(run / "epoch_002.safetensors")
    code = main(["segment", ck, str(tiny_cohort), "--split", "test", "--stride", "32",
                 "--out", str(tmp_path), "--ensemble", ck])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    scores_rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    rows = list(csv.DictReader((tmp_path / "ensemble.csv").open()))
    assert [r["slide"] for r in rows] == [r["slide"] for r in scores_rows]
    # the same checkpoint twice: the columns name its run folder to tell them apart
    assert list(rows[0])[2] == f"vote_{run.name}/epoch_002"
    for r, s in zip(rows, scores_rows, strict=True):
        assert r[f"vote_{run.name}/epoch_002"] == r["ensemble_vote"] == s["vote"]
