"""Scores from confusion counts against hand-computed cases, votes and cohort means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slidesift.metrics import (
    Confusion,
    cohort_means,
    confusion,
    ensemble_vote,
    majority_vote,
    scores,
)


def test_hand_computed_case() -> None:
    truth = np.zeros((4, 5), bool)
    truth[1:3, 1:4] = True  # 6 px
    pred = np.zeros((4, 5), bool)
    pred[1:3, 2:5] = True  # 6 px, 4 of them on truth
    c = confusion(pred, truth)
    assert c == Confusion(tp=4, fp=2, fn=2, tn=12)
    s = scores(c)
    assert s.jaccard == pytest.approx(4 / 8)
    assert s.dice == pytest.approx(8 / 12)
    assert s.precision == pytest.approx(4 / 6) and s.recall == pytest.approx(4 / 6)
    assert not s.empty_prediction


def test_empty_rules() -> None:
    both = scores(Confusion(0, 0, 0, 10))
    assert (both.jaccard, both.dice, both.precision, both.recall) == (1.0, 1.0, 1.0, 1.0)
    assert both.empty_prediction
    missed = scores(Confusion(0, 0, 5, 5))
    assert missed.jaccard == 0 and missed.recall == 0 and math.isnan(missed.precision)
    false_alarm = scores(Confusion(0, 3, 0, 7))
    assert false_alarm.precision == 0 and math.isnan(false_alarm.recall)
    assert not false_alarm.empty_prediction


def test_means_skip_nan_and_nonzero_leaves_out_empty_predictions() -> None:
    per = [
        scores(Confusion(4, 2, 2, 12)),  # J 0.5
        scores(Confusion(0, 0, 5, 5)),  # empty prediction: J 0, precision NaN
        scores(Confusion(9, 1, 0, 0)),  # J 0.9
    ]
    m = cohort_means(per)
    assert m["slides"] == 3 and m["jaccard"] == pytest.approx((0.5 + 0 + 0.9) / 3)
    assert m["precision"] == pytest.approx((4 / 6 + 0.9) / 2)
    nz = cohort_means(per, nonzero=True)
    assert nz["slides"] == 2 and nz["jaccard"] == pytest.approx(0.7)


def test_votes() -> None:
    assert majority_vote({"msi-h": 3, "msi-l": 5}) == "msi-l"
    assert majority_vote({"b": 2, "a": 2}) == "a"
    assert majority_vote({"a": 0}) is None
    assert ensemble_vote([{"h": 10, "l": 2}, {"h": 1, "l": 6}, {"h": 0, "l": 4}]) == "l"
    with pytest.raises(ValueError):
        confusion(np.zeros((2, 2), bool), np.zeros((3, 2), bool))
