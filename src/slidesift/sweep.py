"""An N x T sweep (the paper's Table 2): one model per downsample N and tile side T, each scored.

Each cell (N, T) trains the lightweight CNN on the training slides, chooses its epoch on the
``val`` slides (:func:`slidesift.select.select_epoch`) and scores the ``test`` slides once with
that epoch (:func:`slidesift.evaluate.evaluate_slides`); :mod:`slidesift.sweep_cell` runs one.
A manifest without ``val`` rows gets them drawn once for the whole sweep
(:func:`slidesift.subsets.draw_validation`, ``val_fraction``), so every cell sees the same split.

Output folder::

    sweep.json          the recipe and its fingerprint, the grid, every cell's record (status
                        ``ok``, ``resumed``, ``failed`` or ``pending``), the best cell; rewritten
                        after each cell
    sweep.csv           one row per cell: N (or mpp), T, status, chosen epoch, test and val
                        figures, tile counts, training seconds, error
    sweep_heatmap.png   test figure by N (rows) and T (columns), numbers in the cells
    manifest.csv        the rows the sweep ran on, with the drawn val split
    cells/N1500_T96/    one cell: run/ (checkpoints, log.csv, selection.json), cell.json last

Resuming. A rerun of the same sweep skips each cell whose ``cell.json`` says ``ok`` under the
same recipe (status ``resumed``), continues a cell's training from its last complete epoch
when its run folder is there, and retries failed cells. The recipe (everything that shapes a
cell: the manifest's rows, epochs, batch size, learning rate, seed, tile set and segmentation
options, the metric) has a fingerprint in ``sweep.json``; a sweep of another recipe in the
same folder is refused (:class:`~slidesift.errors.SweepError`, naming what differs) unless
``force=True``, which computes every cell of the grid anew. The grid itself is not part of the
recipe: more N or T values in the same folder reuse the finished cells.

Where cells run: in this process (``workers=0``, the default without a scheduler), on a new
Dask local cluster of ``workers`` processes, or on an existing cluster (``scheduler``); one
cell per task (:func:`slidesift.cohort_dask.run_tasks`: one task per worker thread, a cell
whose worker process dies is tried once more). Each task caps torch's and OpenCV's threads at
its share of the cores (``cores // workers`` on the local cluster).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slidesift.errors import ConfigError, DatasetError, ReportError, SweepError
from slidesift.io.lock import output_lock
from slidesift.manifest import Manifest, read_manifest, write_manifest
from slidesift.sweep_cell import CELL_FILE, CellJob, run_cell
from slidesift.sweep_files import (
    CSV_FILE,
    HEATMAP_FILE,
    SWEEP_FILE,
    best_cell,
    read_sweep,
    sweep_table,
    write_heatmap,
    write_tables,
)
from slidesift.sweep_spec import MIN_TILE, Cell, SweepSpec, fingerprint

__all__ = [
    "CELLS_DIR",
    "CSV_FILE",
    "HEATMAP_FILE",
    "MIN_TILE",
    "SWEEP_FILE",
    "Cell",
    "SweepResult",
    "SweepSpec",
    "fingerprint",
    "read_sweep",
    "run_sweep",
    "sweep_table",
    "write_heatmap",
]

#: Where the cells' folders go in the output folder.
CELLS_DIR = "cells"


def _split(manifest: Manifest, spec: SweepSpec) -> Manifest:
    """The manifest with its val rows (drawn when it has none); refuses one that cannot sweep."""
    from slidesift.subsets import draw_validation

    m = manifest
    if not m.split("val"):
        if spec.val_fraction is None:
            raise ConfigError(
                "val_fraction", None,
                "a fraction (e.g. 0.25) to draw val slides: the manifest has no val rows, and "
                "each cell chooses its epoch on val so that test is scored once",
            )  # fmt: skip
        m = Manifest(m.path, tuple(draw_validation(list(m), spec.val_fraction, seed=spec.seed)))
    for split in ("val", "test"):
        if not any(e.has_truth for e in m.split(split)):
            raise DatasetError(
                f"a sweep needs {split} slides with truth; the manifest has "
                f"{len(m.split(split))} {split} row(s) with truth for none"
                + (" (a label with one training slide gives no val slide)" if split == "val"
                   else "")
                + "\n  hint: give the manifest val and test rows with annotations "
                "(slidesift subsets --val-fraction)"
            )  # fmt: skip
    if not any(e.split in (None, "train") for e in m):
        raise DatasetError("the manifest has no training rows left after the val split")
    return m


@dataclass(frozen=True)
class SweepResult:
    """A sweep's cells in grid order (``cells[i]`` is ``spec.cells[i]``'s record).

    Attributes
    ----------
    out
        The output folder.
    spec
        The sweep.
    cells
        Each cell's record (``cell.json``'s content, ``status`` ``ok``, ``resumed`` or
        ``failed``).
    """

    out: Path
    spec: SweepSpec
    cells: tuple[dict[str, Any], ...]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The cells that failed."""
        return [c for c in self.cells if c.get("status") == "failed"]

    @property
    def best(self) -> dict[str, Any] | None:
        """The cell with the highest test ``metric`` (``None`` when none has one)."""
        return best_cell(self.cells, self.spec.metric)

    def table(self, metric: str | None = None) -> list[list[float]]:
        """Test ``metric`` (default the spec's) by row (N) and column (T); NaN where none."""
        return sweep_table(self.cells, self.spec.ns or self.spec.mpps, self.spec.ts,
                           metric or self.spec.metric)  # fmt: skip


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The recipe entries that differ, as ``name: old -> new``."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _check_recipe(out: Path, spec: SweepSpec, fp: str, force: bool) -> None:
    """Refuse a folder that holds a sweep of another recipe (unless ``force``)."""
    doc = read_sweep(out) if not force else None
    if doc is None or doc.get("fingerprint") == fp:
        return
    recipe = doc.get("recipe")
    changed = _differences(recipe, spec.recipe()) if isinstance(recipe, dict) else []
    changed = changed or ["the manifest's rows or splits"]
    raise SweepError(
        f"{out} holds a sweep of another recipe ({'; '.join(changed[:6])}"
        + (f"; {len(changed) - 6} more" if len(changed) > 6 else "") + ")",
        "rerun with the same options to resume it, choose another output folder, or pass "
        "force=True (--force) to compute every cell anew",
    )  # fmt: skip


