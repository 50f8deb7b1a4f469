"""A cohort in one process as a three-stage pipeline: read ahead, classify, write behind.

While slide ``i`` is sifted, classified and scored on the calling thread, slide ``i + 1`` is
read (decoded and downsampled, its truth rasterised) on a reader thread and slide ``i - 1``'s
files are encoded and written on a writer thread. The classifier (a GPU, or the ONNX Runtime
threads) then waits for neither the disk nor the PNG encoder: on a GPU this is what keeps the
device busy between slides. Decoders, OpenCV, numpy and the PNG/JPEG encoders release the GIL,
so the threads overlap for real.

At most three slides are in memory (the one read ahead, the one classified, the one being
written). Each slide's outcome document is what :func:`slidesift.cohort_task.segment_slide_task`
would return for it, in the slides' order; a slide whose read, segmentation or write fails
gets its failure document and the others go on. Its ``seconds`` are the slide's own stage
times (``total`` their sum: the stages overlapped other slides').
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from slidesift.cohort_dask import Job
from slidesift.cohort_task import (
    Evaluated,
    SlideRead,
    evaluate_stage,
    failure_doc,
    read_stage,
    write_stage,
)
from slidesift.manifest import ManifestEntry

__all__ = ["pipelined"]


def _write(evaluated: Evaluated, job: Job) -> dict[str, Any]:
    """The writer thread's task; never raises."""
    entry = evaluated.entry
    start = time.perf_counter()
    try:
        folder = Path(job.out) / entry.name
        return write_stage(evaluated, folder, job.stamps[entry.name], job.threads, job.outputs)
    except Exception as exc:
        return failure_doc(entry, exc, time.perf_counter() - start)


def pipelined(todo: Sequence[ManifestEntry], job: Job) -> Iterator[dict[str, Any]]:
    """Outcome documents of ``todo``'s slides in order, read one ahead and written one behind.

    Parameters
    ----------
    todo
        The slides to compute.
    job
        What every slide shares (checkpoint, options, output folder, fingerprints, threads).

    Yields
    ------
    dict
        Each slide's outcome document (``ok`` or ``failed``), as soon as its files are written.
    """
    checkpoint = Path(job.checkpoint)
    with (
        ThreadPoolExecutor(1, thread_name_prefix="slidesift-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="slidesift-write") as writer,
    ):
        ahead: Future[SlideRead] | None = None
        behind: Future[dict[str, Any]] | None = None
        for i, entry in enumerate(todo):
            read = ahead.result() if ahead is not None else read_stage(checkpoint, entry,
                                                                         job.threads)  # fmt: skip
            if i + 1 < len(todo):
                ahead = reader.submit(read_stage, checkpoint, todo[i + 1], job.threads)
            start = time.perf_counter()
            try:
                folder = Path(job.out) / entry.name
                evaluated = evaluate_stage(checkpoint, entry, job.spec, folder, job.threads, read)
            except Exception as exc:
                failed = failure_doc(entry, exc, read.seconds + time.perf_counter() - start)
                evaluated = None
            del read  # the thumbnail lives on in `evaluated` only
            if behind is not None:
                yield behind.result()
                behind = None
            if evaluated is None:
                yield failed
            else:
                behind = writer.submit(_write, evaluated, job)
                del evaluated
        if behind is not None:
            yield behind.result()
