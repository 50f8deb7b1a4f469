"""Soak: 200 small phantom slides through ``evaluate`` on a LocalCluster; does anything leak?

The slides go through :func:`slidesift.cohort.run_cohort` (what ``slidesift evaluate`` calls)
on a :class:`distributed.LocalCluster` of ``--workers`` one-thread worker processes (each task
capped at ``cores // workers`` threads, as ``run_cohort``'s own local cluster does). A Dask
worker plugin samples each worker's own process the moment one of its slides finishes (the
task's ``executing`` transition, before the worker starts its next slide): resident memory
(``VmRSS``), open file descriptors (entries of ``/proc/self/fd``) and threads. The client
process (this one) is sampled as each slide's row reaches it.

Targets (issue 18, item 6):
  - each worker's RSS after the last slide is within 10% of its RSS when the cohort had
    finished 20 slides (its latest sample by then);
  - open file descriptors flat: each worker's count after the last slide is at most its count
    at slide 20;
  - no temporary files left: no ``.*.tmp`` file (:mod:`slidesift.io.atomic`'s) anywhere in the
    output folder, and nothing in the temporary folder the run was given (``TMPDIR`` points at
    a new, empty folder for the cluster and its workers; Dask's scratch space is in it), but
    for Dask's two lock files of that scratch space (:data:`DASK_LOCKS`).

Every slide must come back ``ok``. Inputs are made once in ``$SLIDESIFT_BENCH_CACHE`` by
``bench_cohort.make_inputs`` (a PAIP-like phantom cohort, here 700-800 px slides, and a random
binary model at N = 640, T = 96, stride 32); one slide is segmented first to export the ONNX
graphs and compile the numba kernels.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_soak.py [--slides 30]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from distributed import WorkerPlugin

import _common
from _common import report
from _procs import proc_sample
from bench_cohort import CACHE, Inputs, make_inputs, warm_caches

#: Slides in the soak.
SLIDES = 200
#: Worker processes of the local cluster.
WORKERS = 2
#: Level-0 longer side of the slides (px), the model's N and T, and the stride.
SIZE, LONGEST, TILE, STRIDE = (700, 800), 640, 96, 32
#: The slide count whose samples are the reference (the issue's "slide 20").
REFERENCE = 20
#: Largest allowed relative RSS growth from the reference to the end.
RSS_TOLERANCE = 0.10
#: The worker plugin's name.
PLUGIN = "slidesift-soak-sampler"


class SoakSampler(WorkerPlugin):  # type: ignore[misc]
    """A Dask worker plugin: the worker's RSS, fds and threads as each slide task finishes.

    Attributes
    ----------
    samples
        One dict per finished slide task: ``t`` (epoch seconds), ``key``, ``pid`` and
        :func:`_procs.proc_sample`'s figures.
    """

    name = PLUGIN

    def setup(self, worker: Any) -> None:
        """Start with no samples (called on every worker, also one that joins later)."""
        self.samples: list[dict[str, Any]] = []

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Sample this process when a slide task leaves ``executing``."""
        if start == "executing" and "slidesift-segment-" in str(key):
            sample = proc_sample(os.getpid())
            if sample is not None:
                self.samples.append({"t": time.time(), "key": str(key), "pid": os.getpid(),
                                     **sample})  # fmt: skip


def _samples_of(dask_worker: Any) -> list[dict[str, Any]]:
    return list(dask_worker.plugins[PLUGIN].samples)


#: Dask's own lock files of its scratch space (fixed names, kept for the next Dask run by
#: design; the per-worker folders in it are removed): listed apart, not counted as left over.
DASK_LOCKS = ("dask-scratch-space/global.lock", "dask-scratch-space/purge.lock")


def temp_left(out: Path, tmp: Path) -> list[str]:
    """Temporary files left: ``.*.tmp`` under ``out``, any file under ``tmp`` but Dask's locks."""
    left = [p for p in out.rglob(".*.tmp") if p.is_file()]
    left += [p for p in tmp.rglob("*") if p.is_file() and p.relative_to(tmp).as_posix()
             not in DASK_LOCKS]  # fmt: skip
    return sorted(str(p) for p in left)


