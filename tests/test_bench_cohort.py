"""benchmarks/bench_cohort.py runs end to end on two tiny slides (nothing is timed here)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """The benchmark module, its JSON written under ``tmp_path/results``."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    common = importlib.import_module("_common")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    return importlib.import_module("bench_cohort")


@pytest.mark.slow  # about 6 s: a Python process, ONNX export, two slides
@pytest.mark.learn
def test_the_in_process_way_runs_in_a_child_and_the_json_has_its_figures(
    bench: ModuleType, tmp_path: Path
) -> None:
    inputs = bench.make_inputs(tmp_path / "cache", count=2, size=(700, 800), longest=640,
                               tile=96, stride=32)  # fmt: skip
    assert bench.make_inputs(tmp_path / "cache", count=2, size=(700, 800), longest=640,
                             tile=96, stride=32) == inputs  # made once, then reused  # fmt: skip
    way = bench.WAYS[0]
    r = bench.measure(inputs, tmp_path / "out", tmp_path / "way.log", scheduler="sync",
                      workers=None, threads=None)  # fmt: skip
    r.update(processes=1, threads=os.cpu_count())
    assert (r["slides"], r["ok"], r["failed"]) == (2, 2, [])
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == [
        "paip_000", "paip_001"]  # fmt: skip
    [pid] = r["workers"]  # the child ran both slides itself
    assert pid != os.getpid() and r["worker_peak_rss_mib"][str(pid)] > 50
    path = bench.write_report({way: r}, inputs, {"count": 2}, "bench_cohort")
    assert path == tmp_path / "results" / "bench_cohort.json"
    doc = json.loads(path.read_text())
    assert doc["columns"][:6] == ["way", "processes", "threads/task", "seconds", "slides/min",
                                  "speed-up"]  # fmt: skip
    [row] = doc["rows"]
    assert row[0] == way and row[5] == 1.0 and row[-1] == "2/2"
    got = doc["ways"][way]
    assert got["slides_per_min"] == pytest.approx(120 / got["seconds"])
    assert got["max_worker_peak_rss_mib"] == r["worker_peak_rss_mib"][str(pid)]
    assert doc["rss_target_mib"] == 1536 and isinstance(doc["rss_within_target"], bool)
    assert {"machine", "measured", "count"} <= set(doc)


def test_a_way_with_a_failed_slide_is_an_error(bench: ModuleType) -> None:
    r = {"slides": 2, "ok": 1, "failed": ["x: failed SlideError bad"], "seconds": 1.0}
    with pytest.raises(RuntimeError, match="1/2 slides ok"):
        bench.table({bench.WAYS[0]: r})
