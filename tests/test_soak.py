"""benchmarks/bench_soak.py's measuring helpers, and the leak the soak found (not the soak).

The soak itself (200 slides on a LocalCluster) is a benchmark: ``benchmarks/bench_soak.py``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO


@pytest.fixture
def soak(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    pytest.importorskip("distributed", reason="the soak needs the cohort extra")
    return importlib.import_module("bench_soak")


def test_the_sampler_counts_a_live_process_rss_fds_and_threads(soak: ModuleType,
                                                               tmp_path: Path) -> None:  # fmt: skip
    procs = importlib.import_module("_procs")
    before = procs.proc_sample(os.getpid())
    assert before is not None
    assert 10_000 < before["rss_kib"] < 64 * 2**20 and before["fds"] >= 3
    assert before["threads"] >= 1
    handles = [(tmp_path / f"f{i}").open("w") for i in range(20)]
    block = bytearray(64 * 2**20)  # 64 MiB, touched: resident
    block[::4096] = b"x" * len(block[::4096])
    try:
        during = procs.proc_sample(os.getpid())
        assert during is not None
        assert during["fds"] == before["fds"] + 20
        assert during["rss_kib"] - before["rss_kib"] > 60 * 1024
    finally:
        for h in handles:
            h.close()
        del block
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert procs.proc_sample(child.pid) is None  # gone


def _sample(t: float, rss: int, fds: int) -> dict[str, float]:
    return {"t": t, "rss_kib": rss, "fds": fds, "threads": 4}


def test_figures_take_each_process_at_slide_20_and_at_the_end(soak: ModuleType) -> None:
    client = [_sample(float(t), 1000, 50) for t in range(1, 31)]  # slide n finished at t = n
    steady = [_sample(t + 0.5, 500 + (t > 20) * 40, 20) for t in range(1, 30, 2)]
    leaky = [_sample(t + 0.5, 500 + t * 10, 20 + t) for t in range(2, 31, 2)]
    run = {"slides": 30, "ok": 30, "seconds": 60.0, "temp_left": [], "client": client,
           "workers": {"1": steady, "2": leaky}}  # fmt: skip
    figs = soak.figures(run)
    one, two = figs["processes"]["worker 1"], figs["processes"]["worker 2"]
    assert one["rss_mib_ref"] == pytest.approx(500 / 1024)  # its sample at t=19.5 (slide 20)
    assert one["rss_ratio"] == pytest.approx(540 / 500)
    assert two["rss_mib_ref"] == pytest.approx(680 / 1024) and two["fds_end"] == 50
    assert two["rss_ratio"] == pytest.approx(800 / 680)
    assert figs["slides_per_min"] == 30
    assert not figs["rss_ok"] and not figs["fds_ok"] and figs["temp_ok"]
    run["workers"] = {"1": steady}
    run["temp_left"] = ["/tmp/x/.ses"]
    figs = soak.figures(run)
    assert figs["rss_ok"] and figs["fds_ok"] and not figs["temp_ok"] and not figs["all_ok"]


def test_temp_left_finds_atomic_leftovers_and_anything_in_tmp(soak: ModuleType,
                                                              tmp_path: Path) -> None:  # fmt: skip
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    (out / "s1").mkdir(parents=True)
    (tmp / "dask-scratch-space").mkdir(parents=True)  # an empty folder is not a file
    (out / "s1" / "s1_mask.png").write_bytes(b"")
    assert soak.temp_left(out, tmp) == []
    (out / "s1" / ".s1_mask.png.abc123.tmp").write_bytes(b"")
    (tmp / "dask-scratch-space" / "global.lock").write_bytes(b"")  # Dask's own, kept
    assert [Path(p).name for p in soak.temp_left(out, tmp)] == [".s1_mask.png.abc123.tmp"]
    (tmp / ".ses").write_bytes(b"")
    assert [Path(p).name for p in soak.temp_left(out, tmp)] == [".s1_mask.png.abc123.tmp",
                                                                ".ses"]  # fmt: skip


def test_onnxruntime_leaves_no_file_in_the_temp_folder(tmp_path: Path) -> None:
    """ONNX Runtime's telemetry wrote $TMPDIR/.ses in every process (found by the soak)."""
    pytest.importorskip("onnxruntime")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(REPO / "src"))
    code = "from slidesift.inference import _ort; _ort().get_available_providers()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == []
