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

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slidesift.checkpoint import load_checkpoint
from slidesift.errors import ConfigError, SelectionError, SelectionOnTestWarning
from slidesift.evaluate import evaluate_slides, read_slide, summary
from slidesift.io.atomic import atomic_write_json
from slidesift.manifest import ManifestEntry
from slidesift.segment import Classifiers, SegmentSpec

__all__ = [
    "SELECTION_FILE",
    "EpochScore",
    "Selection",
    "SelectionOnTestWarning",
    "read_selection",
    "select_epoch",
    "write_selection",
]

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
        A training run folder; or a folder of model bundles (``*.slidesift``, see
        :mod:`slidesift.bundle`) when it holds no checkpoint.
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
    paths = sorted(Path(run).glob("epoch_*.safetensors")) or sorted(Path(run).glob("*.slidesift"))
    if not paths:
        raise SelectionError(
            f"no epoch_*.safetensors (or *.slidesift bundles) in {run}",
            "train a model there first, or export the epochs to compare as bundles there",
        )
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


#: The file ``select`` writes into the run folder.
SELECTION_FILE = "selection.json"


def write_selection(run: str | os.PathLike[str], sel: Selection, metric: str) -> Path:
    """Write ``RUN/selection.json``: the metric, the best checkpoint and every epoch's figures.

    Figures that are not defined (NaN: no truth, no judged slide) are written as ``null``.
    """
    doc = {
        "metric": metric,
        "best": None if sel.best is None else str(sel.best.path),
        "epoch": None if sel.best is None else sel.best.epoch,
        "epochs": [{"epoch": e.epoch, "eligible": e.eligible, **e.figures} for e in sel.epochs],
    }
    return atomic_write_json(Path(run) / SELECTION_FILE, doc)


def read_selection(run: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``RUN/selection.json`` as written by :func:`write_selection` (``None`` when absent).

    Raises
    ------
    SelectionError
        The file is not JSON, or not an object whose ``epochs`` is a list of
        ``{epoch, ...}`` objects.
    """
    path = Path(run) / SELECTION_FILE
    if not path.is_file():
        return None
    hint = "selection.json is written by slidesift select; run it again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SelectionError(f"{path} is not readable JSON ({exc})", hint) from exc
    epochs = data.get("epochs") if isinstance(data, dict) else None
    if not isinstance(epochs, list) or not all(
        isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in epochs
    ):
        raise SelectionError(
            f"{path} is not a JSON object whose 'epochs' is a list of {{epoch, ...}} objects", hint
        )
    return dict(data)