def soak(inputs: Inputs, out: Path, tmp: Path, workers: int) -> dict[str, Any]:
    """Run every slide of ``inputs`` on a new LocalCluster with ``TMPDIR=tmp``; the samples.

    Returns
    -------
    dict
        ``seconds`` (the ``run_cohort`` call), ``slides``, ``ok``, ``failed``, ``workers``
        (pid -> that worker's samples in time order), ``client`` (this process's samples, one
        per slide row) and ``order`` (each finished slide's time, for the slide count).
    """
    import distributed

    from slidesift.cohort import run_cohort
    from slidesift.manifest import read_manifest
    from slidesift.segment import SegmentSpec

    entries = list(read_manifest(inputs.manifest))
    cores = os.cpu_count() or 1
    client_samples: list[dict[str, Any]] = []

    def on_slide(row: Any) -> None:
        sample = proc_sample(os.getpid()) or {}
        client_samples.append({"t": time.time(), "slide": row.name, **sample})
        if len(client_samples) % 10 == 0:
            print(f"  {len(client_samples)}/{len(entries)} slides", flush=True)

    old_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)  # the workers inherit it; Dask's scratch space goes there
    tempfile.tempdir = None
    try:
        with (
            distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster,
            distributed.Client(cluster) as client,
        ):  # fmt: skip
            client.register_plugin(SoakSampler())
            start = time.perf_counter()
            result = run_cohort(inputs.checkpoint, entries, SegmentSpec(stride=inputs.stride),
                                out=out, scheduler=cluster.scheduler_address,
                                threads=max(1, cores // workers), on_slide=on_slide)  # fmt: skip
            seconds = time.perf_counter() - start
            per_worker = client.run(_samples_of)
    finally:
        if old_tmp is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmp
        tempfile.tempdir = None
    by_pid: dict[str, list[dict[str, Any]]] = {}
    for samples in per_worker.values():
        for s in samples:
            by_pid.setdefault(str(s["pid"]), []).append(s)
    return {
        "seconds": seconds,
        "slides": len(result.rows),
        "ok": sum(r.status == "ok" for r in result.rows),
        "failed": [f"{r.name}: {r.error_type} {r.error}" for r in result.rows if r.status != "ok"],
        "workers": {pid: sorted(s, key=lambda s: s["t"]) for pid, s in by_pid.items()},
        "client": client_samples,
    }


def at_count(samples: Sequence[dict[str, Any]], times: Sequence[float], n: int) -> dict | None:
    """The latest of ``samples`` taken by the time the cohort had finished ``n`` slides."""
    if not times:
        return None
    limit = times[min(n, len(times)) - 1]
    before = [s for s in samples if s["t"] <= limit]
    return before[-1] if before else None


def figures(run: dict[str, Any], reference: int = REFERENCE) -> dict[str, Any]:
    """Per process: RSS, fds and threads at the reference slide count and at the end; targets.

    Parameters
    ----------
    run
        :func:`soak`'s result (with ``temp_left`` added).
    reference
        The slide count of the reference samples.

    Returns
    -------
    dict
        ``processes``: name -> ``rss_mib_ref``, ``rss_mib_end``, ``rss_ratio``, ``fds_ref``,
        ``fds_end``, ``threads_ref``, ``threads_end``, ``slides`` (it finished); ``slides_per_min``;
        ``rss_ok``, ``fds_ok``, ``temp_ok``, ``all_ok``.
    """
    times = sorted(s["t"] for s in run["client"])
    procs: dict[str, Any] = {}
    named = [(f"worker {pid}", s) for pid, s in sorted(run["workers"].items())]
    for name, samples in [*named, ("client", run["client"])]:
        ref, last = at_count(samples, times, reference), (samples[-1] if samples else None)
        if ref is None or last is None:
            procs[name] = {"slides": len(samples), "rss_ratio": None}
            continue
        procs[name] = {
            "slides": len(samples),
            "rss_mib_ref": ref["rss_kib"] / 1024,
            "rss_mib_end": last["rss_kib"] / 1024,
            "rss_ratio": last["rss_kib"] / ref["rss_kib"],
            "fds_ref": ref["fds"],
            "fds_end": last["fds"],
            "threads_ref": ref["threads"],
            "threads_end": last["threads"],
        }
    workers = [v for k, v in procs.items() if k.startswith("worker")]
    rss_ok = bool(workers) and all(
        v["rss_ratio"] is not None and v["rss_ratio"] <= 1 + RSS_TOLERANCE for v in workers
    )
    fds_ok = bool(workers) and all(v.get("fds_end", 1 << 30) <= v.get("fds_ref", -1)
                                   for v in workers)  # fmt: skip
    temp_ok = not run["temp_left"]
    return {
        "processes": procs,
        "slides_per_min": 60 * run["slides"] / run["seconds"],
        "rss_ok": rss_ok,
        "fds_ok": fds_ok,
        "temp_ok": temp_ok,
        "all_ok": rss_ok and fds_ok and temp_ok and run["ok"] == run["slides"],
    }


def write_report(run: dict[str, Any], figs: dict[str, Any], json_path: Path,
                 geometry: dict[str, Any]) -> Path:  # fmt: skip
    """Print the table and write the JSON (``json_path``, via :func:`_common.report`)."""
    ref = geometry["reference"]
    columns = ["process", "slides", f"RSS@{ref} MiB", f"RSS@{run['slides']} MiB", "ratio",
               f"fds@{ref}", f"fds@{run['slides']}", f"threads@{ref}",
               f"threads@{run['slides']}"]  # fmt: skip
    rows = []
    for name, v in figs["processes"].items():
        if v.get("rss_ratio") is None:
            rows.append([name, v["slides"], "?", "?", "?", "?", "?", "?", "?"])
            continue
        rows.append([name, v["slides"], round(v["rss_mib_ref"], 1), round(v["rss_mib_end"], 1),
                     round(v["rss_ratio"], 3), v["fds_ref"], v["fds_end"], v["threads_ref"],
                     v["threads_end"]])  # fmt: skip
    _common.RESULTS = json_path.parent
    title = (
        f"Soak: {run['slides']} phantom slides through run_cohort on a LocalCluster of "
        f"{geometry['workers']} workers, {figs['slides_per_min']:.1f} slides/min, "
        f"{run['ok']}/{run['slides']} ok; temp files left: {len(run['temp_left'])}. Targets: "
        f"worker RSS ratio <= {1 + RSS_TOLERANCE:.2f} ({'met' if figs['rss_ok'] else 'MISSED'}),"
        f" fds flat ({'met' if figs['fds_ok'] else 'MISSED'}), no temp files "
        f"({'met' if figs['temp_ok'] else 'MISSED'})"
    )
    samples = {"workers": run["workers"], "client": run["client"]}
    extra = {**geometry, **{k: v for k, v in run.items() if k not in samples},
             **figs, "samples": samples}  # fmt: skip
    return report(json_path.stem, title, columns, rows, extra)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print the table, write the JSON; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=SLIDES, help="slides [%(default)s]")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="worker processes [%(default)s]")  # fmt: skip
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "bench_soak.json",
                        help="where the figures go [%(default)s]")  # fmt: skip
    args = parser.parse_args(argv)
    if args.slides <= REFERENCE:
        parser.error(f"--slides must be over {REFERENCE} (the reference slide count)")

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds: the cluster is closed

    signal.signal(signal.SIGTERM, _exit)
    inputs = make_inputs(CACHE, count=args.slides, size=SIZE, longest=LONGEST, tile=TILE,
                         stride=STRIDE)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        root = Path(scratch)
        warm_caches(inputs, root / "warm", args.workers)
        out, tmp = root / "out", root / "tmp"
        tmp.mkdir()
        print(f"{args.slides} slides on {args.workers} workers ...", flush=True)
        run = soak(inputs, out, tmp, args.workers)
        run["temp_left"] = temp_left(out, tmp)
    figs = figures(run)
    geometry = {"slides_asked": args.slides, "size": list(SIZE), "longest": LONGEST,
                "tile": TILE, "stride": STRIDE, "workers": args.workers,
                "reference": REFERENCE, "rss_tolerance": RSS_TOLERANCE,
                "cache": str(CACHE)}  # fmt: skip
    write_report(run, figs, args.json, geometry)
    return 0 if figs["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
