"""Model selection: score every epoch of a run on validation slides, pick the best (METHOD.md 4, 8).

Every epoch whose slide classification accuracy exceeds a floor (paper: 60%) is eligible; the
best by a chosen cohort metric (default mean Jaccard; recall as an option) wins. Slide
classification (:func:`slidesift.evaluate.classification_accuracy`): subtype models by majority
vote of tile subtypes; binary models call a slide tumor when at least one kept tile is tumor,
judged against normal and tumor labels (the paper's CAMELYON16 runs). An epoch is skipped only
when some slide is judged and the accuracy is at or below the floor; an unlabelled cohort
(accuracy NaN) qualifies every epoch. Each slide is read once for all epochs.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from slidesift.checkpoint import load_checkpoint
from slidesift.errors import ConfigError, SelectionError, SelectionOnTestWarning
from slidesift.evaluate import evaluate_slides, read_slide, summary
from slidesift.manifest import ManifestEntry
from slidesift.segment import Classifiers, SegmentSpec

__all__ = ["EpochScore", "Selection", "SelectionOnTestWarning", "select_epoch"]

METRICS = ("jaccard", "dice", "precision", "recall")


@dataclass(frozen=True)
class EpochScore:
    """One epoch's cohort figures."""

    epoch: int
    path: Path
    figures: dict[str, float]
    eligible: bool


@dataclass(frozen=True)
class Selection:
    """Every epoch's figures and the chosen one (``None`` when no epoch qualified)."""

    epochs: tuple[EpochScore, ...]
    best: EpochScore | None
    metric: str


def select_epoch(
    run: str | os.PathLike[str],
    entries: Sequence[ManifestEntry],
    spec: SegmentSpec | None = None,
    *,
    metric: str = "jaccard",
    min_accuracy: float = 0.6,
    on_epoch: Callable[[EpochScore], None] | None = None,
) -> Selection:
    """Score each ``epoch_*.safetensors`` of ``run`` on ``entries`` and pick the best.

    Parameters
    ----------
    run
        A training run folder.
    entries
        Slides with truth to choose on: the ``val`` split (a warning is given for ``test``
        rows, :class:`SelectionOnTestWarning`).
    spec
        Segmentation options used for every epoch.
    metric
        ``jaccard`` (default), ``dice``, ``precision`` or ``recall``: the cohort mean to maximise.
    min_accuracy
        Epochs at or below this slide classification accuracy are skipped.
    on_epoch
        Called after each epoch is scored.
    """
    if metric not in METRICS:
        raise ConfigError("metric", metric, f"one of {METRICS}")
    if any(e.split == "test" for e in entries):
        warnings.warn(
            "choosing the epoch on test slides (the paper's protocol): the chosen epoch's test "
            "scores are then optimistic. Choose on a val split (manifest split=val, "
            "`slidesift train --val-fraction`) and score test once.",
            SelectionOnTestWarning,
            stacklevel=2,
        )
    paths = sorted(Path(run).glob("epoch_*.safetensors"))
    if not paths:
        raise SelectionError(f"no epoch_*.safetensors in {run}", "train a model there first")
    scored_entries = [e for e in entries if e.has_truth]
    if not scored_entries:
        raise SelectionError(
            "model selection needs test slides with truth (or a normal label)",
            "give the manifest's split that has annotations (--split val)",
        )
    first = load_checkpoint(paths[0])
    slides = {e.name: read_slide(e, first.downsample) for e in scored_entries}
    results: list[EpochScore] = []
    for path in paths:
        ck = load_checkpoint(path)
        if ck.downsample != first.downsample:
            raise SelectionError(f"{path.name} was trained at another N than {paths[0].name}")
        outcomes = evaluate_slides(scored_entries, ck, spec, thumbs=slides,
                                   classifiers=Classifiers(ck))  # fmt: skip
        figures = summary(outcomes, ck.classes)
        acc = figures["classification_accuracy"]
        eligible = math.isnan(acc) or acc > min_accuracy
        es = EpochScore(ck.epoch, path, figures, eligible)
        results.append(es)
        if on_epoch is not None:
            on_epoch(es)
    candidates = [r for r in results if r.eligible and not math.isnan(r.figures[f"mean_{metric}"])]
    best = max(candidates, key=lambda r: (r.figures[f"mean_{metric}"], -r.epoch), default=None)
    return Selection(tuple(results), best, metric)
