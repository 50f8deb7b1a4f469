"""One cell of an N x T sweep: train, choose the epoch on val, score test once (a Dask task).

A plain top-level function with picklable arguments and a plain document as result
(:func:`run_cell`), so any Dask worker process can run it, or this process. It never raises for
the cell's fault (a tile larger than every thumbnail, no tile surviving the sift, no epoch
qualifying): it returns a ``failed`` document instead, written as the cell's ``cell.json``.

Cell folder (``OUT/cells/N1500_T96/``; ``mpp4_T96`` for a resolution axis)::

    recipe.json   the sweep's fingerprint, written first: a run folder left by another recipe
                  (a ``force`` run with other options, then a grid that reaches this cell) is
                  cleared, never resumed
    run/          the training run (:mod:`slidesift.train_run`): a checkpoint per epoch,
                  log.csv, selection.json (the epochs scored on val)
    cell.json     written last and atomically: what the sweep's tables hold (:data:`CELL_FILE`)

:mod:`slidesift.sweep` decides which cells to run and gathers their documents.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slidesift.errors import SelectionError, SlidesiftError
from slidesift.io.atomic import atomic_write_json
from slidesift.manifest import Manifest
from slidesift.segment import SegmentSpec
from slidesift.tileset import TileSetSpec

__all__ = ["CELL_FILE", "CELL_FORMAT", "RECIPE_FILE", "RUN_DIR", "CellJob", "run_cell"]

#: The cell's record, written last.
CELL_FILE = "cell.json"
#: The fingerprint of the recipe the cell's run folder was trained with, written first.
RECIPE_FILE = "recipe.json"
#: The training run inside a cell folder.
RUN_DIR = "run"
CELL_FORMAT = "slidesift-sweep-cell/1"

#: The cohort figures a cell keeps, of the chosen epoch on val and on test.
FIGURES = ("jaccard", "precision", "recall", "dice")


@dataclass(frozen=True)
class CellJob:
    """What one cell needs, as plain picklable values.

    Attributes
    ----------
    key
        The cell's name and folder (``N1500_T96``).
    folder
        The cell's folder (absolute).
    manifest
        The cohort with its ``train``, ``val`` and ``test`` rows (the val split already drawn).
    tileset
        The tile set options, with this cell's tile side and downsample.
    train
        :class:`~slidesift.train_spec.TrainSpec` fields (a dict: torch stays out of pickling).
    segment
        Segmentation options for model selection and the test scores.
    metric, min_accuracy
        Model selection's metric and classification floor (:func:`slidesift.select.select_epoch`).
    fingerprint
        The sweep's recipe (:func:`slidesift.sweep.fingerprint`), stored in the cell's files.
    cache
        The thumbnail cache folder (``None``: the default).
    threads
        Torch and OpenCV threads for this cell (``None``: leave the process's settings).
    """

    key: str
    folder: str
    manifest: Manifest
    tileset: TileSetSpec
    train: dict[str, Any]
    segment: SegmentSpec
    metric: str
    min_accuracy: float | None
    fingerprint: str
    cache: str | None = None
    threads: int | None = None


def _figures(summary: dict[str, float], *, nonzero: bool) -> dict[str, float | None]:
    """The figures a cell keeps from :func:`slidesift.evaluate.summary` (NaN as ``None``)."""
    keys = [f"mean_{k}" for k in FIGURES] + ["mean_slides", "classification_accuracy"]
    if nonzero:
        keys += [f"nonzero_{k}" for k in FIGURES] + ["nonzero_slides"]
    out: dict[str, float | None] = {}
    for k in keys:
        v = summary.get(k)
        name = k.removeprefix("mean_")
        out[name] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


def _prepare_folder(folder: Path, fingerprint: str) -> bool:
    """Make the cell folder ready; whether its training run is to be resumed.

    ``cell.json`` is removed first (so an interrupted cell is never taken for a finished
    one); a run folder trained under another recipe is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CELL_FILE).unlink(missing_ok=True)
    recipe = folder / RECIPE_FILE
    try:
        same = json.loads(recipe.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        shutil.rmtree(folder / RUN_DIR, ignore_errors=True)
        atomic_write_json(recipe, {"fingerprint": fingerprint})
    from slidesift.train_run import run_exists

    return run_exists(folder / RUN_DIR)


def _cell(job: CellJob, on_stage: Callable[[str], None]) -> dict[str, Any]:
    """Train, select on val, evaluate on test; the ``ok`` document (``cell.json``'s content)."""
    from slidesift.cache import ThumbCache
    from slidesift.checkpoint import load_checkpoint
    from slidesift.evaluate import evaluate_slides, summary
    from slidesift.prepare import prepare_tilesets
    from slidesift.select import select_epoch, write_selection
    from slidesift.train import train
    from slidesift.train_spec import TrainCallbacks, TrainSpec

    folder = Path(job.folder)
    resume = _prepare_folder(folder, job.fingerprint)
    run = folder / RUN_DIR
    on_stage("reading slides and cutting tiles")
    prepared = prepare_tilesets(
        job.manifest,
        job.tileset,
        seed=job.tileset.seed,
        cache=ThumbCache(job.cache) if job.cache is not None else None,
    )
    if prepared.holdout_split != "val":  # the sweep checks this up front; a guard
        raise SelectionError("the cell has no val tiles to choose its epoch on")
    spec = TrainSpec(**job.train)
    callbacks = TrainCallbacks(
        on_epoch_start=lambda epoch, _n: on_stage(f"training epoch {epoch}/{spec.epochs}"),
    )
    result = train(
        prepared.train, run, spec, holdout=prepared.holdout, resume=resume, callbacks=callbacks,
        info={"manifest": str(folder.parent.parent / "manifest.csv"), "holdout_split": "val",
              "sweep_cell": job.key},
    )  # fmt: skip
    on_stage("choosing the epoch on val")
    val = job.manifest.split("val")
    floor = -math.inf if job.min_accuracy is None else job.min_accuracy  # None: no floor
    sel = select_epoch(run, val, job.segment, metric=job.metric, min_accuracy=floor)
    write_selection(run, sel, job.metric)
    if sel.best is None:
        raise SelectionError(
            f"no epoch qualified on the {len(val)} val slide(s): slide classification accuracy "
            f"at or below {job.min_accuracy} for every epoch",
            "train more epochs, or lower the floor (min_accuracy, --min-accuracy)",
        )
    on_stage(f"scoring test with epoch {sel.best.epoch}")
    ck = load_checkpoint(sel.best.path)
    test = job.manifest.split("test")
    outcomes = evaluate_slides(test, ck, job.segment)
    counts = prepared.train.counts()
    return {
        "status": "ok",
        "epoch": sel.best.epoch,
        "checkpoint": sel.best.path.relative_to(folder).as_posix(),
        "epochs": spec.epochs,
        "val": _figures(sel.best.figures, nonzero=False),
        "test": _figures(summary(outcomes, ck.classes), nonzero=True),
        "tiles": {
            "train": len(prepared.train),
            "val": len(prepared.holdout) if prepared.holdout is not None else 0,
            "per_class": {c: int(n) for c, n in zip(prepared.train.classes, counts, strict=True)},
        },
        "rails": [prepared.train.rails.lo, prepared.train.rails.hi],
        "train_seconds": sum(r.seconds for r in result.records),
        "resumed_from_epoch": result.resumed_from,
    }


def _limit_threads(threads: int | None) -> None:
    """Cap this process's torch and OpenCV threads: ``threads``, or on a Dask worker of an
    existing cluster its cores shared among the worker's threads."""
    from slidesift.cohort_dask import cores
    from slidesift.cohort_task import limit_threads

    if threads is None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            return  # in process: the process's own settings
        state = getattr(worker, "state", worker)
        threads = max(1, cores() // max(1, int(getattr(state, "nthreads", 1))))
    limit_threads(threads)


def run_cell(job: CellJob, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one sweep cell and write its ``cell.json`` (last, atomically).

    Parameters
    ----------
    job
        The cell.
    on_stage
        Called with a short description as each stage starts (in process only; Dask tasks
        report when they end).

    Returns
    -------
    dict
        ``cell.json``'s content: ``key``, ``n``/``mpp``, ``t``, ``status`` (``ok`` or
        ``failed``), and for ``ok`` the chosen ``epoch`` and its ``checkpoint`` (relative to
        the cell folder), ``val`` and ``test`` figures (``jaccard``, ``precision``,
        ``recall``, ``dice``, ``slides``, ``classification_accuracy``; test also
        ``nonzero_*``; ``None`` where undefined), ``tiles`` counts, ``rails``,
        ``train_seconds`` (the epochs' training time, resumed epochs included),
        ``seconds`` (this task's wall time) and ``worker``; for ``failed`` ``error_type``,
        ``error`` and ``traceback`` (empty for slidesift's own errors).
    """
    start = time.perf_counter()
    stage = on_stage or (lambda _text: None)
    ts = job.tileset
    doc: dict[str, Any] = {"format": CELL_FORMAT, "key": job.key, "n": ts.longest,
                           "mpp": ts.mpp, "t": ts.tile}  # fmt: skip
    try:
        _limit_threads(job.threads)
        doc.update(_cell(job, stage))
        doc.update(error_type="", error="", traceback="")
    except Exception as exc:  # the cell's fault: recorded, the sweep goes on
        tb = "" if isinstance(exc, SlidesiftError) else traceback.format_exc()
        doc.update(status="failed", error_type=type(exc).__name__, error=str(exc) or repr(exc),
                   traceback=tb)  # fmt: skip
    doc.update(
        seconds=time.perf_counter() - start,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        fingerprint=job.fingerprint,
    )
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / CELL_FILE, doc)
    return doc
