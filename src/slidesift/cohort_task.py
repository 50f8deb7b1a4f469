"""One cohort task: read, segment, score and write one slide (runs on a Dask worker).

A plain top-level function with picklable arguments and results (:func:`segment_slide_task`),
so any Dask worker process can run it; the checkpoint is loaded once per process. The task
never raises for a slide's fault: it returns a ``failed`` document instead. ``outcome.json``
is deleted before anything is written and written last, so its presence means "done".
:mod:`slidesift.cohort` schedules these tasks and reads their documents back.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.ceilings import Ceilings
from slidesift.errors import SlidesiftError
from slidesift.evaluate import SlideOutcome
from slidesift.io.slide import Thumb
from slidesift.manifest import ManifestEntry
from slidesift.metrics import Scores
from slidesift.segment import Classifiers, SegmentSpec
from slidesift.segment_outputs import OutputSpec

__all__ = [
    "OUTCOME_FILE",
    "Evaluated",
    "SlideRead",
    "evaluate_stage",
    "failure_doc",
    "fingerprint",
    "limit_threads",
    "outcome_doc",
    "outcome_from_doc",
    "read_stage",
    "segment_slide_task",
    "write_stage",
]

#: Per-slide record, written last in ``OUT/<name>/``.
OUTCOME_FILE = "outcome.json"
_FORMAT = "slidesift-outcome/1"


def fingerprint(
    checkpoint_digest: str,
    spec: SegmentSpec,
    entry: ManifestEntry,
    outputs: OutputSpec | None = None,
) -> dict[str, Any]:
    """What a slide's outputs depend on: the checkpoint's bytes, the options, the slide's row
    and its files' identities, the files chosen.

    Parameters
    ----------
    checkpoint_digest
        :func:`slidesift.cache.file_digest` of the checkpoint file.
    spec
        The segmentation options.
    entry
        The slide (its path, annotation path and label).
    outputs
        The files written and the preview size (default: :class:`OutputSpec`'s).

    Returns
    -------
    dict
        Plain JSON values; stored in outcome.json and compared on a rerun. ``files`` holds the
        slide's and the annotation's :func:`~slidesift.cache.file_identity` (size, mtime and
        a partial hash, read now: about 3 MiB per file), so a file rewritten in place, or whose
        hashed bytes changed under a restored mtime, no longer matches.
    """
    from slidesift.cache import file_identity

    return {
        "checkpoint": checkpoint_digest,
        "spec": asdict(spec),
        "slide": str(entry.slide),
        "annotation": None if entry.annotation is None else str(entry.annotation),
        "label": entry.label,
        "outputs": (outputs or OutputSpec()).to_dict(),
        "files": {
            "slide": file_identity(entry.slide),
            "annotation": file_identity(entry.annotation),
        },
    }


@functools.lru_cache(maxsize=1)
def _loaded(path: str, mtime_ns: int, threads: int | None) -> Classifiers:
    """The checkpoint and its classifiers, once per process (the key holds the mtime)."""
    from slidesift.checkpoint import load_checkpoint

    return Classifiers(load_checkpoint(path), threads=threads)


def limit_threads(threads: int | None) -> None:
    """Cap OpenCV's and torch's threads in this (worker) process; ``None`` leaves them."""
    if threads is None:
        return
    import cv2

    cv2.setNumThreads(threads)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(threads)


def outcome_doc(outcome: SlideOutcome) -> dict[str, Any]:
    """A :class:`SlideOutcome` as plain JSON values (without its result)."""
    return {
        "name": outcome.name,
        "label": outcome.label,
        "vote": outcome.vote,
        "counts": outcome.counts,
        "scores": None if outcome.scores is None else outcome.scores.to_dict(),
        "kept_tiles": outcome.kept_tiles,
        "inference": outcome.inference,
        "seconds": outcome.seconds,
        "ceilings": None if outcome.ceilings is None else asdict(outcome.ceilings),
    }


def outcome_from_doc(doc: dict[str, Any]) -> SlideOutcome:
    """The inverse of :func:`outcome_doc`."""
    s = doc["scores"]
    return SlideOutcome(
        name=str(doc["name"]),
        label=doc["label"],
        vote=doc["vote"],
        counts={str(k): int(v) for k, v in doc["counts"].items()},
        scores=None if s is None else Scores(**s),
        kept_tiles=int(doc["kept_tiles"]),
        inference=str(doc["inference"]),
        seconds={str(k): float(v) for k, v in doc["seconds"].items()},
        ceilings=_ceilings_from_doc(doc.get("ceilings")),
    )


def _ceilings_from_doc(doc: dict[str, Any] | None) -> Ceilings | None:
    if doc is None:
        return None
    return Ceilings(
        oracle=Scores(**doc["oracle"]),
        all_tissue=Scores(**doc["all_tissue"]),
        sift_ceiling=float(doc["sift_ceiling"]),
    )


@dataclass
class SlideRead:
    """A slide's thumbnail and truth as :func:`slidesift.evaluate.read_slide` returns them,
    the seconds reading took, or the exception it raised (kept to become the slide's failure
    document when its turn comes)."""

    read: tuple[Thumb, NDArray[np.bool_] | None] | None
    seconds: float
    error: BaseException | None = None


@dataclass
class Evaluated:
    """A slide segmented and scored, its outputs not yet written."""

    entry: ManifestEntry
    outcome: SlideOutcome
    read: tuple[Thumb, NDArray[np.bool_] | None]
    read_seconds: float


def read_stage(checkpoint: Path, entry: ManifestEntry, threads: int | None) -> SlideRead:
    """Read one slide at the checkpoint's downsample; never raises (see :class:`SlideRead`)."""
    from slidesift.evaluate import read_slide
    from slidesift.sift import warm_up

    start = time.perf_counter()
    try:
        limit_threads(threads)
        ck = _loaded(str(checkpoint), checkpoint.stat().st_mtime_ns, threads).checkpoint
        warm_up(ck.sift)  # a worker's first slide: the sift's kernels load during the read
        return SlideRead(read_slide(entry, ck.downsample), time.perf_counter() - start)
    except Exception as exc:
        return SlideRead(None, time.perf_counter() - start, exc)


def evaluate_stage(
    checkpoint: Path, entry: ManifestEntry, spec: SegmentSpec, folder: Path,
    threads: int | None, read: SlideRead | None = None,
) -> Evaluated:  # fmt: skip
    """Segment and score one slide (reading it first unless ``read`` is given); deletes its
    outcome.json first. Raises what reading or segmenting raised."""
    from slidesift.evaluate import evaluate_slide

    (folder / OUTCOME_FILE).unlink(missing_ok=True)
    limit_threads(threads)
    classifiers = _loaded(str(checkpoint), checkpoint.stat().st_mtime_ns, threads)
    read = read or read_stage(checkpoint, entry, threads)
    if read.error is not None:
        raise read.error
    assert read.read is not None
    outcome = evaluate_slide(
        entry, classifiers.checkpoint, spec, read=read.read, classifiers=classifiers,
        keep_result=True,
    )  # fmt: skip
    return Evaluated(entry, outcome, read.read, read.seconds)


def write_stage(
    evaluated: Evaluated, folder: Path, stamp: dict[str, Any], threads: int | None,
    outputs: OutputSpec, started: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write one evaluated slide's files, then its outcome.json; returns the document.

    ``seconds`` holds the stages' own times (``read``, ``sift``, ``classify``, ...,
    ``write``) and ``total``: the wall time since ``started`` (a ``time.perf_counter()``),
    or without it (stages that overlapped other slides' in a pipeline) the stages' sum.
    """
    from slidesift.io.atomic import atomic_write_text
    from slidesift.segment_outputs import write_segmentation

    outcome = evaluated.outcome
    assert outcome.result is not None
    written = time.perf_counter()
    files = write_segmentation(
        folder, evaluated.entry.name, outcome.result, evaluated.read[1], outputs=outputs,
        threads=threads,
    )  # fmt: skip
    doc = outcome_doc(outcome)
    seconds = {**outcome.seconds, "read": outcome.seconds.get("read", 0.0) +
               evaluated.read_seconds, "write": time.perf_counter() - written}  # fmt: skip
    total = sum(seconds.values()) if started is None else time.perf_counter() - started
    doc["seconds"] = {**seconds, "total": total}
    doc.update(
        status="ok",
        files=sorted(p.name for p in files.values()),
        worker=f"{socket.gethostname()}:{os.getpid()}",
        fingerprint=stamp,
    )
    atomic_write_text(folder / OUTCOME_FILE, json.dumps({"format": _FORMAT, **doc}, indent=2))
    return doc


def failure_doc(entry: ManifestEntry, exc: BaseException, seconds: float) -> dict[str, Any]:
    """A failed slide's row: its error's type and message (and traceback when unexpected)."""
    tb = ""
    if not isinstance(exc, SlidesiftError):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "name": entry.name,
        "status": "failed",
        "error_type": type(exc).__name__,
        "error": str(exc) or repr(exc),
        "traceback": tb,
        "seconds": {"total": seconds},
    }


def segment_slide_task(
    checkpoint: str,
    entry: ManifestEntry,
    spec: SegmentSpec,
    out: str,
    stamp: dict[str, Any],
    threads: int | None = None,
    outputs: OutputSpec | None = None,
) -> dict[str, Any]:
    """One cohort task: read, segment, score and write a slide into ``out/<name>/``.

    Runs on a Dask worker (or in process); takes and returns plain picklable values and
    never raises for a slide's fault.

    Parameters
    ----------
    checkpoint
        Absolute path of the checkpoint (loaded once per process).
    entry
        The slide.
    spec
        Segmentation options.
    out
        The cohort's output folder; the slide's go to ``out/<entry.name>/``.
    stamp
        The slide's :func:`fingerprint`, stored in its outcome.json.
    threads
        Threads for ONNX Runtime, OpenCV, torch, the tile measurement and the file encoding
        (``None``: all cores, leaving the process's settings alone).
    outputs
        The files to write and the preview size (default: :class:`OutputSpec`'s); the
        ``files`` of the returned document name those written.

    Returns
    -------
    dict
        outcome.json's content (``status`` ``ok``; ``worker`` is ``host:pid`` of the process
        that ran it), or ``status`` ``failed`` with ``error_type``, ``error`` and
        ``traceback``. No arrays.
    """
    start = time.perf_counter()
    folder = Path(out) / entry.name
    try:
        evaluated = evaluate_stage(Path(checkpoint), entry, spec, folder, threads)
        return write_stage(evaluated, folder, stamp, threads, outputs or OutputSpec(), start)
    except Exception as exc:
        return failure_doc(entry, exc, time.perf_counter() - start)
