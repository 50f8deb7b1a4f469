"""Segment and score a cohort on Dask: one task per slide, resumable, failures reported.

::

    manifest entries --(one task per slide: read, segment, score, write OUT/<name>/,
    then OUT/<name>/outcome.json)--> OUT/scores.csv, OUT/summary.json

Layout of the output folder::

    <name>/<name>_mask.png, _overlay.png, _tumor.geojson, ...  (write_segmentation, ``outputs``)
    <name>/outcome.json   written last and atomically: the slide's row and its fingerprint
    scores.csv            one row per slide in manifest order, with status, error type, error
    summary.json          cohort means (:func:`slidesift.evaluate.summary`), counts, failures

Where the tasks run (``scheduler``):

- ``None`` (default): a :class:`distributed.LocalCluster` of worker processes, as many as there
  are slides to compute or cores (fewer if ``workers`` says so), one thread each; each task's
  ONNX Runtime, OpenCV, torch and tile measurement use ``cores // workers`` threads.
- ``"tcp://host:8786"``: an existing Dask cluster (:class:`distributed.Client`). The
  checkpoint, the slides and the output folder must be at the same paths on its workers (a
  shared file system).
- ``"sync"`` (or ``workers=0``): in this process, without Dask, as a pipeline
  (:mod:`slidesift.cohort_pipeline`: the next slide read and the last one written on threads
  while this one is classified; what a GPU wants), or strictly one slide after another with
  ``pipeline=False``.

A task loads the checkpoint itself (once per process, keyed by path and mtime) and never raises:
a slide that fails (unreadable file, bad annotation, any exception) comes back as a ``failed``
row with its error, and the other slides go on.

A worker process that dies under a task (``kill -9``, the out-of-memory killer, a segfault in
OpenSlide or another C library) takes only that slide down: the scheduler gives the task to
another worker process (the local cluster's nanny starts a fresh one), and when that one dies
too (:data:`WORKER_TRIES` processes in all) the slide is a ``failed`` row with error type
``WorkerDiedError``; the others finish and scores.csv has every row. On an existing cluster
its scheduler's ``distributed.scheduler.allowed-failures`` (Dask's default 3) sets the tries.
In process (``sync``) nothing can outlive such a crash: the whole run stops, and a rerun
resumes the finished slides.

A rerun skips each slide whose outcome.json matches the run's fingerprint (checkpoint digest,
:class:`SegmentSpec`, the slide's paths and label, the files chosen and their preview size,
and the slide's and annotation's identity: size, mtime and a partial hash of their bytes,
:func:`slidesift.cache.file_identity`) and whose files are all there (status ``resumed``);
``force=True`` recomputes. A slide rewritten in place under the same path is recomputed, and
so is one whose content changed under a restored mtime when the change touches the bytes the
partial hash reads (all of a file up to 8 MiB; of a larger one both ends and 16 blocks
between, :func:`slidesift.cache.partial_digest`); a same-size edit elsewhere in a large file
with its mtime put back goes unseen and needs ``force``. Failed slides have no outcome.json,
so a rerun tries them again. A task deletes its slide's outcome.json before it writes
anything, so an interrupted slide is never taken for a finished one.

One run writes a folder at a time: :func:`run_cohort` holds ``OUT/.slidesift.lock``
(:func:`slidesift.io.lock.output_lock`) from the first resume check to the last table, and a
second run on the same folder raises :class:`~slidesift.errors.OutputLockedError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slidesift.cohort_dask import WORKER_TRIES, Job, on_dask
from slidesift.cohort_dask import check_options as _check_options
from slidesift.cohort_dask import cores as _cores
from slidesift.cohort_dask import distributed_module as _distributed  # noqa: F401 (a test)
from slidesift.cohort_pipeline import pipelined
from slidesift.cohort_task import (
    OUTCOME_FILE,
    fingerprint,
    outcome_from_doc,
    segment_slide_task,
)
from slidesift.errors import CohortError, MissingExtraError
from slidesift.evaluate import SlideOutcome
from slidesift.io.lock import output_lock
from slidesift.manifest import ManifestEntry
from slidesift.results import SCORES_FILE, SUMMARY_FILE, write_results
from slidesift.segment import SegmentSpec
from slidesift.segment_outputs import OutputSpec

__all__ = [
    "OUTCOME_FILE",
    "WORKER_TRIES",
    "CohortError",
    "CohortResult",
    "MissingExtraError",
    "SlideRun",
    "Status",
    "fingerprint",
    "run_cohort",
    "segment_slide_task",
]

#: Cohort table and figures in ``OUT/``.
#: ``ok``: computed now; ``resumed``: an earlier run's complete outputs reused; ``failed``.
Status = Literal["ok", "resumed", "failed"]


@dataclass(frozen=True)
class SlideRun:
    """One slide's result in a cohort run.

    Attributes
    ----------
    name
        The slide's name (:attr:`ManifestEntry.name`), also its output folder.
    status
        ``ok``, ``resumed`` or ``failed``.
    outcome
        Its scores and counts; ``None`` when it failed.
    error_type, error
        The exception's class name and message (empty unless failed).
    traceback
        The formatted traceback of an unexpected exception (empty for slidesift's own errors).
    seconds
        Wall seconds the slide's task took (in the earlier run, when resumed).
    worker
        ``host:pid`` of the process that computed it (empty when it failed).
    """

    name: str
    status: Status
    outcome: SlideOutcome | None
    error_type: str = ""
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    worker: str = ""


@dataclass(frozen=True)
class CohortResult:
    """A cohort run: its rows in manifest order and the figures in summary.json.

    Attributes
    ----------
    rows
        One per slide, in manifest order.
    figures
        What summary.json holds: cohort means over the scored slides, counts, failures.
    out
        The output folder.
    """

    rows: tuple[SlideRun, ...]
    figures: dict[str, Any]
    out: Path

    @property
    def outcomes(self) -> list[SlideOutcome]:
        """Outcomes of the slides that did not fail (computed or resumed), in manifest order."""
        return [r.outcome for r in self.rows if r.outcome is not None]

    @property
    def failures(self) -> list[SlideRun]:
        """The rows that failed."""
        return [r for r in self.rows if r.status == "failed"]

    @property
    def scores_csv(self) -> Path:
        """``OUT/scores.csv``."""
        return self.out / SCORES_FILE

    @property
    def summary_json(self) -> Path:
        """``OUT/summary.json``."""
        return self.out / SUMMARY_FILE


# ---------------------------------------------------------------- the client side


def _run_from_doc(doc: dict[str, Any], status: Status | None = None) -> SlideRun:
    """A :class:`SlideRun` from a task's (or an earlier outcome.json's) document."""
    seconds = float(doc.get("seconds", {}).get("total", 0.0))
    if doc["status"] != "ok":
        return SlideRun(doc["name"], "failed", None, doc["error_type"], doc["error"],
                        doc.get("traceback", ""), seconds)  # fmt: skip
    outcome = outcome_from_doc(doc)
    return SlideRun(doc["name"], status or "ok", outcome, seconds=seconds, worker=doc["worker"])


def _resumable(folder: Path, stamp: dict[str, Any]) -> SlideRun | None:
    """The earlier run of this slide, when its outcome.json matches and its files exist."""
    try:
        doc = json.loads((folder / OUTCOME_FILE).read_text(encoding="utf-8"))
        complete = (
            doc["status"] == "ok"
            and doc["fingerprint"] == json.loads(json.dumps(stamp))
            and all((folder / name).is_file() for name in doc["files"])
        )
        return _run_from_doc(doc, "resumed") if complete else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _in_process(todo: Sequence[ManifestEntry], job: Job, pipeline: bool) -> Iterator[SlideRun]:
    if pipeline and len(todo) > 1:
        yield from (_run_from_doc(doc) for doc in pipelined(todo, job))
        return
    for e in todo:
        doc = segment_slide_task(job.checkpoint, e, job.spec, job.out, job.stamps[e.name],
                                 job.threads, job.outputs)  # fmt: skip
        yield _run_from_doc(doc)


def _check_names(entries: Sequence[ManifestEntry]) -> None:
    """Each slide's outputs go to OUT/<name>/: names must differ."""
    seen: dict[str, ManifestEntry] = {}
    clashes = []
    for e in entries:
        if e.name in seen:
            clashes.append(f"{seen[e.name].slide} and {e.slide} are both {e.name!r}")
        seen.setdefault(e.name, e)
    if clashes:
        raise CohortError(
            "slides share a name, so their outputs would overwrite each other: "
            + "; ".join(clashes) + "\n  hint: rename one of each pair (the name is the file "
            "name up to its first dot)"
        )  # fmt: skip


