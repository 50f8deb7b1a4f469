"""Read what a report shows: a cohort output folder and, optionally, a training run folder.

A cohort folder (``slidesift segment ... --out OUT`` or ``slidesift evaluate``) holds
``scores.csv`` (one row per slide), ``summary.json`` (flat cohort figures), maybe
``ablation.json``, and per-slide pictures ``<slide>_overlay.png``, ``<slide>_errors.png`` (with
truth) and ``<slide>_locations.png``, either in ``OUT/<slide>/`` or in ``OUT/`` itself.

A training run folder (``slidesift train --out RUN``) holds ``log.csv`` (one row per epoch),
``run.json`` and, after ``slidesift select``, ``selection.json``.

Everything is checked here, at the edge: a missing ``scores.csv``, a ragged CSV row or a JSON
file of the wrong shape is a :class:`ReportError` that names the file and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidesift.ablate import ABLATION_FILE
from slidesift.errors import (
    ConfigError,
    ReportError,
    SelectionError,
    SlidesiftError,
    TrainingError,
)
from slidesift.rails import RailsAtSize, read_spread
from slidesift.results import SCORES_FILE, read_summary
from slidesift.select import SELECTION_FILE, read_selection
from slidesift.train_run import LOG_FILE, RUN_FILE
from slidesift.train_run import read_run as read_train_run

__all__ = [
    "IMAGE_KINDS",
    "Cohort",
    "ReportError",
    "SlideRecord",
    "TrainingRun",
    "as_float",
    "read_cohort",
    "read_run",
    "read_spread_file",
]

#: Per-slide pictures a report embeds, in display order: file suffix -> caption.
IMAGE_KINDS = {
    "overlay": "overlay",
    "errors": "error map",
    "locations": "tile locations",
}

#: ``status`` values of a slide that did not fail (compared lower-cased; blank counts as ok).
OK_STATUSES = frozenset({"", "ok", "done", "success", "succeeded", "scored", "cached", "skipped"})


@dataclass(frozen=True)
class SlideRecord:
    """One row of ``scores.csv`` and the pictures found for that slide.

    Attributes
    ----------
    name
        The slide's name (the ``slide`` column).
    values
        Every cell of the row by column name, as written (blank cells are ``""``).
    failed
        The row has an ``error`` or a ``status`` other than ok.
    error
        The ``error`` cell, after the ``error_type`` cell when there is one (the status, when
        the error cell is blank).
    images
        Kind (``overlay``, ``errors``, ``locations``) -> PNG path, for the pictures that exist.
    """

    name: str
    values: dict[str, str]
    failed: bool = False
    error: str = ""
    images: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Cohort:
    """A cohort output folder, read and checked.

    Attributes
    ----------
    folder
        The folder.
    columns
        The ``scores.csv`` header, in file order.
    slides
        One record per row, in file order.
    summary
        ``summary.json`` (empty when the file is absent); values may be NaN, strings or null.
    ablation
        The rows of ``ablation.json``, or ``None`` when the file is absent.
    """

    folder: Path
    columns: tuple[str, ...]
    slides: tuple[SlideRecord, ...]
    summary: dict[str, Any]
    ablation: tuple[dict[str, Any], ...] | None = None

    @property
    def failed(self) -> list[SlideRecord]:
        """The slides that failed."""
        return [s for s in self.slides if s.failed]


@dataclass(frozen=True)
class TrainingRun:
    """A training run folder, read and checked.

    Attributes
    ----------
    folder
        The folder.
    log
        ``log.csv`` rows: column -> float (``None`` for blank cells), with an ``epoch`` column.
    info
        ``run.json`` (empty when absent).
    selection
        ``selection.json`` (``None`` when absent): ``metric``, ``epoch``, ``best`` and
        ``epochs`` (a list of per-epoch figures with ``epoch`` and ``eligible``).
    """

    folder: Path
    log: tuple[dict[str, float | None], ...]
    info: dict[str, Any]
    selection: dict[str, Any] | None = None

    @property
    def selected_epoch(self) -> int | None:
        """The epoch model selection chose, when known."""
        if self.selection is None:
            return None
        epoch = self.selection.get("epoch")
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def as_float(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is blank, null, boolean-free text or not finite.

    Accepts numbers and numeric strings (``"0.71"``, ``"nan"`` gives ``None``).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(path, f"cannot be read: {exc}") from exc


def _read_json(path: Path, hint: str) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ReportError(path, f"is not valid JSON ({exc})", hint) from exc


def _read_csv(path: Path, hint: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (blank lines skipped); ragged rows are errors that name the line."""
    text = _read_text(path)
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise ReportError(path, f"is not a valid CSV file ({exc})", hint) from exc
    numbered = [(i, row) for i, row in enumerate(lines, start=1) if row]
    if not numbered:
        raise ReportError(path, "is empty (no header row)", hint)
    header = [h.strip() for h in numbered[0][1]]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ReportError(path, f"repeats the column(s) {dupes} in its header", hint)
    rows = []
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise ReportError(
                path,
                f"line {line} has {len(row)} fields but the header has {len(header)}",
                hint,
            )
        rows.append(row)
    return header, rows


