"""Processes for the benchmarks: sample a process tree from ``/proc``, stop one, start Dask.

- :class:`TreeSampler`: the peak resident memory (``VmHWM``) of every descendant of this
  process, and the CPU time that processes outside the tree used meanwhile (the machine's
  other load), read from ``/proc`` every :data:`SAMPLE_S` seconds (Linux).
- :func:`stop`: SIGTERM a process, SIGKILL it and what it started after a grace period.
- :func:`tcp_cluster`: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, stopped
  afterwards even on an error or an interrupt.
- :func:`proc_sample`: a process's resident memory, open file descriptors and threads now.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "SAMPLE_S",
    "STOP_S",
    "TreeSampler",
    "descendants",
    "log_tail",
    "proc_sample",
    "stop",
    "tcp_cluster",
]

#: How often the process tree is sampled, seconds.
SAMPLE_S = 0.2
#: Seconds a stopped process gets to exit before it is killed.
STOP_S = 30.0


def _stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` from its third field (the state) on; ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # after the name, which may hold spaces


def _proc_stat(pid: int | str) -> tuple[int, float] | None:
    """``(parent pid, user + system CPU seconds)`` of a process, or ``None`` when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks after boot): tells a reused pid apart."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def _vm_hwm_kib(pid: int) -> int | None:
    """The process's peak resident memory (``VmHWM``, KiB), or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def proc_sample(pid: int) -> dict[str, int] | None:
    """A process's resident memory now, its open file descriptors and threads (Linux ``/proc``).

    Returns
    -------
    dict or None
        ``rss_kib`` (``VmRSS``), ``fds`` (entries of ``/proc/<pid>/fd``) and ``threads``;
        ``None`` when the process is gone (or not readable).
    """
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "Threads"):
                    found[key] = int(value.split()[0])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        return None
    if len(found) != 2:
        return None
    return {"rss_kib": found["VmRSS"], "fds": fds, "threads": found["Threads"]}


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat", encoding="utf-8") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0  # another VM's time, not this machine's work
    return (sum(values[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> dict[int, float]:
    """Every descendant of ``root`` and its CPU seconds so far (one pass over ``/proc``)."""
    info: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(entry)
            if stat is not None:
                info[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, float] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = info[pid][1]
        todo.extend(children.get(pid, []))
    return out


class TreeSampler:
    """Peak RSS of this process's descendants and the machine's other load, while active.

    Every :data:`SAMPLE_S` seconds a thread reads each descendant's ``VmHWM`` and CPU time
    from ``/proc``. ``others_cores`` is the CPU time that processes outside this tree used
    while active, in cores: the machine's busy time minus this tree's.
    """

    def __init__(self) -> None:
        self.peak_kib: dict[int, int] = {}
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.seconds = 0.0
        self.others_cores = 0.0
        self.load_1min = 0.0

    def _sample(self, fresh: bool = False) -> None:
        for pid, cpu in descendants(os.getpid()).items():
            if pid not in self._cpu_first:  # a process born while sampling starts from 0
                self._cpu_first[pid] = cpu if fresh else 0.0
            self._cpu_last[pid] = cpu
            hwm = _vm_hwm_kib(pid)
            if hwm is not None:
                self.peak_kib[pid] = max(hwm, self.peak_kib.get(pid, 0))

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _own_cpu_s(self) -> float:
        times = os.times()
        return times.user + times.system

    def __enter__(self) -> TreeSampler:
        self.load_1min = os.getloadavg()[0]
        self._sample(fresh=True)
        self._t0 = time.perf_counter()
        self._busy0 = _busy_cpu_s()
        self._own0 = self._own_cpu_s()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.perf_counter() - self._t0
        tree = sum(self._cpu_last[p] - self._cpu_first[p] for p in self._cpu_last)
        tree += self._own_cpu_s() - self._own0
        others = _busy_cpu_s() - self._busy0 - tree
        self.others_cores = max(0.0, others) / max(self.seconds, 1e-9)


# ---------------------------------------------------------------- stopping; a Dask cluster


def stop(proc: subprocess.Popen[Any], wait_s: float = STOP_S) -> None:
    """SIGTERM ``proc`` and whatever it started; SIGKILL what is left after ``wait_s``."""
    if proc.poll() is not None:
        return
    tree = {pid: _started(pid) for pid in descendants(proc.pid)}
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid, started in tree.items():  # a grandchild its parent left behind (same start time)
        if started is not None and _started(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _dask_command(*args: str) -> list[str]:
    """The ``dask`` command beside this Python (else on the path)."""
    exe = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if exe is None:
        raise RuntimeError("the dask command is missing: pip install 'slidesift[cohort]'")
    return [exe, *args]


@contextlib.contextmanager
def tcp_cluster(workers: int, folder: Path, env: dict[str, str]) -> Iterator[tuple[str, float]]:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1.

    Parameters
    ----------
    workers
        Worker commands to start, one worker process (and its nanny) of one thread each.
    folder
        For the scheduler file, the logs and the workers' local directories.
    env
        The processes' environment.

    Yields
    ------
    tuple
        The scheduler's address and the seconds until every worker had registered.
        Afterwards (also on an error or an interrupt) the workers and then the scheduler are
        stopped.
    """
    distributed: Any = importlib.import_module("distributed")  # untyped: Any, as in cohort.py
    folder.mkdir(parents=True, exist_ok=True)
    sched_file = folder / "scheduler.json"
    procs: list[subprocess.Popen[Any]] = []
    logs = []

    def start(name: str, cmd: list[str]) -> None:
        log = folder / f"{name}.log"
        logs.append(log)
        with log.open("wb") as fh:  # the child keeps its own descriptor
            procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                          start_new_session=True))  # fmt: skip

    t0 = time.perf_counter()
    try:
        start("scheduler", _dask_command(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(sched_file)))  # fmt: skip
        address = None
        while address is None:
            if procs[0].poll() is not None or time.perf_counter() - t0 > 60:
                raise RuntimeError(f"the dask scheduler did not start:\n{log_tail(logs[0])}")
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError, KeyError):  # not (fully) written yet
                address = str(json.loads(sched_file.read_text())["address"])
        for i in range(workers):
            start(f"worker{i}", _dask_command(
                "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                "--name", f"bench-{i}", "--local-directory", str(folder / f"worker{i}"),
            ))  # fmt: skip
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address, time.perf_counter() - t0
    except Exception:  # what the processes said (not on an interrupt)
        for log in logs:
            print(f"--- {log.name}\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):  # workers first, the scheduler last
            stop(proc)
