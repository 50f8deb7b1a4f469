"""Scores of a predicted mask against the truth, slide votes, and cohort means (METHOD.md 6).

Everything comes from confusion counts, with explicit rules where a ratio has a zero
denominator:

- both masks empty: Jaccard, Dice, precision and recall are all 1 (a correct empty answer);
- prediction empty, truth not: precision is undefined (NaN: nothing was claimed), recall 0,
  Jaccard and Dice 0;
- truth empty, prediction not: recall is undefined (NaN: nothing to find), precision 0,
  Jaccard and Dice 0.

Means skip NaN. "Nonzero" means (the paper's CAMELYON16 Table 4) leave out slides whose
prediction is empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError

__all__ = [
    "Confusion",
    "Scores",
    "cohort_means",
    "confusion",
    "ensemble_vote",
    "majority_vote",
    "scores",
]


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of one slide: true/false positives/negatives."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def predicted(self) -> int:
        """Pixels predicted tumor."""
        return self.tp + self.fp

    @property
    def actual(self) -> int:
        """Pixels that are tumor in the truth."""
        return self.tp + self.fn


def confusion(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> Confusion:
    """Confusion counts of two ``(H, W)`` bool masks on the same grid."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ConfigError("mask", p.shape, f"the truth's shape {t.shape}")
    tp = int(np.count_nonzero(p & t))
    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    return Confusion(tp, n_p - tp, n_t - tp, p.size - n_p - n_t + tp)


@dataclass(frozen=True)
class Scores:
    """Jaccard, Dice, precision and recall of one slide (see the module's zero rules)."""

    jaccard: float
    dice: float
    precision: float
    recall: float
    empty_prediction: bool

    def to_dict(self) -> dict[str, float | bool]:
        """Plain values."""
        return asdict(self)


def scores(c: Confusion) -> Scores:
    """Scores from confusion counts."""
    if c.predicted == 0 and c.actual == 0:
        return Scores(1.0, 1.0, 1.0, 1.0, True)
    union = c.tp + c.fp + c.fn
    precision = c.tp / c.predicted if c.predicted else math.nan
    recall = c.tp / c.actual if c.actual else math.nan
    return Scores(
        jaccard=c.tp / union,
        dice=2 * c.tp / (2 * c.tp + c.fp + c.fn),
        precision=precision,
        recall=recall,
        empty_prediction=c.predicted == 0,
    )


def cohort_means(per_slide: Sequence[Scores], *, nonzero: bool = False) -> dict[str, float]:
    """Mean of each score over slides (NaN skipped); ``nonzero`` leaves out empty predictions.

    Returns
    -------
    dict
        ``jaccard``, ``dice``, ``precision``, ``recall`` and ``slides`` (how many were averaged).
    """
    chosen = [s for s in per_slide if not (nonzero and s.empty_prediction)]
    out: dict[str, float] = {"slides": float(len(chosen))}
    for name in ("jaccard", "dice", "precision", "recall"):
        values = [getattr(s, name) for s in chosen if not math.isnan(getattr(s, name))]
        out[name] = float(np.mean(values)) if values else math.nan
    return out


def majority_vote(counts: Mapping[str, int]) -> str | None:
    """The subtype with most tiles (ties: the first name in sorted order); ``None`` if none."""
    best = [(-n, name) for name, n in counts.items() if n > 0]
    return min(best)[1] if best else None


def ensemble_vote(models_counts: Iterable[Mapping[str, int]]) -> str | None:
    """Add the label counts of several models, then vote (the paper's 3-model ensemble)."""
    total: dict[str, int] = {}
    for counts in models_counts:
        for name, n in counts.items():
            total[name] = total.get(name, 0) + int(n)
    return majority_vote(total)
