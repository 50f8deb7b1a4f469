"""Print the tables of ``docs/reliability.md`` from the benchmarks' JSON files.

Every figure comes from a JSON file a benchmark wrote:

- ``bench_reliability.json`` (``benchmarks/bench_reliability.py``): the hostile-input and fault
  tests run, counted per category;
- ``bench_fuzz.json`` (``benchmarks/bench_fuzz.py``): fuzz outcomes per file kind;
- ``bench_soak.json`` (``benchmarks/bench_soak.py``): worker memory, file handles and temp files
  over a long cohort.

A benchmark without a JSON file has no table. Run:
``.venv/bin/python benchmarks/reliability_table.py [RESULTS_DIR] [--write docs/reliability.md]``;
``--write`` puts the tables between the page's markers (``tests/test_reliability_doc.py``
checks they are there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "render", "write_into"]

RESULTS = Path(os.environ.get("SLIDESIFT_BENCH_OUT", "bench-results"))


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine(data: dict[str, Any]) -> str:
    info = data["machine"]
    return (
        f"{info.get('cpu_model') or info.get('cpu')}, {info['cores']} cores, "
        f"{str(data.get('measured', ''))[:10]}"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def categories_table(data: dict[str, Any]) -> str:
    """Cases tried and passed per category (``bench_reliability.json``)."""
    what = {d["category"]: d["what"] for d in data["categories"]}
    cols = data["columns"]
    rows = []
    for raw in data["rows"]:
        r = dict(zip(cols, raw, strict=True))
        rows.append(
            [
                str(r["category"]),
                str(r["cases"]),
                str(r["passed"]),
                str(r["failed"]),
                str(r["skipped"]),
                what.get(r["category"], ""),
            ]
        )
    head = ["category", "tests run", "passed", "failed", "skipped", "what a test tries"]
    return f"{_table(head, rows)}\n\nMeasured on {_machine(data)}."


def fuzz_table(data: dict[str, Any]) -> str:
    """Outcomes per file kind (``bench_fuzz.json``)."""
    cols = data["columns"]
    rows = [[str(v) for v in raw] for raw in data["rows"]]
    return (
        f"{_table([str(c) for c in cols], rows)}\n\n"
        f"{sum(r[cols.index('cases')] for r in data['rows'] if r[0] != 'all')} cases, "
        f"seed {data.get('seed')}, measured on {_machine(data)}."
    )


def soak_table(data: dict[str, Any]) -> str:
    """Per-process memory, handles and threads over the soak (``bench_soak.json``)."""
    cols = data["columns"]
    rows = [[str(v) for v in raw] for raw in data["rows"]]
    left = len(data.get("temp_left", []))
    verdict = "all targets met" if data.get("all_ok") else "a target missed"
    return (
        f"{_table([str(c) for c in cols], rows)}\n\n"
        f"{data['ok']} of {data['slides']} slides ok on {data['workers']} workers, "
        f"{data['slides_per_min']:.0f} slides/min, {left} temp files left, {verdict}; "
        f"measured on {_machine(data)}."
    )


def render(folder: Path) -> str:
    """The generated part of ``docs/reliability.md``: one section per JSON file found."""
    parts = []
    for name, title, fn in (
        ("bench_reliability", "Tests run and passed, per category", categories_table),
        ("bench_fuzz", "Fuzzing, per file kind", fuzz_table),
        ("bench_soak", "Soak: a long cohort on a LocalCluster", soak_table),
    ):
        data = _load(folder, name)
        if data is not None:
            parts.append(f"### {title}\n\n{fn(data)}")
    return "\n\n".join(parts) + "\n"


BEGIN = "<!-- reliability-tables:begin (printed by benchmarks/reliability_table.py) -->"
END = "<!-- reliability-tables:end -->"


def write_into(page: Path, tables: str) -> None:
    """Replace what lies between the markers of ``page`` with ``tables``."""
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(f"{head}{BEGIN}\n{tables}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Print the tables; with ``--write PAGE`` also put them between the page's markers."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", type=Path, default=RESULTS)
    ap.add_argument("--write", type=Path, default=None, metavar="PAGE")
    args = ap.parse_args(argv)
    tables = render(args.results)
    print(tables, end="")
    if args.write is not None:
        write_into(args.write, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
