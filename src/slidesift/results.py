"""The cohort output folder's tables: ``scores.csv``, ``summary.json`` and ``ensemble.csv``.

This module owns their names, writes them and reads them back; ``segment MANIFEST``,
``evaluate`` (the Dask runner) and the report all go through it. Per-slide pictures and
GeoJSON live in a folder per slide (:mod:`slidesift.segment_outputs`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slidesift.ceilings import Ceilings
from slidesift.errors import ReportError
from slidesift.evaluate import SlideOutcome
from slidesift.io.atomic import atomic_write_json, atomic_write_text

__all__ = [
    "CEILING_COLUMNS",
    "ENSEMBLE_FILE",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "outcomes_csv",
    "read_summary",
    "write_outcomes",
    "write_results",
    "write_summary",
]

SCORES_FILE = "scores.csv"
SUMMARY_FILE = "summary.json"
ENSEMBLE_FILE = "ensemble.csv"


def outcomes_csv(
    outcomes: Sequence[SlideOutcome], *, status: Sequence[tuple[str, str, str]] | None = None
) -> str:
    """One row per slide: name, label, vote, scores, empty prediction, kept tiles, inference,
    then the reference points (:mod:`slidesift.ceilings`): the tile oracle's Jaccard, precision
    and recall, the all-tissue Jaccard and the sift ceiling (blank without truth).

    Parameters
    ----------
    outcomes
        The slides, in the order of the rows.
    status
        Per outcome ``(status, error type, error message)``: adds the columns ``status``,
        ``error_type`` and ``error`` (the cohort runner's ``ok``, ``resumed`` or ``failed``).
        A ``failed`` row leaves ``kept_tiles`` empty.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["slide", "label", "vote", "jaccard", "dice", "precision", "recall",
              "empty_prediction", "kept_tiles", "inference", *CEILING_COLUMNS]  # fmt: skip
    w.writerow(header if status is None else [*header, "status", "error_type", "error"])
    for i, o in enumerate(outcomes):
        s = o.scores
        vals = [
            "" if s is None else f"{getattr(s, k):.6f}"
            for k in ("jaccard", "dice", "precision", "recall")
        ]
        failed = status is not None and status[i][0] == "failed"
        row: list[object] = [
            o.name,
            o.label or "",
            o.vote or "",
            *vals,
            "" if s is None else int(s.empty_prediction),
            "" if failed else o.kept_tiles,
            o.inference,
            *_ceiling_cells(o.ceilings),
        ]
        w.writerow(row if status is None else [*row, *status[i]])
    return buf.getvalue()


#: Reference columns of ``scores.csv``, after the model's own.
CEILING_COLUMNS = ("oracle_jaccard", "oracle_precision", "oracle_recall", "all_tissue_jaccard",
                   "sift_ceiling")  # fmt: skip


def _ceiling_cells(c: Ceilings | None) -> list[str]:
    if c is None:
        return [""] * len(CEILING_COLUMNS)
    values = (c.oracle.jaccard, c.oracle.precision, c.oracle.recall, c.all_tissue.jaccard,
              c.sift_ceiling)  # fmt: skip
    return [f"{v:.6f}" for v in values]


def write_outcomes(
    path: str | os.PathLike[str],
    outcomes: Sequence[SlideOutcome],
    *,
    status: Sequence[tuple[str, str, str]] | None = None,
) -> Path:
    """Write :func:`outcomes_csv` atomically."""
    return atomic_write_text(path, outcomes_csv(outcomes, status=status))


def write_summary(folder: str | os.PathLike[str], figures: dict[str, Any]) -> Path:
    """Write ``summary.json``: the cohort figures (a missing figure, NaN, is ``null``)."""
    return atomic_write_json(Path(folder) / SUMMARY_FILE, figures)


def write_results(
    folder: str | os.PathLike[str],
    outcomes: Sequence[SlideOutcome],
    figures: dict[str, Any],
    *,
    status: Sequence[tuple[str, str, str]] | None = None,
) -> tuple[Path, Path]:
    """Write ``scores.csv`` and ``summary.json`` into ``folder``; returns both paths."""
    folder = Path(folder)
    return (
        write_outcomes(folder / SCORES_FILE, outcomes, status=status),
        write_summary(folder, figures),
    )


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``summary.json`` of ``folder`` as a dict (``{}`` when absent); ``null`` reads as NaN.

    Raises
    ------
    ReportError
        The file is not a JSON object.
    """
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        return {}
    hint = "summary.json is written by slidesift segment and slidesift evaluate; re-run it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(path, f"is not valid JSON ({exc})", hint) from exc
    if not isinstance(data, dict):
        raise ReportError(path, "is not a JSON object of cohort figures", hint)
    return {k: float("nan") if v is None else v for k, v in data.items()}
