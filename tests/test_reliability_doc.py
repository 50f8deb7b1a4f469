"""docs/reliability.md holds exactly the tables its benchmarks' JSON files print."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from conftest import REPO


def _module(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _generated_part() -> str:
    module = _module("reliability_table")
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    return str(text.split(module.BEGIN, 1)[1].split(module.END, 1)[0].lstrip("\n"))


def test_the_page_holds_the_tables_printed_from_the_json() -> None:
    printed = _module("reliability_table").render(REPO / "bench-results")
    for title in ("per category", "per file kind", "Soak"):
        assert title in printed  # every benchmark's JSON is in the repository
    assert _generated_part() == printed


def test_a_changed_figure_changes_the_tables(tmp_path: Path) -> None:
    module = _module("reliability_table")
    for p in (REPO / "bench-results").glob("bench_*.json"):
        (tmp_path / p.name).write_text(p.read_text())
    before = module.render(tmp_path)
    doc = json.loads((tmp_path / "bench_fuzz.json").read_text())
    doc["rows"][0][doc["columns"].index("crash")] = 7
    (tmp_path / "bench_fuzz.json").write_text(json.dumps(doc))
    assert module.render(tmp_path) != before and "| 7 |" in module.render(tmp_path)


def test_every_category_names_test_files_that_exist() -> None:
    for _, files, _ in _module("bench_reliability").CATEGORIES:
        for name in files:
            assert (REPO / "tests" / name).exists(), name


def test_cases_are_counted_per_file_from_junit_xml(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_bombs" name="a" time="1.5"/>'
        '<testcase classname="tests.test_bombs" name="b[x]" time="0.5">'
        '<failure message="boom"/></testcase>'
        '<testcase classname="test_dicom" name="c" time="0.1"><skipped/></testcase>'
        '<testcase classname="tests.test_bombs.TestGroup" name="d" time="0"/>'
        "</testsuite></testsuites>"
    )
    counts = _module("bench_reliability").count_cases(xml)
    assert counts["test_bombs.py"] == {
        "cases": 3, "passed": 2, "failed": 1, "skipped": 0, "seconds": 2.0,
    }  # fmt: skip
    assert counts["test_dicom.py"]["skipped"] == 1 and counts["test_dicom.py"]["passed"] == 0