def _finished(folder: Path, fp: str) -> dict[str, Any] | None:
    """The cell's earlier ``ok`` record under this recipe, or ``None``."""
    try:
        doc = json.loads((folder / CELL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict) and doc.get("status") == "ok" and doc.get("fingerprint") == fp:
        return doc
    return None


# ---------------------------------------------------------------- running


def _jobs(
    todo: Sequence[Cell], spec: SweepSpec, manifest: Manifest, root: Path, fp: str,
    cache: str | None, threads: int | None,
) -> list[CellJob]:  # fmt: skip
    return [
        CellJob(c.key, str(root / CELLS_DIR / c.key), manifest, spec.cell_tileset(c),
                spec.train_fields(), spec.segment, spec.metric, spec.min_accuracy, fp, cache,
                threads)
        for c in todo
    ]  # fmt: skip


def _execute(
    jobs: Sequence[CellJob],
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    on_stage: Callable[[str, str], None] | None,
) -> Iterator[dict[str, Any]]:
    """Run the cells where the options say; yields their records as they finish."""
    if not jobs:
        return
    if scheduler is None and not workers:
        for job in jobs:
            stage = (lambda text, k=job.key: on_stage(k, text)) if on_stage else None
            yield run_cell(job, stage)
        return
    from slidesift.cohort_dask import Task, cores, run_tasks

    n = min(len(jobs), workers or cores())
    if scheduler is None and threads is None:
        jobs = [replace(j, threads=max(1, cores() // n)) for j in jobs]
    tasks = [Task(j.key, run_cell, (replace(j, train={**j.train, "workers": 0}),)) for j in jobs]
    for task, result in run_tasks(tasks, scheduler, n, prefix="slidesift-sweep",
                                  died=_died):  # fmt: skip
        if isinstance(result, dict):
            yield result
        else:
            yield _failed(task.name, result)


def _died(key: str, tries: int, address: str) -> BaseException:
    return SweepError(
        f"the worker process training cell {key} died, {tries} time(s) (last {address}): "
        "killed (out of memory?) or crashed",
        "check the workers' memory and logs; a rerun resumes the cell from its last epoch",
    )


def _failed(key: str, exc: BaseException) -> dict[str, Any]:
    return {"key": key, "status": "failed", "error_type": type(exc).__name__,
            "error": str(exc) or repr(exc), "traceback": ""}  # fmt: skip


def run_sweep(
    manifest: Manifest | str | os.PathLike[str],
    out: str | os.PathLike[str],
    spec: SweepSpec,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    force: bool = False,
    cache: str | os.PathLike[str] | None = None,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    on_stage: Callable[[str, str], None] | None = None,
) -> SweepResult:
    """Train, select and score every (N, T) cell of ``spec``; write the sweep's tables.

    Parameters
    ----------
    manifest
        The cohort (a :class:`Manifest` or its CSV): train rows to train on, val rows (drawn
        with ``spec.val_fraction`` when absent) to choose epochs on, test rows to score.
    out
        Output folder (layout in the module docstring); locked while the sweep runs.
    spec
        The grid and the recipe.
    scheduler
        A Dask scheduler's address (``tcp://host:8786``): one task per cell on that cluster,
        whose workers see ``manifest``, the slides, ``out`` and ``cache`` at the same paths.
    workers
        Without a scheduler: ``0`` or ``None`` runs the cells in this process, one after
        another; more starts a Dask local cluster of that many processes.
    threads
        Torch and OpenCV threads per cell (default: ``cores // workers`` on a local cluster,
        the worker's share on a scheduler's, the process's own in process).
    force
        Compute every cell of the grid anew (their folders are cleared), whatever the folder
        holds.
    cache
        Thumbnail cache folder (default: ``$SLIDESIFT_CACHE`` or ``~/.cache/slidesift``).
    on_cell
        Called with each cell's record as it is known: finished cells of an earlier run
        first (status ``resumed``), then as cells finish. sweep.json already holds it.
    on_stage
        ``(cell key, what starts)`` as each stage of a cell starts (in process only).

    Returns
    -------
    SweepResult

    Raises
    ------
    ConfigError
        A bad scheduler or workers value, or no val rows and no ``val_fraction``.
    DatasetError
        No val or test slide with truth, or no training rows.
    SweepError
        ``out`` holds a sweep of another recipe (without ``force``).
    OutputLockedError
        Another run writes ``out`` now.
    """
    from slidesift.cohort_dask import check_options

    check_options(scheduler, workers, threads)
    m = manifest if isinstance(manifest, Manifest) else read_manifest(Path(manifest))
    m = _split(m, spec)
    fp = fingerprint(spec, m)
    cells = spec.cells
    with output_lock(out, "run_sweep") as root:
        _check_recipe(root, spec, fp, force)
        write_manifest(root / "manifest.csv", m.entries)
        records: dict[str, dict[str, Any]] = {
            c.key: {"key": c.key, "n": c.n, "mpp": c.mpp, "t": c.t, "status": "pending"}
            for c in cells
        }
        todo = []
        for c in cells:
            folder = root / CELLS_DIR / c.key
            if force:
                shutil.rmtree(folder, ignore_errors=True)
            earlier = _finished(folder, fp)
            if earlier is None:
                todo.append(c)
            else:
                records[c.key] = {**earlier, "status": "resumed"}

        def ordered() -> list[dict[str, Any]]:
            return [records[c.key] for c in cells]

        write_tables(root, spec, fp, m, ordered())
        for c in cells:
            if records[c.key]["status"] == "resumed" and on_cell is not None:
                on_cell(records[c.key])
        cache_dir = None if cache is None else str(Path(cache).resolve())
        jobs = _jobs(todo, spec, m, root, fp, cache_dir, threads)
        for record in _execute(jobs, scheduler, workers, threads, on_stage):
            records[record["key"]] = {**records[record["key"]], **record}
            write_tables(root, spec, fp, m, ordered())
            if on_cell is not None:
                on_cell(records[record["key"]])
        result = SweepResult(root, spec, tuple(ordered()))
        (root / HEATMAP_FILE).unlink(missing_ok=True)  # never a picture of an earlier grid
        try:
            write_heatmap(root)
        except ReportError as exc:  # matplotlib missing: the tables are there all the same
            warnings.warn(f"no {HEATMAP_FILE}: {exc}", stacklevel=2)
        return result
