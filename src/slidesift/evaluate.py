"""Segment the slides of a manifest with one checkpoint and score them (METHOD.md section 6).

Each slide is read once at the checkpoint's N; with truth (a mask, XML, GeoJSON, or a normal
label) it gets Jaccard, Dice, precision and recall; every slide gets its majority vote. The
cohort gets means, "nonzero" means and the slide classification accuracy (slides whose label
is one of the model's subtypes).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from slidesift.ceilings import Ceilings, ceilings
from slidesift.checkpoint import Checkpoint
from slidesift.io.annotations import read_truth
from slidesift.io.downsample import Downsample
from slidesift.io.slide import Thumb, open_slide, read_thumb
from slidesift.manifest import NORMAL_LABELS, ManifestEntry
from slidesift.metrics import Scores, cohort_means, confusion, ensemble_vote, scores
from slidesift.segment import Classifiers, SegmentResult, SegmentSpec, segment
from slidesift.sift import warm_up

if TYPE_CHECKING:
    from slidesift.segment_outputs import OutputSpec

__all__ = [
    "EnsembleVote",
    "SlideOutcome",
    "classification_accuracy",
    "ensemble_csv",
    "ensemble_votes",
    "evaluate_slide",
    "evaluate_slides",
    "predicted_slide_class",
    "read_slide",
    "slide_class",
    "summary",
]


@dataclass(frozen=True)
class SlideOutcome:
    """One slide's segmentation and scores."""

    name: str
    label: str | None
    vote: str | None
    counts: dict[str, int]
    scores: Scores | None
    kept_tiles: int
    inference: str
    seconds: dict[str, float]
    result: SegmentResult | None = field(default=None, repr=False)
    ceilings: Ceilings | None = None


def read_slide(
    entry: ManifestEntry, downsample: Downsample
) -> tuple[Thumb, NDArray[np.bool_] | None]:
    """The slide's thumbnail and its truth on that grid (``None`` when unknown)."""
    with open_slide(entry.slide) as slide:
        thumb = read_thumb(slide, **downsample.to_dict())
    if entry.annotation is not None:
        return thumb, np.asarray(read_truth(entry.annotation, thumb), bool)
    if entry.is_normal:
        return thumb, np.zeros(thumb.pixels.shape[:2], bool)
    return thumb, None


def evaluate_slides(
    entries: Sequence[ManifestEntry],
    checkpoint: Checkpoint,
    spec: SegmentSpec | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    thumbs: dict[str, tuple[Thumb, NDArray[np.bool_] | None]] | None = None,
    classifiers: Classifiers | None = None,
    keep_results: bool = False,
    on_slide: Callable[[SlideOutcome], None] | None = None,
    outputs: OutputSpec | str | Iterable[str] | None = None,
) -> list[SlideOutcome]:
    """Segment and score every entry.

    Parameters
    ----------
    entries
        Slides (with their truth and labels).
    checkpoint
        The model.
    spec
        Segmentation options.
    out
        Write each slide's outputs (:func:`write_segmentation`) into ``out/<name>/``.
    thumbs
        Already read ``name -> (thumb, truth)`` (model selection reads each slide once).
    classifiers
        Shared classifiers.
    keep_results
        Keep each :class:`SegmentResult` in its outcome (memory: one thumbnail per slide).
    on_slide
        Called after each slide.
    outputs
        Which files to write with ``out`` (:class:`~slidesift.segment_outputs.OutputSpec` or
        kind names; default: all, previews at 2000 px).

    Raises
    ------
    ConfigError
        ``outputs`` names an unknown kind (before any slide is read).
    """
    from slidesift.segment_outputs import OutputSpec

    chosen = OutputSpec.of(outputs)
    classifiers = classifiers or Classifiers(checkpoint)
    outcomes = []
    for entry in entries:
        read = thumbs.get(entry.name) if thumbs is not None else None
        outcome = evaluate_slide(
            entry, checkpoint, spec, out=out, read=read, classifiers=classifiers,
            keep_result=keep_results, outputs=chosen,
        )  # fmt: skip
        outcomes.append(outcome)
        if on_slide is not None:
            on_slide(outcome)
    return outcomes


