"""Subtype models end to end: three classes trained, segmented, voted, selected, ensembled.

The session's three-class model (``conftest.learned_subtypes``: non-tumor, glandular, solid;
one test slide of each subtype) must classify its test slides by the majority vote of their
tiles, build masks from the dominant subtype's tiles only, and go through selection with the
paper's > 60% slide-accuracy filter. Trains for about a minute on two cores: marked slow.
"""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from conftest import Learned
from slidesift.assemble import assemble
from slidesift.checkpoint import load_checkpoint
from slidesift.evaluate import ensemble_votes, evaluate_slides, summary
from slidesift.select import select_epoch

pytestmark = [pytest.mark.slow, pytest.mark.learn]

SPEC_STRIDE = 32


def test_three_class_model_learns_the_subtypes(learned_subtypes: Learned) -> None:
    rows = list(csv.DictReader((learned_subtypes.run / "log.csv").open()))
    best = next(r for r in rows if learned_subtypes.best.stem == f"epoch_{int(r['epoch']):03d}")
    ck = load_checkpoint(learned_subtypes.best)
    assert ck.classes == ("non-tumor", "glandular", "solid")
    assert float(best["holdout_raw_balanced_accuracy"]) >= 0.75  # chance: 1/3


def test_votes_classify_every_test_slide_and_masks_use_the_dominant_subtype(
    learned_subtypes: Learned,
) -> None:
    from slidesift.segment import SegmentSpec

    ck = load_checkpoint(learned_subtypes.best)
    entries = learned_subtypes.test_entries
    assert sorted(e.label for e in entries) == ["glandular", "solid"]  # type: ignore[type-var]
    outcomes = evaluate_slides(entries, ck, SegmentSpec(stride=SPEC_STRIDE), keep_results=True)
    for o in outcomes:
        assert o.vote == o.label, (o.name, o.counts)
        assert o.counts[o.label] > sum(n for k, n in o.counts.items() if k != o.label)
        r = o.result
        assert r is not None and r.assembly.mode == "dominant"
        # the mask is the union of the dominant subtype's kept tiles, nothing else
        labels = np.where(r.keep, np.argmax(r.probs, axis=-1), 0)
        dominant = labels == ck.classes.index(o.label)
        np.testing.assert_array_equal(r.assembly.mask, r.grid.location_map(dominant))
        union = assemble(r.grid, r.keep, r.probs, ck.classes, mode="union").mask
        assert union.sum() >= r.assembly.mask.sum()
        assert o.scores is not None and o.scores.jaccard >= 0.4 and o.scores.recall >= 0.6
    figures = summary(outcomes, ck.classes)
    assert figures["classification_accuracy"] == 1.0


@pytest.mark.filterwarnings("ignore::slidesift.select.SelectionOnTestWarning")  # on purpose
def test_selection_skips_epochs_at_or_below_60_percent(learned_subtypes: Learned) -> None:
    from slidesift.segment import SegmentSpec

    spec = SegmentSpec(stride=SPEC_STRIDE)
    entries = learned_subtypes.test_entries
    honest = select_epoch(learned_subtypes.run, entries, spec)
    assert honest.best is not None
    assert honest.best.figures["classification_accuracy"] > 0.6
    # swap the two slides' labels: an epoch that voted both right now votes both wrong
    a, b = entries
    swapped = [dataclasses.replace(a, label=b.label), dataclasses.replace(b, label=a.label)]
    sel = select_epoch(learned_subtypes.run, swapped, spec)
    before = {e.epoch: e.figures["classification_accuracy"] for e in honest.epochs}
    for e in sel.epochs:
        assert e.eligible == (e.figures["classification_accuracy"] > 0.6)
        if before[e.epoch] == 1.0:
            assert e.figures["classification_accuracy"] == 0.0 and not e.eligible
    assert before[honest.best.epoch] == 1.0  # so the honest choice is skipped now
    assert sel.best is None or (sel.best.eligible and sel.best.epoch != honest.best.epoch)
    # the floor is a parameter: at 0.0 only the epochs voting every slide wrong are skipped
    lower = select_epoch(learned_subtypes.run, swapped, spec, min_accuracy=0.0)
    assert all(e.eligible == (e.figures["classification_accuracy"] > 0.0) for e in lower.epochs)


def test_ensemble_of_epochs_votes_every_test_slide_right(learned_subtypes: Learned) -> None:
    from slidesift.segment import SegmentSpec

    entries = learned_subtypes.test_entries
    # the three epochs that did best on the validation slides (as a user would pick them)
    with (learned_subtypes.run / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    rows.sort(key=lambda r: -float(r["holdout_raw_balanced_accuracy"]))
    epochs = [learned_subtypes.run / f"epoch_{int(r['epoch']):03d}.safetensors" for r in rows[:3]]
    per_model = [
        evaluate_slides(entries, load_checkpoint(p), SegmentSpec(stride=SPEC_STRIDE))
        for p in epochs
    ]
    votes = ensemble_votes(per_model)
    assert [v.vote for v in votes] == [e.label for e in entries]
    # the ensemble adds label counts: its vote is the argmax of the summed counts
    for i, v in enumerate(votes):
        total: dict[str, int] = {}
        for outcomes in per_model:
            for k, n in outcomes[i].counts.items():
                total[k] = total.get(k, 0) + n
        assert v.vote == max(total, key=lambda k: total[k])
