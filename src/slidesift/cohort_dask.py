"""Where cohort tasks run on Dask: a local process cluster or a scheduler's address.

:func:`on_dask` submits one :func:`~slidesift.cohort_task.segment_slide_task` per slide and
yields each task's document as it finishes; a task that could not finish (every worker that
ran it died, the cluster went away) comes back as a ``failed`` document, never an exception.
:mod:`slidesift.cohort` decides what to run and writes the tables.

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
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from slidesift.cohort_task import failure_doc, segment_slide_task
from slidesift.errors import CohortError, WorkerDiedError, require
from slidesift.manifest import ManifestEntry
from slidesift.segment import SegmentSpec
from slidesift.segment_outputs import OutputSpec

__all__ = ["WORKER_TRIES", "Job", "distributed_module", "on_dask"]

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


def on_dask(
    todo: Sequence[ManifestEntry], job: Job, scheduler: str | None, n_workers: int
) -> Iterator[dict[str, Any]]:
    """Run one task per slide, no more at once than the cluster has threads; yield their
    documents as they finish.

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
    distributed = distributed_module()
    local = scheduler is None
    with _client(scheduler, n_workers) as client:
        run_id = uuid.uuid4().hex[:8]
        waiting = deque(todo)
        running: dict[Any, ManifestEntry] = {}
        deaths: Counter[str] = Counter()
        while waiting or running:
            room = max(1, sum(client.nthreads().values())) - len(running)
            while waiting and room > 0:
                e = waiting.popleft()
                key = f"slidesift-segment-{e.name}-{run_id}-{deaths[e.name]}"
                running[client.submit(
                    segment_slide_task, job.checkpoint, e, job.spec, job.out, job.stamps[e.name],
                    job.threads, job.outputs, key=key, retries=0,
                )] = e  # fmt: skip
                room -= 1
            try:  # wake up now and then: a worker may have come back (room for more)
                done = distributed.wait(list(running), timeout=_POLL_S,
                                        return_when="FIRST_COMPLETED").done  # fmt: skip
            except TimeoutError:
                continue
            for future in done:
                entry = running.pop(future)
                try:
                    doc = future.result()
                    future.release()  # its worker may die later: no need to compute it again
                    yield doc
                except distributed.KilledWorker as exc:
                    deaths[entry.name] += 1 if local else exc.allowed_failures + 1
                    if local and deaths[entry.name] < WORKER_TRIES:
                        waiting.appendleft(entry)  # once more, on a fresh process
                        continue
                    died = WorkerDiedError(entry.name, deaths[entry.name], _address(exc))
                    yield failure_doc(entry, died, 0.0)
                except Exception as exc:  # the task could not be run (lost cluster, cancelled)
                    yield failure_doc(entry, exc, 0.0)


def _address(exc: Exception) -> str:
    """The last worker's address in a :class:`distributed.KilledWorker`."""
    return str(getattr(getattr(exc, "last_worker", None), "address", "unknown worker"))
