"""The sweep's files: ``sweep.json``, ``sweep.csv`` and ``sweep_heatmap.png``, written and read.

``sweep.json`` holds the sweep's options, its recipe and fingerprint, the grid (``rows``: N or
um/px, ``columns``: T) and every cell's record (:mod:`slidesift.sweep_cell`'s ``cell.json``,
with status ``ok``, ``resumed``, ``failed`` or ``pending``); :func:`sweep_table` lays a figure
out as the paper's Table 2 (rows N, columns T). The report (``slidesift report SWEEP``) reads
them through :func:`read_sweep`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slidesift._version import __version__
from slidesift.errors import SweepError
from slidesift.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from slidesift.manifest import Manifest
from slidesift.sweep_spec import METRICS, SweepSpec

__all__ = [
    "CSV_FILE",
    "HEATMAP_FILE",
    "SWEEP_FILE",
    "best_cell",
    "cell_value",
    "read_sweep",
    "sweep_table",
    "write_heatmap",
    "write_tables",
]

SWEEP_FILE = "sweep.json"
CSV_FILE = "sweep.csv"
HEATMAP_FILE = "sweep_heatmap.png"
SWEEP_FORMAT = "slidesift-sweep/1"


def cell_value(cell: dict[str, Any], metric: str, where: str = "test") -> float:
    """A cell's ``where`` (``test`` or ``val``) ``metric``; NaN when it has none."""
    figures = cell.get(where)
    v = figures.get(metric) if isinstance(figures, dict) else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def best_cell(cells: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The cell with the highest test ``metric`` (``None`` when no cell has one)."""
    scored = [c for c in cells if not math.isnan(cell_value(c, metric))]
    return max(scored, key=lambda c: cell_value(c, metric), default=None)


def sweep_table(
    cells: Sequence[dict[str, Any]],
    rows: Sequence[int | float],
    columns: Sequence[int],
    metric: str = "jaccard",
    where: str = "test",
) -> list[list[float]]:
    """The ``where`` (``test`` or ``val``) ``metric`` of each cell as ``len(rows) x
    len(columns)`` nested lists: row ``i`` is ``rows[i]`` (N or um/px), column ``j`` is
    ``columns[j]`` (T); NaN for a cell that failed, is pending or is absent."""
    by_key = {
        (c.get("n") if c.get("n") is not None else c.get("mpp"), c.get("t")): c for c in cells
    }
    return [[cell_value(by_key.get((r, t), {}), metric, where) for t in columns] for r in rows]


def _csv(cells: Sequence[dict[str, Any]]) -> str:
    cols = ["key", "n", "mpp", "t", "status", "epoch"]
    cols += [f"test_{k}" for k in (*METRICS, "slides")]
    cols += [f"test_nonzero_{k}" for k in METRICS]
    cols += [f"val_{k}" for k in (*METRICS, "classification_accuracy")]
    cols += ["train_tiles", "val_tiles", "train_seconds", "error_type", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for c in cells:
        test, val = c.get("test") or {}, c.get("val") or {}
        tiles = c.get("tiles") or {}
        row: dict[str, Any] = {k: c.get(k) for k in cols}
        row.update({f"test_{k}": test.get(k) for k in (*METRICS, "slides")})
        row.update({f"test_nonzero_{k}": test.get(f"nonzero_{k}") for k in METRICS})
        row.update({f"val_{k}": val.get(k) for k in (*METRICS, "classification_accuracy")})
        row.update(train_tiles=tiles.get("train"), val_tiles=tiles.get("val"))
        w.writerow(["" if row[k] is None else (f"{row[k]:.6g}" if isinstance(row[k], float)
                    else row[k]) for k in cols])  # fmt: skip
    return buf.getvalue()


def write_tables(
    out: Path, spec: SweepSpec, fp: str, manifest: Manifest, cells: Sequence[dict[str, Any]]
) -> None:
    """Write sweep.json and sweep.csv (atomically)."""
    best = best_cell(cells, spec.metric)
    doc = {
        "format": SWEEP_FORMAT,
        "slidesift_version": __version__,
        "fingerprint": fp,
        "spec": spec.to_dict(),
        "recipe": spec.recipe(),
        "manifest": None if manifest.path is None else str(Path(manifest.path).resolve()),
        "axis": spec.axis,
        "rows": list(spec.ns or spec.mpps),
        "columns": list(spec.ts),
        "metric": spec.metric,
        "best": None if best is None else best["key"],
        "cells": [
            {k: v for k, v in c.items() if k not in ("fingerprint", "format")} for c in cells
        ],
    }
    atomic_write_json(out / SWEEP_FILE, doc)
    atomic_write_text(out / CSV_FILE, _csv(cells))


def read_sweep(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``FOLDER/sweep.json`` (``None`` when absent).

    Raises
    ------
    SweepError
        The file is not JSON, or not a sweep's (no ``rows``, ``columns`` and ``cells`` lists).
    """
    path = Path(folder) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SweepError(f"{path} is not readable JSON ({exc})", "run the sweep again") from exc
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("rows", "columns", "cells")
    ):
        raise SweepError(f"{path} is not a sweep's record (rows, columns, cells)",
                         "it is written by slidesift sweep; run it again")  # fmt: skip
    return doc


def write_heatmap(out: str | os.PathLike[str], doc: dict[str, Any] | None = None) -> Path | None:
    """Draw ``OUT/sweep_heatmap.png`` from sweep.json (or ``doc``); ``None`` when no cell is
    scored yet. Needs matplotlib (the ``report`` extra)."""
    from slidesift.report.sweep_figures import sweep_heatmap_png

    doc = doc or read_sweep(out)
    if doc is None:
        return None
    metric = str(doc.get("metric") or "jaccard")
    table = sweep_table(doc["cells"], doc["rows"], doc["columns"], metric)
    if all(math.isnan(v) for row in table for v in row):
        return None
    png = sweep_heatmap_png(table, doc["rows"], doc["columns"], metric=metric,
                            axis=str(doc.get("axis") or "N"))  # fmt: skip
    return atomic_write_bytes(Path(out) / HEATMAP_FILE, png)
