"""Shared helpers for the benchmarks: timing, tables, JSON, machine description."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(os.environ.get("SLIDESIFT_BENCH_OUT", "bench-results"))


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Smallest wall time of ``repeat`` calls (seconds) and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def median_of(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeat`` calls (seconds) and every call's time, in order."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def cpu_model() -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (else what :mod:`platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float | None:
    """Total memory in GiB from ``/proc/meminfo``, or ``None`` where there is none."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU model and core count, e.g. ``AMD EPYC, 2 cores``."""
    info = info if info is not None else machine()
    return f"{info['cpu_model']}, {info['cores']} cores"


def cpu_slug(model: str) -> str:
    """A folder name for a CPU model: ``Intel(R) Xeon(R) Processor`` -> ``intel-xeon-processor``."""
    words = re.sub(r"\((r|tm)\)", " ", model.lower())
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "unknown-cpu"


def report(
    name: str, title: str, columns: list[str], rows: list[list[Any]], extra: dict[str, Any]
) -> Path:
    """Print a table and write ``bench-results/<name>.json``; returns the JSON path.

    The table's caption and the JSON's ``machine`` entry name the CPU model and core count;
    ``measured`` is the UTC time of writing. The same JSON also goes to
    ``bench-results/by-cpu/<cpu slug>/<name>.json``, the latest figures of each CPU this
    benchmark has run on: the VM's CPU changes between machines, and the fastest backend with
    it (the README's table by CPU comes from there).
    """
    info = machine()
    table = Table(title=title, caption=f"measured on {machine_line(info)}")
    for col in columns:
        table.add_column(col, justify="left" if col == columns[0] else "right")
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    Console(width=max(120, Console().width)).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    measured = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    payload = {
        "machine": info,
        "measured": measured,
        "columns": columns,
        "rows": rows,
        **extra,
    }
    text = json.dumps(payload, indent=2) + "\n"
    path.write_text(text)
    by_cpu = RESULTS / "by-cpu" / cpu_slug(info["cpu_model"]) / f"{name}.json"
    by_cpu.parent.mkdir(parents=True, exist_ok=True)
    by_cpu.write_text(text)
    print(f"wrote {path} and {by_cpu}")
    return path