def _execute(
    todo: Sequence[ManifestEntry],
    job: Job,
    scheduler: str | None,
    workers: int | None,
    pipeline: bool,
) -> Iterator[SlideRun]:
    """Run ``todo`` where the options say; yields rows as slides finish."""
    if not todo:
        return
    if scheduler == "sync" or workers == 0:
        yield from _in_process(todo, job, pipeline)
        return
    n = min(len(todo), workers or _cores())
    if scheduler is None and job.threads is None:
        job = dataclasses.replace(job, threads=max(1, _cores() // n))
    yield from (_run_from_doc(doc) for doc in on_dask(todo, job, scheduler, n))


def _placeholder(row: SlideRun, entry: ManifestEntry) -> SlideOutcome:
    """A failed slide's line in scores.csv: its name and label, nothing measured."""
    return SlideOutcome(row.name, entry.label, None, {}, None, 0, "", {})


def _figures(rows: Sequence[SlideRun], classes: Sequence[str]) -> dict[str, Any]:
    """summary.json: cohort means over the slides that did not fail, counts and failures."""
    from slidesift.evaluate import summary

    figures: dict[str, Any] = dict(summary([r.outcome for r in rows if r.outcome], classes))
    figures.update(
        slides=len(rows),
        ok=sum(r.status == "ok" for r in rows),
        resumed=sum(r.status == "resumed" for r in rows),
        failed=sum(r.status == "failed" for r in rows),
        failures=[
            {"slide": r.name, "error_type": r.error_type, "error": r.error,
             "traceback": r.traceback}
            for r in rows if r.status == "failed"
        ],
    )  # fmt: skip
    return figures


def _write_tables(
    rows: Sequence[SlideRun], entries: Sequence[ManifestEntry], figures: dict[str, Any], out: Path
) -> None:

    outcomes = [r.outcome or _placeholder(r, e) for r, e in zip(rows, entries, strict=True)]
    status = [(r.status, r.error_type, r.error) for r in rows]
    write_results(out, outcomes, figures, status=status)


def run_cohort(
    checkpoint: str | os.PathLike[str],
    entries: Iterable[ManifestEntry],
    spec: SegmentSpec | None = None,
    *,
    out: str | os.PathLike[str],
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    force: bool = False,
    on_slide: Callable[[SlideRun], None] | None = None,
    outputs: OutputSpec | str | Iterable[str] | None = None,
    pipeline: bool = True,
) -> CohortResult:
    """Segment and score every slide, one Dask task per slide; write scores.csv, summary.json.

    Parameters
    ----------
    checkpoint
        The checkpoint file (read by every worker at this absolute path).
    entries
        The slides (a :class:`Manifest` or some of its entries); names must differ.
    spec
        Segmentation options.
    out
        Output folder (see the module docstring for its layout).
    scheduler
        ``None``: a new local process cluster; ``"sync"``: in this process without Dask; else
        a Dask scheduler's address (``tcp://host:8786``).
    workers
        Processes of the local cluster (default: as many as slides to compute, at most the
        cores); ``0`` runs in this process like ``scheduler="sync"``.
    threads
        Threads per task (default: ``cores // workers`` on the local cluster, else all cores).
    force
        Recompute slides whose complete outputs an earlier run left.
    on_slide
        Called with each slide's row as it is known (resumed ones first, then as they finish).
    outputs
        Each slide's files (:class:`~slidesift.segment_outputs.OutputSpec` or kind names;
        default: all, previews at 2000 px). Part of the fingerprint: another choice recomputes.
    pipeline
        In this process (``workers=0`` or ``scheduler="sync"``), read the next slide and write
        the last one on threads while this one is classified
        (:func:`slidesift.cohort_pipeline.pipelined`); ``False``: strictly one slide after
        another. The outputs are the same.

    Returns
    -------
    CohortResult
        Rows in the entries' order and the figures written to summary.json.

    Raises
    ------
    ConfigError
        A bad scheduler, workers, threads or outputs value.
    CohortError
        Two slides with one name, or an unreachable scheduler.
    MissingExtraError
        Dask is needed (any scheduler but ``sync``) and not installed.
    CheckpointError
        The checkpoint cannot be read.
    OutputLockedError
        Another run writes ``out`` now.
    """
    from slidesift.cache import file_digest
    from slidesift.checkpoint import load_checkpoint

    _check_options(scheduler, workers, threads)
    chosen = OutputSpec.of(outputs)
    entries = list(entries)
    _check_names(entries)
    spec = spec or SegmentSpec()
    ck_path = Path(checkpoint).resolve()
    classes = load_checkpoint(ck_path).classes
    with output_lock(out, "run_cohort") as root:
        digest = file_digest(ck_path)
        with ThreadPoolExecutor(8) as pool:  # a few reads per file; slow on a network disk
            stamps = dict(zip(
                (e.name for e in entries),
                pool.map(lambda e: fingerprint(digest, spec, e, chosen), entries),
                strict=True,
            ))  # fmt: skip
        job = Job(str(ck_path), spec, str(root), stamps, threads, chosen)
        return _run(entries, job, classes, force, (scheduler, workers, pipeline), on_slide)


def _run(
    entries: Sequence[ManifestEntry],
    job: Job,
    classes: Sequence[str],
    force: bool,
    where: tuple[str | None, int | None, bool],
    on_slide: Callable[[SlideRun], None] | None,
) -> CohortResult:
    """Resume what matches, compute the rest, write the tables (under the folder's lock)."""
    root = Path(job.out)
    found: dict[str, SlideRun] = {}
    todo = []
    for e in entries:
        earlier = None if force else _resumable(root / e.name, job.stamps[e.name])
        if earlier is None:
            todo.append(e)
            continue
        found[e.name] = earlier
        if on_slide is not None:
            on_slide(earlier)
    for row in _execute(todo, job, *where):
        found[row.name] = row
        if on_slide is not None:
            on_slide(row)
    rows = tuple(found[e.name] for e in entries)
    figures = _figures(rows, classes)
    _write_tables(rows, entries, figures, root)
    return CohortResult(rows, figures, root)