def evaluate_slide(
    entry: ManifestEntry,
    checkpoint: Checkpoint,
    spec: SegmentSpec | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    read: tuple[Thumb, NDArray[np.bool_] | None] | None = None,
    classifiers: Classifiers | None = None,
    keep_result: bool = False,
    outputs: OutputSpec | str | Iterable[str] | None = None,
) -> SlideOutcome:
    """Segment and score one slide (one step of :func:`evaluate_slides`).

    Parameters
    ----------
    entry
        The slide, its truth and label.
    checkpoint
        The model.
    spec
        Segmentation options.
    out
        The cohort output folder: the slide's outputs (:func:`write_segmentation`) go into
        ``out/<entry.name>/``, the layout every command shares (``slidesift evaluate`` too).
    read
        The slide's already read ``(thumb, truth)`` (:func:`read_slide`).
    classifiers
        Shared classifiers.
    keep_result
        Keep the :class:`SegmentResult` in the outcome.
    outputs
        Which files to write with ``out`` (:class:`~slidesift.segment_outputs.OutputSpec` or
        kind names; default: all, previews at 2000 px).
    """
    from slidesift.segment_outputs import OutputSpec, write_segmentation

    chosen = OutputSpec.of(outputs)  # a bad name fails before the slide is read
    warm_up(checkpoint.sift)  # the sift's compiled kernels load while the slide is read
    thumb, truth = read if read is not None else read_slide(entry, checkpoint.downsample)
    r = segment(entry.slide, checkpoint, spec, classifiers=classifiers, thumb=thumb)
    s = scores(confusion(r.mask, truth)) if truth is not None else None
    refs = None
    if truth is not None:
        spec_used = spec or SegmentSpec()
        refs = ceilings(
            r.pixels, truth, r.grid, r.keep, checkpoint.sift, mode=r.assembly.mode,
            threshold=spec_used.threshold,
        )  # fmt: skip
    if out is not None:
        write_segmentation(Path(out) / entry.name, entry.name, r, truth, outputs=chosen)
    return SlideOutcome(
        entry.name,
        entry.label,
        r.vote,
        dict(r.assembly.counts),
        s,
        int(r.keep.sum()),
        r.inference,
        r.seconds,
        r if keep_result else None,
        refs,
    )


@dataclass(frozen=True)
class EnsembleVote:
    """One slide's vote by several models: each model's own and the ensemble's.

    The ensemble adds the models' tile label counts before the majority vote (the paper's
    three-model ensemble), so a confident model with many tiles outweighs a hesitant one.
    """

    name: str
    label: str | None
    votes: tuple[str | None, ...]
    vote: str | None


def ensemble_votes(per_model: Sequence[Sequence[SlideOutcome]]) -> list[EnsembleVote]:
    """Combine several models' outcomes on the same slides (same order) into ensemble votes.

    Raises
    ------
    ValueError
        The models' outcome lists do not name the same slides in the same order.
    """
    if not per_model:
        return []
    names = [o.name for o in per_model[0]]
    for outcomes in per_model[1:]:
        if [o.name for o in outcomes] != names:
            raise ValueError("every model's outcomes must list the same slides in one order")
    return [
        EnsembleVote(
            slide[0].name,
            slide[0].label,
            tuple(o.vote for o in slide),
            ensemble_vote(o.counts for o in slide),
        )
        for slide in zip(*per_model, strict=True)
    ]


def ensemble_csv(votes: Sequence[EnsembleVote], models: Sequence[str]) -> str:
    """One row per slide: name, label, each model's vote, the ensemble's vote."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["slide", "label", *(f"vote_{m}" for m in models), "ensemble_vote"])
    for v in votes:
        w.writerow([v.name, v.label or "", *(x or "" for x in v.votes), v.vote or ""])
    return buf.getvalue()


def slide_class(outcome: SlideOutcome, classes: Sequence[str]) -> str | None:
    """The class a slide is judged by: its label, read for the model's kind.

    Subtype models: the label when it is one of the model's subtypes, else ``None`` (not
    judged). Binary models: ``normal`` for a normal label (:data:`NORMAL_LABELS`), ``tumor``
    for any other label, ``None`` for an unlabelled slide.
    """
    label = outcome.label
    if label is None:
        return None
    if len(classes) > 2:
        return label if label in classes[1:] else None
    return "normal" if label.lower() in NORMAL_LABELS else "tumor"


def predicted_slide_class(outcome: SlideOutcome, classes: Sequence[str]) -> str:
    """The slide's predicted class: the majority vote of its tumor tiles' subtypes (subtype
    models), or, for binary models, ``tumor`` when **at least one** kept tile is classified
    tumor, else ``normal`` (the rule of the paper's CAMELYON16 slide classification)."""
    if len(classes) > 2:
        return outcome.vote or "normal"
    return "tumor" if outcome.vote is not None else "normal"


def classification_accuracy(outcomes: Sequence[SlideOutcome], classes: Sequence[str]) -> float:
    """Share of judged slides (:func:`slide_class`) whose predicted class is their class.

    NaN when no slide is judged (an unlabelled cohort, or no subtype label).
    """
    judged = [(o, c) for o in outcomes if (c := slide_class(o, classes)) is not None]
    if not judged:
        return math.nan
    return sum(predicted_slide_class(o, classes) == c for o, c in judged) / len(judged)


def summary(outcomes: Sequence[SlideOutcome], classes: Sequence[str]) -> dict[str, float]:
    """Cohort means, nonzero means and classification accuracy, flat."""
    scored = [o.scores for o in outcomes if o.scores is not None]
    out = {f"mean_{k}": v for k, v in cohort_means(scored).items()}
    out.update({f"nonzero_{k}": v for k, v in cohort_means(scored, nonzero=True).items()})
    out["classification_accuracy"] = classification_accuracy(outcomes, classes)
    refs = [o.ceilings for o in outcomes if o.ceilings is not None]
    for name, values in (
        ("oracle", [c.oracle for c in refs]),
        ("all_tissue", [c.all_tissue for c in refs]),
    ):
        for k, v in cohort_means(values).items():
            if k != "slides":
                out[f"mean_{name}_{k}"] = v
    ceiling = [c.sift_ceiling for c in refs if not math.isnan(c.sift_ceiling)]
    out["mean_sift_ceiling"] = float(np.mean(ceiling)) if ceiling else math.nan
    return out