def _find_images(folder: Path, name: str) -> dict[str, Path]:
    """The slide's pictures, first in ``folder/name/`` then in ``folder/``."""
    if not name or Path(name).name != name or name in (".", ".."):
        return {}  # a name that is a path would reach outside the folder
    found = {}
    for kind in IMAGE_KINDS:
        for where in (folder / name, folder):
            p = where / f"{name}_{kind}.png"
            if p.is_file():
                found[kind] = p
                break
    return found


def read_cohort(folder: str | os.PathLike[str]) -> Cohort:
    """Read and check a cohort output folder.

    Parameters
    ----------
    folder
        Written by ``slidesift segment ... --out FOLDER`` or ``slidesift evaluate``.

    Returns
    -------
    Cohort

    Raises
    ------
    ReportError
        The folder or its ``scores.csv`` is missing; ``scores.csv`` has no ``slide`` column, a
        blank slide name or a ragged row; ``summary.json`` is not a JSON object;
        ``ablation.json`` is not a JSON array of objects.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ReportError(root, "is not a folder", "give the --out folder of slidesift segment")
    path = root / SCORES_FILE
    make = "run `slidesift segment CHECKPOINT MANIFEST --out FOLDER` (or slidesift evaluate) first"
    if not path.is_file():
        raise ReportError(root, "has no scores.csv, so it is not a cohort output folder", make)
    hint = "scores.csv is written by slidesift segment; re-run it or fix the file"
    header, rows = _read_csv(path, hint)
    if "slide" not in header:
        raise ReportError(path, f"has no 'slide' column (columns: {header})", hint)
    slides = []
    for i, row in enumerate(rows, start=2):
        values = {h: cell.strip() for h, cell in zip(header, row, strict=True)}
        name = values["slide"]
        if not name:
            raise ReportError(path, f"data row {i - 1} has a blank slide name", hint)
        status, error = values.get("status", ""), values.get("error", "")
        failed = bool(error) or status.lower() not in OK_STATUSES
        kind = values.get("error_type", "")
        message = error or (status if failed else "")
        if kind and message:
            message = f"{kind}: {message}"
        slides.append(SlideRecord(name, values, failed, message, _find_images(root, name)))

    summary = read_summary(root)
    ablation = None
    if (root / ABLATION_FILE).is_file():
        abl = root / ABLATION_FILE
        data = _read_json(abl, "ablation.json is written by slidesift segment --ablate")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ReportError(abl, "is not a JSON array of objects (one per condition)")
        ablation = tuple(data)
    return Cohort(root, tuple(header), tuple(slides), summary, ablation)


def read_run(folder: str | os.PathLike[str]) -> TrainingRun:
    """Read and check a training run folder.

    Parameters
    ----------
    folder
        Written by ``slidesift train --out FOLDER`` (``selection.json`` by ``slidesift select``).

    Returns
    -------
    TrainingRun

    Raises
    ------
    ReportError
        The folder has none of ``log.csv``, ``run.json``, ``selection.json``; ``log.csv`` has no
        ``epoch`` column or a non-numeric cell; a JSON file has the wrong shape.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ReportError(root, "is not a folder", "give the --out folder of slidesift train")
    names = (LOG_FILE, RUN_FILE, SELECTION_FILE)
    if not any((root / n).is_file() for n in names):
        raise ReportError(
            root, f"has none of {', '.join(names)}, so it is not a training run folder",
            "give the --out folder of `slidesift train`",
        )  # fmt: skip
    log: list[dict[str, float | None]] = []
    if (root / "log.csv").is_file():
        path = root / "log.csv"
        hint = "log.csv is written by slidesift train after every epoch"
        header, rows = _read_csv(path, hint)
        if "epoch" not in header:
            raise ReportError(path, f"has no 'epoch' column (columns: {header})", hint)
        for line, row in enumerate(rows, start=2):
            record: dict[str, float | None] = {}
            for h, cell in zip(header, row, strict=True):
                cell = cell.strip()
                if not cell:
                    record[h] = None
                    continue
                try:
                    record[h] = float(cell)
                except ValueError as exc:
                    raise ReportError(
                        path, f"row {line - 1} has {cell!r} in column {h!r}, not a number", hint
                    ) from exc
            if record["epoch"] is None:
                raise ReportError(path, f"row {line - 1} has no epoch", hint)
            log.append(record)
    info: dict[str, Any] = {}
    if (root / RUN_FILE).is_file():
        try:
            info = read_train_run(root)
        except TrainingError as exc:
            raise ReportError(root / RUN_FILE, exc.reason, exc.hint) from exc
    try:
        selection = read_selection(root)
    except SelectionError as exc:
        raise ReportError(root / SELECTION_FILE, exc.reason, exc.hint) from exc
    return TrainingRun(root, tuple(log), info, selection)


def read_spread_file(path: str | os.PathLike[str]) -> list[RailsAtSize]:
    """:func:`slidesift.rails.read_spread`, its errors turned into :class:`ReportError`."""
    try:
        return read_spread(path)
    except ConfigError as exc:
        raise ReportError(
            path, f"is not a rails spread: expected {exc.valid}, got {repr(exc.value)[:120]}",
            "write one with `slidesift rails ... --spread 100,200,400 --spread-out FILE`",
        ) from exc  # fmt: skip
    except SlidesiftError as exc:
        raise ReportError(
            path, f"is not a rails spread: {exc}",
            "write one with `slidesift rails ... --spread 100,200,400 --spread-out FILE`",
        ) from exc  # fmt: skip
