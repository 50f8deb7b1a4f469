"""Where cohort tasks run on Dask: a local process cluster or a scheduler's address.

:func:`run_tasks` runs any list of :class:`Task` (a top-level function returning a plain
document) and yields each document as it finishes, or the exception that kept a task from
finishing (every worker that ran it died, the cluster went away); :mod:`slidesift.sweep` runs
its cells through it. :func:`on_dask` submits one
:func:`~slidesift.cohort_task.segment_slide_task` per slide that way and turns such an
exception into a ``failed`` document. :mod:`slidesift.cohort` decides what to run and writes
the tables.

Worker deaths. The local cluster's scheduler fails a task at once when the worker process
running it dies (``allowed-failures`` 0; the nanny starts a fresh process), and this module
submits it again, up to :data:`WORKER_TRIES` processes in all; then the slide is a
``WorkerDiedError`` row. No more tasks are submitted than the cluster has threads now, so a
worker holds only the task it runs and its death is blamed on that slide alone: left to
itself, Dask sends a worker more tasks than it has threads (small groups of tasks are not
queued on the scheduler), and its own retry counts a death against every task the worker held,
so a slide merely queued behind a crashing one, or given back to a worker that then crashed on
another slide, would be reported dead too. On an existing cluster Dask's own retries apply
(its scheduler's ``allowed-failures``, 3 by default) and :class:`distributed.KilledWorker`
ends the slide.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from slidesift.cohort_task import failure_doc, segment_slide_task
from slidesift.errors import CohortError, ConfigError, WorkerDiedError, require
from slidesift.manifest import ManifestEntry
from slidesift.segment import SegmentSpec
from slidesift.segment_outputs import OutputSpec

__all__ = [
    "WORKER_TRIES",
    "Job",
    "Task",
    "check_options",
    "cores",
    "distributed_module",
    "on_dask",
    "run_tasks",
]

#: Worker processes of the local cluster that may die under one slide's task before the slide
#: is reported ``failed`` (``WorkerDiedError``): it is tried once more on a fresh process.
WORKER_TRIES = 2
#: Seconds between looks at the cluster's threads while no task finishes.
_POLL_S = 2.0


@dataclass(frozen=True)
class Job:
    """What every task of one run shares."""

    checkpoint: str
    spec: SegmentSpec
    out: str
    stamps: dict[str, dict[str, Any]]
    threads: int | None
    outputs: OutputSpec


def distributed_module() -> Any:
    """The ``distributed`` module, or :class:`MissingExtraError` naming ``slidesift[cohort]``."""
    for module in ("dask", "distributed"):
        require(
            module,
            "cohort",
            "running a cohort on Dask",
            "or run in this process without Dask: scheduler='sync' "
            "(slidesift evaluate ... --workers 0)",
        )
    import distributed

    return distributed


def cores() -> int:
    """CPU cores this process may use (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_options(scheduler: str | None, workers: int | None, threads: int | None) -> None:
    """Refuse a bad ``scheduler`` / ``workers`` / ``threads`` combination (:class:`ConfigError`)."""
    if scheduler is not None and scheduler != "sync" and ":" not in scheduler:
        raise ConfigError(
            "scheduler", scheduler, "'sync' or a Dask scheduler address like tcp://10.0.0.5:8786"
        )
    if workers is not None and workers < 0:
        raise ConfigError("workers", workers, "0 (in process) or a positive number of processes")
    if workers not in (None, 0) and scheduler is not None:
        raise ConfigError(
            "workers", workers, "left unset with a scheduler (its cluster has its own workers)"
        )
    if threads is not None and threads < 1:
        raise ConfigError("threads", threads, "a positive number, or None")


@contextlib.contextmanager
def _client(scheduler: str | None, n_workers: int) -> Iterator[Any]:
    """A :class:`distributed.Client` on ``scheduler``, or on a new local process cluster."""
    distributed = distributed_module()
    if scheduler is None:
        import dask

        with (
            dask.config.set({"distributed.scheduler.allowed-failures": 0}),  # we retry
            distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(scheduler)
    except (OSError, TimeoutError) as exc:
        raise CohortError(
            f"cannot reach the Dask scheduler at {scheduler!r}: {exc}\n  hint: start one "
            "(dask scheduler, then dask worker ADDRESS on each machine), or leave the "
            "scheduler out to run on a local cluster"
        ) from exc
    with client:
        yield client


@dataclass(frozen=True)
class Task:
    """One Dask task of a run: a name unique in the run, a top-level function and its
    (picklable) arguments. The function returns a plain document and should not raise for its
    input's fault (a slide, a sweep cell): it reports failures in the document."""

    name: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]


def run_tasks(
    tasks: Sequence[Task],
    scheduler: str | None,
    n_workers: int,
    *,
    prefix: str = "slidesift",
    died: Callable[[str, int, str], BaseException] = WorkerDiedError,
) -> Iterator[tuple[Task, dict[str, Any] | BaseException]]:
    """Run each task on Dask, no more at once than the cluster has threads; yield each task
    with its document, or with the exception that kept it from finishing, as it finishes.

    Parameters
    ----------
    tasks
        What to run (names must differ).
    scheduler
        ``None`` for a new local cluster of ``n_workers`` one-thread processes, else a
        scheduler address.
    n_workers
        Processes of the local cluster.
    prefix
        Start of the tasks' Dask keys (shown on the dashboard).
    died
        Makes the exception of a task whose worker processes all died: ``(name, deaths,
        last worker's address)``; default :class:`~slidesift.errors.WorkerDiedError`.

    Yields
    ------
    (Task, dict or BaseException)
        The task's document; or ``died(...)`` when every worker process that ran it died
        (:data:`WORKER_TRIES` on the local cluster), or the exception Dask raised (a lost
        cluster, a cancelled task).
    """
    distributed = distributed_module()
    local = scheduler is None
    with _client(scheduler, n_workers) as client:
        run_id = uuid.uuid4().hex[:8]
        waiting = deque(tasks)
        running: dict[Any, Task] = {}
        deaths: Counter[str] = Counter()
        while waiting or running:
            room = max(1, sum(client.nthreads().values())) - len(running)
            while waiting and room > 0:
                task = waiting.popleft()
                key = f"{prefix}-{task.name}-{run_id}-{deaths[task.name]}"
                running[client.submit(task.fn, *task.args, key=key, retries=0)] = task
                room -= 1
            try:  # wake up now and then: a worker may have come back (room for more)
                done = distributed.wait(list(running), timeout=_POLL_S,
                                        return_when="FIRST_COMPLETED").done  # fmt: skip
            except TimeoutError:
                continue
            for future in done:
                task = running.pop(future)
                try:
                    doc = future.result()
                    future.release()  # its worker may die later: no need to compute it again
                    yield task, doc
                except distributed.KilledWorker as exc:
                    deaths[task.name] += 1 if local else exc.allowed_failures + 1
                    if local and deaths[task.name] < WORKER_TRIES:
                        waiting.appendleft(task)  # once more, on a fresh process
                        continue
                    yield task, died(task.name, deaths[task.name], _address(exc))
                except Exception as exc:  # the task could not be run (lost cluster, cancelled)
                    yield task, exc


def on_dask(
    todo: Sequence[ManifestEntry], job: Job, scheduler: str | None, n_workers: int
) -> Iterator[dict[str, Any]]:
    """Run one :func:`~slidesift.cohort_task.segment_slide_task` per slide
    (:func:`run_tasks`); yield their documents as they finish.

    Parameters
    ----------
    todo
        The slides to compute.
    job
        What their tasks share.
    scheduler
        ``None`` for a new local cluster of ``n_workers`` processes, else a scheduler address.
    n_workers
        Processes of the local cluster.

    Yields
    ------
    dict
        Each task's document (:func:`~slidesift.cohort_task.segment_slide_task`); a task that
        could not finish gives a ``failed`` one (``WorkerDiedError`` when every worker process
        that ran it died, else the exception Dask raised).
    """
    entries = {e.name: e for e in todo}
    tasks = [
        Task(e.name, segment_slide_task, (job.checkpoint, e, job.spec, job.out,
                                          job.stamps[e.name], job.threads, job.outputs))
        for e in todo
    ]  # fmt: skip
    for task, result in run_tasks(tasks, scheduler, n_workers, prefix="slidesift-segment"):
        yield result if isinstance(result, dict) else failure_doc(entries[task.name], result, 0.0)


def _address(exc: Exception) -> str:
    """The last worker's address in a :class:`distributed.KilledWorker`."""
    return str(getattr(getattr(exc, "last_worker", None), "address", "unknown worker"))
