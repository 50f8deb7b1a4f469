"""Every speed figure in the README comes from a benchmark's JSON (``bench-results/``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import REPO


def _readme_table() -> object:
    spec = importlib.util.spec_from_file_location(
        "readme_table", REPO / "benchmarks" / "readme_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _speed_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("## Speed", 1)[1].split("\n## ", 1)[0]


def test_readme_speed_tables_are_printed_from_the_benchmark_json() -> None:
    module = _readme_table()
    table = module.render(REPO / "bench-results")  # type: ignore[attr-defined]
    by_cpu = module.render_by_cpu(REPO / "bench-results")  # type: ignore[attr-defined]
    assert table.startswith("| task |") and table.count("\n") >= 5
    assert by_cpu.count("\n") >= 5
    assert table in _speed_section() and by_cpu in _speed_section()
    # and nothing else in the section is a table row that the JSON did not produce
    rows = [line for line in _speed_section().splitlines() if line.startswith("|")]
    assert rows == table.splitlines() + by_cpu.splitlines()


def test_the_table_by_cpu_has_a_column_per_cpu_folder(tmp_path: Path) -> None:
    """A run on a new CPU adds a column; the same CPU again replaces its figures."""
    import shutil

    module = _readme_table()
    source = REPO / "bench-results" / "by-cpu"
    shutil.copytree(source, tmp_path / "by-cpu")
    before = module.render_by_cpu(tmp_path)  # type: ignore[attr-defined]
    first = sorted(p for p in (tmp_path / "by-cpu").iterdir() if p.is_dir())[0]
    doc = json.loads((first / "bench_segment.json").read_text())
    doc["machine"]["cpu_model"] = "Made-up CPU 9000"
    doc["measured"] = "2099-01-01T00:00:00+00:00"
    doc["backend_s"]["int8 full"] = 0.123
    (tmp_path / "by-cpu" / "made-up").mkdir()
    (tmp_path / "by-cpu" / "made-up" / "bench_segment.json").write_text(json.dumps(doc))
    after = module.render_by_cpu(tmp_path)  # type: ignore[attr-defined]
    header = after.splitlines()[0]
    assert header.count("|") == before.splitlines()[0].count("|") + 1
    assert header.rstrip(" |").endswith("Made-up CPU 9000, 2 cores, 2099-01-01")  # newest last
    assert "0.123 s" in after and "0.123 s" not in before
    assert after.splitlines()[-1].endswith("| not measured |")  # no bench_e2e.json there


def test_a_changed_figure_changes_the_table(tmp_path: Path) -> None:
    """The table is computed from the JSON, not copied: edit a figure and the row changes."""
    module = _readme_table()
    for p in (REPO / "bench-results").glob("*.json"):
        (tmp_path / p.name).write_text(p.read_text())
    before = module.render(tmp_path)  # type: ignore[attr-defined]
    doc = json.loads((tmp_path / "bench_sift.json").read_text())
    for row in doc["rows"]:
        if row[0] == "engine, 1 thread":
            row[doc["columns"].index("seconds")] = 12.5
    (tmp_path / "bench_sift.json").write_text(json.dumps(doc))
    after = module.render(tmp_path)  # type: ignore[attr-defined]
    assert before != after and "12.5 s" in after


def test_a_benchmark_report_is_also_kept_under_its_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("_common", None)
    import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(_common, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8480+")
    path = _common.report("bench_x", "t", ["a", "b"], [["row", 1.5]], {"k": 2})
    kept = tmp_path / "by-cpu" / "intel-xeon-platinum-8480" / "bench_x.json"
    assert path == tmp_path / "bench_x.json"
    assert kept.read_text() == path.read_text()
    assert json.loads(kept.read_text())["machine"]["cpu_model"].startswith("Intel(R) Xeon")


def test_make_bench_runs_every_benchmark() -> None:
    """``make bench`` is the one command that refreshes the speed figures: each ``bench_*.py``
    is in it (bench_gpu with ``--if-gpu``, which without a CUDA device says so and exits 0),
    but for bench_real_pixels, an accuracy study that trains a model per condition and needs the
    CAMELYON16 patches outside the repo (docs/results.md runs it)."""
    target = (REPO / "Makefile").read_text().split("\nbench:", 1)[1].split("\n\n", 1)[0]
    for script in sorted((REPO / "benchmarks").glob("bench_*.py")):
        if script.name != "bench_real_pixels.py":
            assert f"benchmarks/{script.name}" in target, script.name
    assert "benchmarks/bench_gpu.py --if-gpu" in target
