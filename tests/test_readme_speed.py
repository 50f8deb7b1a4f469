"""Every speed figure in the README comes from a benchmark's JSON (``bench-results/``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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


def test_readme_speed_table_is_printed_from_the_benchmark_json() -> None:
    table = _readme_table().render(REPO / "bench-results")  # type: ignore[attr-defined]
    assert table.startswith("| task |") and table.count("\n") >= 5
    assert table in _speed_section()
    # and nothing else in the section is a table row that the JSON did not produce
    rows = [line for line in _speed_section().splitlines() if line.startswith("|")]
    assert rows == table.splitlines()


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
