"""Cohort segmentation and scoring, outputs a pathologist opens, model selection, the CLI."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import LEARN_EPOCHS, LEARN_N, Learned
from slidesift.checkpoint import Checkpoint, load_checkpoint
from slidesift.cli.main import main
from slidesift.evaluate import (
    SlideOutcome,
    classification_accuracy,
    ensemble_csv,
    ensemble_votes,
    evaluate_slides,
    predicted_slide_class,
    summary,
)
from slidesift.io.annotations import read_geojson, read_truth
from slidesift.manifest import read_manifest, write_manifest
from slidesift.metrics import confusion, scores
from slidesift.segment import SegmentSpec
from slidesift.segment_outputs import write_segmentation
from slidesift.select import SelectionOnTestWarning, select_epoch

SPEC = SegmentSpec(stride=32)


@pytest.fixture(scope="module")
def cohort(learned: Learned) -> Path:
    """The manifest of the session's learned binary model's cohort."""
    return learned.manifest


@pytest.fixture(scope="module")
def run(learned: Learned, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's learned binary run (select writes selection.json into it)."""
    import shutil

    copy = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(learned.run, copy)
    return copy


@pytest.fixture(scope="module")
def checkpoint(run: Path, learned: Learned) -> Checkpoint:
    """Its best epoch (by held-out raw-tile balanced accuracy)."""
    return load_checkpoint(run / learned.best.name)


def test_outputs_and_geojson_round_trip(
    cohort: Path, checkpoint: Checkpoint, tmp_path: Path
) -> None:
    entries = read_manifest(cohort).split("test")
    outcomes = evaluate_slides(entries, checkpoint, SPEC, out=tmp_path, keep_results=True)
    assert [o.name for o in outcomes] == [e.name for e in entries]
    for o in outcomes:
        assert o.scores is not None and o.scores.jaccard >= 0.5  # the learned model finds it
        for kind in ("mask.png", "overlay.png", "errors.png", "tumor.geojson", "tiles.csv",
                     "locations.png"):  # fmt: skip
            # one layout for segment and evaluate: a folder per slide
            assert (tmp_path / o.name / f"{o.name}_{kind}").stat().st_size > 0
            assert not (tmp_path / f"{o.name}_{kind}").exists()
        r = o.result
        assert r is not None and r.thumb is not None
        if r.mask.any():
            back = read_geojson(tmp_path / o.name / f"{o.name}_tumor.geojson", r.thumb) > 0
            assert scores(confusion(back, r.mask)).jaccard >= 0.99
        # a mask that is surely not empty: the truth, written as a segmentation
        truth = read_truth(entries[0].annotation, r.thumb) if o is outcomes[0] else None
        if truth is not None:
            write_segmentation(tmp_path / "truth", "t", replace(r, mask=truth))
            back = read_geojson(tmp_path / "truth" / "t_tumor.geojson", r.thumb) > 0
            assert truth.any() and scores(confusion(back, truth)).jaccard >= 0.99
        rows = list(csv.DictReader((tmp_path / o.name / f"{o.name}_tiles.csv").open()))
        assert len(rows) == len(r.grid)
        assert sum(int(row["keep"]) for row in rows) == o.kept_tiles
    figures = summary(outcomes, checkpoint.classes)
    assert figures["mean_slides"] == len(entries)
    # binary: a slide with one tumor tile or more is a tumor slide; both test slides are
    assert classification_accuracy(outcomes, checkpoint.classes) == 1.0


def test_selection_scores_every_epoch_and_picks_the_best(cohort: Path, run: Path) -> None:
    entries = read_manifest(cohort).split("test")
    with pytest.warns(SelectionOnTestWarning, match="test slides"):
        sel = select_epoch(run, entries, SPEC, metric="recall")
    assert [e.epoch for e in sel.epochs] == list(range(1, LEARN_EPOCHS + 1))
    assert sel.best is not None and sel.best.eligible
    best = max(e.figures["mean_recall"] for e in sel.epochs)
    assert sel.best.figures["mean_recall"] == best
    with pytest.raises(ValueError, match="metric"):
        select_epoch(run, entries, SPEC, metric="accuracy")


