"""A 40-slide phantom cohort through ``evaluate`` four ways: slides/min, speed-up, worker RSS.

The same slides, model and options go through :func:`slidesift.cohort.run_cohort` (what
``slidesift evaluate`` calls):
  1. in process, one slide after another, without Dask (``scheduler="sync"``,
     ``pipeline=False``); each task uses every core (``threads=None``);
  1b. in process as a pipeline (``pipeline=True``, what ``--workers 0`` runs): the next slide
     read and the last one written on threads while this one is classified;
  2. on the local cluster ``run_cohort`` starts itself (``scheduler=None, workers=2``: a
     :class:`distributed.LocalCluster` of 2 one-thread worker processes, each task capped at
     ``cores // 2`` threads); its start and shutdown are inside the timing, as for a user;
  3. on a cluster started beforehand as separate processes on localhost, as on real machines:
     ``dask scheduler --host 127.0.0.1 --port 0`` and two ``dask worker ADDRESS --nworkers 1
     --nthreads 1`` (each with its nanny), passed as ``scheduler="tcp://127.0.0.1:PORT"``, each
     task capped at ``cores // 2`` threads as in 2 (``run_cohort``'s default for an outside
     cluster would be every core per task). The cluster's start (until both workers have
     registered) is reported apart and not in the timing; it is stopped afterwards (SIGTERM to
     the workers, then the scheduler; SIGKILL after 30 s), also on an error or Ctrl-C.
Every way runs in a fresh Python process of its own (so each pays its own imports, model load
and ONNX Runtime sessions, and the in-process way's RSS is its own), writes into its own new
output folder (nothing is resumed), and must bring every slide back ``ok``. The timing is the
wall time of the ``run_cohort`` call; slides/min = slides / that time; speed-up = the in-process
way's time / the way's time, from the same run.

Peak RSS per worker is ``VmHWM`` (the kernel's high-water mark of resident memory) of each
process that ran slides (the ``worker`` pid in each slide's row: the child process itself in
way 1, the Dask worker processes in 2 and 3), read from ``/proc`` every 0.2 s while the way
runs; the target is 1.5 GiB. The machine's other load is measured too: CPU time that processes
outside this benchmark's process tree used during each way (``/proc/stat`` minus this tree's
``/proc/<pid>/stat``), in cores, with the 1-minute load average at the start.

Inputs, made once and kept in ``$SLIDESIFT_BENCH_CACHE`` (default ``~/.cache/slidesift-bench``):
a PAIP-like phantom cohort (40 slides, level-0 longer side 2400-3000 px, one subtype) and a
binary model with random weights (speed does not depend on them) at N = 2400, T = 160 (the
paper's T / N of 1/15), segmented at stride 32 (80% overlap, the dense ONNX path), rails wide
open so every tissue tile is classified. Before the timed ways, one slide is segmented here
with each thread count the ways use, to export the ONNX graphs, compile the numba kernels and
have the backend probe answer for those thread counts (all cached on disk, as on any run
after a machine's first).

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_cohort.py [--count 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from _common import report
from _procs import TreeSampler, log_tail, stop, tcp_cluster

CACHE = Path(os.environ.get("SLIDESIFT_BENCH_CACHE", Path.home() / ".cache" / "slidesift-bench"))
#: Slides in the cohort.
COUNT = 40
#: Level-0 longer side of the slides, px (each slide draws its own in this range).
SIZE = (2400, 3000)
#: The model's thumbnail longer side N and tile T; the stride (80% overlap, dense path).
LONGEST, TILE, STRIDE = 2400, 160, 32
#: Worker processes of the two Dask ways.
WORKERS = 2
#: Seed of the phantom cohort.
SEED = 15
#: The issue's bound on each worker's peak resident memory.
RSS_TARGET_MIB = 1536
#: The ways, in the order they run; the first is the speed-up's reference.
WAYS = (
    "in process (sync)",
    "in process, pipelined",
    "LocalCluster",
    "dask scheduler + workers (tcp)",
)
#: The child prints its result on one line after this marker.
MARKER = "BENCH_COHORT_RESULT "


@dataclass(frozen=True)
class Inputs:
    """What every way segments: a cohort's manifest, a checkpoint and the stride.

    Attributes
    ----------
    manifest
        The cohort's ``manifest.csv`` (every row is segmented, whatever its split).
    checkpoint
        The model (ONNX graphs are exported beside it).
    stride
        Segmentation stride in thumbnail px.
    """

    manifest: Path
    checkpoint: Path
    stride: int


# ---------------------------------------------------------------- inputs, made once


def make_checkpoint(folder: Path, longest: int, tile: int) -> Path:
    """A binary checkpoint with random weights and wide-open rails, made once in ``folder``.

    Parameters
    ----------
    folder
        Where the checkpoint (and later its ONNX graphs) live.
    longest, tile
        The model's thumbnail longer side N and its tile T.

    Returns
    -------
    Path
        The checkpoint file.
    """
    path = folder / "random.safetensors"
    if path.exists():
        return path
    import torch

    from slidesift.checkpoint import save_checkpoint
    from slidesift.model import LightweightCNN
    from slidesift.rails import Rails
    from slidesift.sift import SiftSpec

    torch.manual_seed(0)
    net = LightweightCNN(tile, 2).eval()
    meta = {
        "tile": tile, "longest": longest, "mpp": None, "classes": ["non-tumor", "tumor"],
        "rails": Rails(0.0, 8.0, tile=tile).to_dict(), "sift": SiftSpec().to_dict(),
        "epoch": 1, "normalization": None, "overlaps": {},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, net.state_dict(), meta)


def make_inputs(
    cache: Path,
    *,
    count: int = COUNT,
    size: tuple[int, int] = SIZE,
    longest: int = LONGEST,
    tile: int = TILE,
    stride: int = STRIDE,
) -> Inputs:
    """The phantom cohort and the random model, made once under ``cache`` and reused.

    A cohort folder is named by its spec (``make_cohort`` resumes an interrupted one); the
    checkpoint's folder by N and T.

    Parameters
    ----------
    cache
        The cache folder.
    count, size
        Slides and their level-0 longer side range.
    longest, tile, stride
        The model's N and T, and the segmentation stride.

    Returns
    -------
    Inputs
    """
    from slidesift.phantom.cohort import CohortSpec, make_cohort

    spec = CohortSpec(count=count, longest=size, subtypes=1, seed=SEED)
    folder = cache / f"cohort-{count}x{size[0]}-{size[1]}-seed{SEED}"
    if not (folder / "manifest.csv").exists():
        print(f"making the phantom cohort in {folder} (once)", flush=True)
    make_cohort(spec, folder, workers=os.cpu_count())  # keeps the slides already there
    checkpoint = make_checkpoint(cache / f"random-n{longest}-t{tile}", longest, tile)
    return Inputs(folder / "manifest.csv", checkpoint, stride)


def warm_caches(inputs: Inputs, scratch: Path, workers: int = WORKERS) -> None:
    """Segment one slide here with every thread count a way uses (all cores, and
    ``cores // workers`` per Dask task): exports the ONNX graphs, compiles the numba kernels
    and has the backend probe answer for each thread count (it is keyed by them), all cached
    on disk as on any run after a machine's first. Without it the Dask ways' first slides
    waited about a minute for the probe (AMD EPYC, 2 cores)."""
    from slidesift.cohort import run_cohort
    from slidesift.manifest import read_manifest
    from slidesift.segment import SegmentSpec

    entries = list(read_manifest(inputs.manifest))[:1]
    cores = os.cpu_count() or 1
    for k, threads in enumerate(sorted({cores, max(1, cores // workers)})):
        result = run_cohort(inputs.checkpoint, entries, SegmentSpec(stride=inputs.stride),
                            out=scratch / str(k), scheduler="sync", threads=threads)  # fmt: skip
        if result.failures:
            raise RuntimeError(f"the warm-up slide failed: {result.failures[0].error}")


# ---------------------------------------------------------------- one way, in this process


def run_way(
    inputs: Inputs,
    out: Path,
    *,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    pipeline: bool = False,
) -> dict[str, Any]:
    """Segment every slide of the cohort with :func:`run_cohort`; time the call.

    Parameters
    ----------
    inputs
        Cohort, model and stride.
    out
        The output folder (should be new: slides finished there are resumed).
    scheduler, workers, threads, pipeline
        As :func:`slidesift.cohort.run_cohort` takes them.

    Returns
    -------
    dict
        ``seconds`` (the call's wall time), ``slides``, ``ok``, ``failed`` (one line per slide
        not ``ok``), ``workers`` (the pids that ran slides), ``task_s`` (each slide's task
        seconds) and ``stage_s`` (per stage, summed over the slides).
    """
    from slidesift.cohort import run_cohort
    from slidesift.manifest import read_manifest
    from slidesift.segment import SegmentSpec

    entries = list(read_manifest(inputs.manifest))
    spec = SegmentSpec(stride=inputs.stride)
    start = time.perf_counter()
    result = run_cohort(inputs.checkpoint, entries, spec, out=out, scheduler=scheduler,
                        workers=workers, threads=threads, pipeline=pipeline)  # fmt: skip
    seconds = time.perf_counter() - start
    stages: dict[str, float] = {}
    for outcome in result.outcomes:
        for stage, s in outcome.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + s
    return {
        "seconds": seconds,
        "slides": len(result.rows),
        "ok": sum(r.status == "ok" for r in result.rows),
        "failed": [f"{r.name}: {r.status} {r.error_type} {r.error}".strip()
                   for r in result.rows if r.status != "ok"],
        "workers": sorted({int(r.worker.rsplit(":", 1)[1]) for r in result.rows if r.worker}),
        "task_s": [r.seconds for r in result.rows],
        "stage_s": stages,
    }  # fmt: skip


# ---------------------------------------------------------------- child processes


def child_env() -> dict[str, str]:
    """This environment, with slidesift's and the benchmarks' folders first on the path.

    Children and Dask workers then import the same slidesift as this process (a work tree's
    ``src`` rather than an editable install elsewhere).
    """
    import slidesift

    here = [str(Path(slidesift.__file__).resolve().parents[1]), str(Path(__file__).parent)]
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(here + ([old] if old else []))}


def measure(
    inputs: Inputs,
    out: Path,
    log: Path,
    *,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    pipeline: bool = False,
) -> dict[str, Any]:
    """:func:`run_way` in a fresh Python process, its tree sampled; the way's figures.

    Parameters
    ----------
    inputs
        Cohort, model and stride.
    out
        The way's new output folder.
    log
        Where the child's stderr goes (Dask's logging).
    scheduler, workers, threads, pipeline
        As :func:`run_way` takes them.

    Returns
    -------
    dict
        :func:`run_way`'s figures, and ``worker_peak_rss_mib`` (pid -> MiB, the processes that
        ran slides), ``client_peak_rss_mib`` (the child, when it ran no slide itself),
        ``others_cores`` and ``load_1min`` (the machine's other load).

    Raises
    ------
    RuntimeError
        The child failed or gave no result.
    """
    args = {"manifest": str(inputs.manifest), "checkpoint": str(inputs.checkpoint),
            "stride": inputs.stride, "out": str(out), "scheduler": scheduler,
            "workers": workers, "threads": threads, "pipeline": pipeline}  # fmt: skip
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(args)]
    with log.open("wb") as err, TreeSampler() as sampler:
        proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)  # fmt: skip
        try:
            stdout, _ = proc.communicate()
        finally:
            stop(proc)
    lines = [ln for ln in stdout.decode().splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the way failed (exit {proc.returncode}):\n{log_tail(log)}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    peaks = {pid: kib / 1024 for pid, kib in sampler.peak_kib.items()}
    result["worker_peak_rss_mib"] = {str(p): peaks.get(p) for p in result["workers"]}
    if proc.pid not in result["workers"]:
        result["client_peak_rss_mib"] = peaks.get(proc.pid)
    result["others_cores"] = sampler.others_cores
    result["load_1min"] = sampler.load_1min
    return result


def child(doc: str) -> None:
    """The child's side of :func:`measure`: run the way, print the result after MARKER."""

    # SIGTERM (from stop()) unwinds, so a local cluster is closed rather than orphaned
    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    a = json.loads(doc)
    inputs = Inputs(Path(a["manifest"]), Path(a["checkpoint"]), int(a["stride"]))
    result = run_way(inputs, Path(a["out"]), scheduler=a["scheduler"], workers=a["workers"],
                     threads=a["threads"], pipeline=bool(a.get("pipeline")))  # fmt: skip
    print(MARKER + json.dumps(result), flush=True)


# ---------------------------------------------------------------- all three, and the table


def run_all(inputs: Inputs, root: Path, workers: int = WORKERS) -> dict[str, dict[str, Any]]:
    """The four ways, in :data:`WAYS` order, each into its own new folder under ``root``.

    Parameters
    ----------
    inputs
        Cohort, model and stride.
    root
        A scratch folder (outputs, logs, the tcp cluster's files).
    workers
        Worker processes of the two Dask ways.

    Returns
    -------
    dict
        Way name -> :func:`measure`'s figures, with ``processes`` and ``threads`` (per task);
        the tcp way also has ``cluster_start_s``.
    """
    cores = os.cpu_count() or 1
    per_task = max(1, cores // workers)
    results: dict[str, dict[str, Any]] = {}
    sync, piped, local, _ = WAYS
    for way in WAYS:
        print(f"{way} ...", flush=True)
        out, log = root / f"out-{WAYS.index(way)}", root / f"way{WAYS.index(way)}.log"
        if way == sync:
            r = measure(inputs, out, log, scheduler="sync", workers=None, threads=None)
            r.update(processes=1, threads=cores)
        elif way == piped:
            r = measure(inputs, out, log, scheduler="sync", workers=None, threads=None,
                        pipeline=True)  # fmt: skip
            r.update(processes=1, threads=cores)
        elif way == local:
            r = measure(inputs, out, log, scheduler=None, workers=workers, threads=None)
            r.update(processes=workers, threads=per_task)
        else:
            with tcp_cluster(workers, root / "tcp", child_env()) as (address, start_s):
                r = measure(inputs, out, log, scheduler=address, workers=None, threads=per_task)
            r.update(processes=workers, threads=per_task, cluster_start_s=start_s)
        results[way] = r
        print(f"  {r['seconds']:.1f} s, {r['ok']}/{r['slides']} ok", flush=True)
    return results


def table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The report's columns and rows; adds ``slides_per_min`` and ``speedup`` to each way.

    Raises
    ------
    RuntimeError
        A way did not bring every slide back ``ok``.
    """
    columns = ["way", "processes", "threads/task", "seconds", "slides/min", "speed-up",
               "peak RSS/worker MiB", "other load (cores)", "ok"]  # fmt: skip
    reference = results[WAYS[0]]["seconds"]
    rows = []
    for way, r in results.items():
        if r["ok"] != r["slides"]:
            raise RuntimeError(f"{way}: {r['ok']}/{r['slides']} slides ok: {r['failed'][:3]}")
        r["slides_per_min"] = 60 * r["slides"] / r["seconds"]
        r["speedup"] = reference / r["seconds"]
        r["median_task_s"] = statistics.median(r["task_s"])
        rss = [v for v in r["worker_peak_rss_mib"].values() if v is not None]
        r["max_worker_peak_rss_mib"] = max(rss) if rss else None
        rows.append([way, r["processes"], r["threads"], round(r["seconds"], 2),
                     round(r["slides_per_min"], 1), round(r["speedup"], 2),
                     " / ".join(f"{v:.0f}" for v in rss) or "?",
                     round(r["others_cores"], 2), f"{r['ok']}/{r['slides']}"])  # fmt: skip
    return columns, rows


def write_report(
    results: dict[str, dict[str, Any]], inputs: Inputs, geometry: dict[str, Any], name: str
) -> Path:
    """Print the table and write ``bench-results/<name>.json`` (see :func:`_common.report`)."""
    columns, rows = table(results)
    peaks = [r["max_worker_peak_rss_mib"] for r in results.values()]
    known = [p for p in peaks if p is not None]
    slides = results[WAYS[0]]["slides"]
    start = next((r["cluster_start_s"] for r in results.values() if "cluster_start_s" in r), 0)
    return report(
        name,
        f"{slides} phantom slides through run_cohort (evaluate): wall time of the call (the tcp "
        f"cluster's start, {start:.1f} s, not in it), speed-up vs in process, peak RSS (VmHWM) "
        f"of each process that ran slides (target {RSS_TARGET_MIB} MiB), CPU cores busy with "
        "other processes meanwhile",
        columns,
        rows,
        {
            **geometry,
            "slides": slides,
            "manifest": str(inputs.manifest),
            "rss_target_mib": RSS_TARGET_MIB,
            "max_worker_peak_rss_mib": max(known) if known else None,
            "rss_within_target": bool(known) and max(known) <= RSS_TARGET_MIB,
            "ways": results,
        },
    )


def _size(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write ``bench-results/bench_cohort.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=COUNT, help="slides [%(default)s]")
    parser.add_argument("--size", type=_size, default=SIZE,
                        help="level-0 longer side, MIN-MAX px [2400-3000]")  # fmt: skip
    parser.add_argument("--longest", type=int, default=LONGEST, help="N [%(default)s]")
    parser.add_argument("--tile", type=int, default=TILE, help="T [%(default)s]")
    parser.add_argument("--stride", type=int, default=STRIDE, help="stride [%(default)s]")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="worker processes of the Dask ways [%(default)s]")  # fmt: skip
    parser.add_argument("--name", default="bench_cohort", help="JSON name [%(default)s]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds: the clusters and children are stopped

    signal.signal(signal.SIGTERM, _exit)
    inputs = make_inputs(CACHE, count=args.count, size=args.size, longest=args.longest,
                         tile=args.tile, stride=args.stride)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        root = Path(tmp)
        warm_caches(inputs, root / "warm", args.workers)
        results = run_all(inputs, root, args.workers)
    geometry = {"count": args.count, "size": list(args.size), "longest": args.longest,
                "tile": args.tile, "stride": args.stride, "workers": args.workers,
                "cache": str(CACHE)}  # fmt: skip
    write_report(results, inputs, geometry, args.name)


if __name__ == "__main__":
    main()
