"""Ablations as one call, shaped like the paper's Table 3 (METHOD.md section 7).

Each slide is classified once (every tile that passes the background sift), then re-assembled
under each condition: with vs without rails, opening kernels 0/50/100/150 px and shrinks
0/5/10%. Kernels are given at the paper's 6000-px scale and scaled to the model's N.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from slidesift.checkpoint import Checkpoint
from slidesift.evaluate import read_slide
from slidesift.io.atomic import atomic_write_json
from slidesift.io.downsample import DEFAULT_LONGEST
from slidesift.manifest import ManifestEntry
from slidesift.metrics import Scores, cohort_means, confusion, scores
from slidesift.segment import Classifiers, SegmentSpec, segment

__all__ = ["ABLATION_FILE", "AblationRow", "ablate", "write_ablation"]

#: The paper's smoothing kernels (px at N = 6000) and shrink fractions.
KERNELS_AT_6000 = (0, 50, 100, 150)
SHRINKS = (0.0, 0.05, 0.10)


@dataclass(frozen=True)
class AblationRow:
    """One condition's cohort means."""

    condition: str
    rails: bool
    smooth: int
    shrink: float
    figures: dict[str, float]


def _conditions(base: SegmentSpec, scale: float) -> list[tuple[str, SegmentSpec]]:
    out = [
        ("rails", replace(base, rails=True)),
        ("no rails (background only)", replace(base, rails=False)),
    ]
    for k in KERNELS_AT_6000[1:]:
        px = max(1, round(k * scale))
        out.append((f"rails + smoothing {k} px ({px} px here)", replace(base, smooth=px)))
    for f in SHRINKS[1:]:
        out.append((f"rails + shrink {f:.0%}", replace(base, shrink=f)))
    return out


def ablate(
    entries: Sequence[ManifestEntry],
    checkpoint: Checkpoint,
    spec: SegmentSpec | None = None,
    *,
    on_slide: Callable[[ManifestEntry], None] | None = None,
) -> list[AblationRow]:
    """Cohort means of every condition over the ``entries`` that have truth."""
    base = replace(spec or SegmentSpec(), smooth=0, shrink=0.0, rails=True)
    n = checkpoint.downsample.longest
    scale = float(n) / DEFAULT_LONGEST if n else 1.0
    conditions = _conditions(base, scale)
    per: dict[str, list[Scores]] = {name: [] for name, _ in conditions}
    classifiers = Classifiers(checkpoint)
    for entry in entries:
        thumb, truth = read_slide(entry, checkpoint.downsample)
        if truth is None:
            continue
        r = segment(
            entry.slide,
            checkpoint,
            base,
            classifiers=classifiers,
            thumb=thumb,
            classify_background=True,
        )
        for name, cond in conditions:
            per[name].append(scores(confusion(r.remask(cond), truth)))
        if on_slide is not None:
            on_slide(entry)
    return [
        AblationRow(name, cond.rails, cond.smooth, cond.shrink, cohort_means(per[name]))
        for name, cond in conditions
    ]


#: The file ``segment --ablate`` writes into its output folder.
ABLATION_FILE = "ablation.json"


def write_ablation(folder: str | os.PathLike[str], rows: Sequence[AblationRow]) -> Path:
    """Write ``FOLDER/ablation.json``: one object per condition (NaN figures as ``null``)."""
    return atomic_write_json(Path(folder) / ABLATION_FILE, [asdict(r) for r in rows])