def test_segment_and_select_commands(
    capsys: pytest.CaptureFixture[str], cohort: Path, run: Path, learned: Learned, tmp_path: Path
) -> None:
    out = tmp_path / "seg"
    code = main(["segment", str(run / learned.best.name), str(cohort), "--split",
                 "test", "--stride", "32", "--out", str(out)])  # fmt: skip
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "mean Jaccard" in text and "inference: onnx dense" in text
    rows = list(csv.DictReader((out / "scores.csv").open()))
    # the command's table is the library's scores of the same slides
    entries = read_manifest(cohort).split("test")
    expected = evaluate_slides(entries, load_checkpoint(run / learned.best.name), SPEC)
    assert [r["slide"] for r in rows] == [o.name for o in expected]
    for r, o in zip(rows, expected, strict=True):
        assert o.scores is not None and float(r["jaccard"]) == pytest.approx(o.scores.jaccard)
        assert float(r["jaccard"]) >= 0.5
        # beside it, the reference points of the same grid and sift
        assert o.ceilings is not None
        assert float(r["oracle_jaccard"]) == pytest.approx(o.ceilings.oracle.jaccard, abs=1e-6)
        assert float(r["oracle_jaccard"]) >= 0.6 and float(r["sift_ceiling"]) >= 0.8
        assert float(r["all_tissue_jaccard"]) < float(r["jaccard"])
    assert "tile oracle Jaccard" in text and "sift ceiling" in text
    assert "mean_jaccard" in json.loads((out / "summary.json").read_text())
    code = main(["select", str(run), str(cohort), "--stride", "32"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "best by mean jaccard" in text
    # the cohort has no val rows: it chose on test, and said so
    assert "warning" in text and "2 test slides" in " ".join(text.split())
    chosen = json.loads((run / "selection.json").read_text())
    assert 1 <= chosen["epoch"] <= LEARN_EPOCHS
    figures = {e["epoch"]: e["mean_jaccard"] for e in chosen["epochs"]}
    assert figures[chosen["epoch"]] == max(figures.values()) >= 0.55


def test_select_uses_the_val_split_that_train_drew(
    capsys: pytest.CaptureFixture[str], cohort: Path, run: Path, tmp_path: Path
) -> None:
    """``train --val-fraction`` writes RUN/manifest.csv; ``select RUN MANIFEST`` chooses on its
    val rows, without a warning, even when MANIFEST itself has none."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rows = read_manifest(cohort)
    val_name = rows.split("test")[0].name
    drawn = [replace(e, split="val") if e.name == val_name else e for e in rows]
    write_manifest(copy / "manifest.csv", drawn)
    code = main(["select", str(copy), str(cohort), "--stride", "32"])
    text, err = capsys.readouterr()
    assert code == 0, err
    flat = " ".join(text.split())
    assert "1 val slides (run/manifest.csv)" in flat and "warning" not in flat
    chosen = json.loads((copy / "selection.json").read_text())
    # scored on the val slide only: the figures are that slide's
    ck = load_checkpoint(copy / f"epoch_{chosen['epoch']:03d}.safetensors")
    entry = next(e for e in rows if e.name == val_name)
    (o,) = evaluate_slides([entry], ck, SPEC)
    assert o.scores is not None
    best = next(e for e in chosen["epochs"] if e["epoch"] == chosen["epoch"])
    assert best["mean_jaccard"] == pytest.approx(o.scores.jaccard)


def test_ablation_table_has_the_papers_rows(cohort: Path, checkpoint: Checkpoint) -> None:
    from slidesift.ablate import ablate

    entries = read_manifest(cohort).split("test")
    rows = ablate(entries, checkpoint, SPEC)
    assert [r.condition.split(" (")[0] for r in rows] == [
        "rails", "no rails", "rails + smoothing 50 px", "rails + smoothing 100 px",
        "rails + smoothing 150 px", "rails + shrink 5%", "rails + shrink 10%",
    ]  # fmt: skip
    plain = summary(evaluate_slides(entries, checkpoint, SPEC), checkpoint.classes)
    assert rows[0].figures["jaccard"] == pytest.approx(plain["mean_jaccard"], nan_ok=True)
    assert rows[2].smooth == round(50 * LEARN_N / 6000)
    rec = [r.figures["recall"] for r in rows]
    if not np.isnan(rec[0]):
        assert rec[6] <= rec[5] + 1e-12 <= rec[0] + 2e-12  # shrinking never finds more


def _outcome(name: str, label: str | None, counts: dict[str, int]) -> SlideOutcome:
    vote = max(counts, key=lambda k: counts[k]) if any(counts.values()) else None
    return SlideOutcome(name, label, vote, counts, None, sum(counts.values()), "x", {})


def test_binary_slide_classification_one_tumor_tile_makes_a_tumor_slide() -> None:
    binary = ("non-tumor", "tumor")
    outcomes = [
        _outcome("a", "tumor", {"tumor": 1}),  # right: one tile is enough
        _outcome("b", "normal", {"tumor": 0}),  # right
        _outcome("c", "Negative", {"tumor": 3}),  # wrong: a normal slide with tumor tiles
        _outcome("d", "tumor", {"tumor": 0}),  # wrong: nothing found
        _outcome("e", None, {"tumor": 5}),  # unlabelled: not judged
        _outcome("f", "normal", {}),  # right
    ]
    assert [predicted_slide_class(o, binary) for o in outcomes] == [
        "tumor", "normal", "tumor", "normal", "tumor", "normal",
    ]  # fmt: skip
    assert classification_accuracy(outcomes, binary) == pytest.approx(3 / 5)
    assert np.isnan(classification_accuracy(outcomes[4:5], binary))
    # subtype models judge only slides labelled with one of their subtypes
    three = ("non-tumor", "glandular", "solid")
    sub = [
        _outcome("a", "solid", {"glandular": 1, "solid": 4}),
        _outcome("b", "glandular", {"glandular": 1, "solid": 4}),
        _outcome("c", "normal", {"glandular": 9}),
    ]
    assert classification_accuracy(sub, three) == pytest.approx(1 / 2)


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
    capsys: pytest.CaptureFixture[str], cohort: Path, run: Path, tmp_path: Path
) -> None:
    ck = str(run / "epoch_002.safetensors")
    code = main(["segment", ck, str(cohort), "--split", "test", "--stride", "32",
                 "--out", str(tmp_path), "--ensemble", ck])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    scores_rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    rows = list(csv.DictReader((tmp_path / "ensemble.csv").open()))
    assert [r["slide"] for r in rows] == [r["slide"] for r in scores_rows]
    # the same checkpoint twice: the columns name its run folder to tell them apart
    assert list(rows[0])[2] == f"vote_{run.name}/epoch_002"
    for r, s in zip(rows, scores_rows, strict=True):
        assert r[f"vote_{run.name}/epoch_002"] == r["ensemble_vote"] == s["vote"]


def test_segment_outputs_option_picks_the_files_and_the_preview_size(
    capsys: pytest.CaptureFixture[str], cohort: Path, run: Path, learned: Learned, tmp_path: Path
) -> None:
    entry = read_manifest(cohort).split("test")[0]
    assert entry.annotation is not None
    code = main(["segment", str(run / learned.best.name), str(entry.slide), "--truth",
                 str(entry.annotation), "--stride", "32", "--out", str(tmp_path),
                 "--outputs", "errors,geojson", "--preview-px", "250"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = {p.name for p in (tmp_path / entry.name).iterdir()}
    assert written == {f"{entry.name}_errors.png", f"{entry.name}_tumor.geojson"}
    errors = cv2.imread(str(tmp_path / entry.name / f"{entry.name}_errors.png"))
    assert max(errors.shape[:2]) == 250  # N = 1000: a quarter
    # an unknown kind is a usage error that lists the valid ones, before anything runs
    code = main(["segment", str(run / learned.best.name), str(entry.slide), "--out",
                 str(tmp_path / "no"), "--outputs", "mask,overlays"])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "'overlays': names from mask, overlay, errors, geojson" in err
    assert not (tmp_path / "no").exists()
