"""Run the hostile-input and fault tests and count the cases tried and passed, per category.

The tests themselves prove each case (a corrupt file ends in a clear error naming it, a bomb is
refused before it allocates, a killed run resumes bit-identical, a full disk leaves no partial
file, a hostile name renders as text, a DICOM reads as its frames). This script runs them all,
slow ones included, through pytest's JUnit XML and writes the counts to
``bench-results/bench_reliability.json``, which ``benchmarks/reliability_table.py`` turns into
the table of ``docs/reliability.md``.

Run: ``.venv/bin/python benchmarks/bench_reliability.py [--json PATH]``; exit 1 when a case
fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as ET

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, report

__all__ = ["CATEGORIES", "count_cases", "main"]

REPO = Path(__file__).resolve().parents[1]

#: (category, test files, what one case does), in the order of the table.
CATEGORIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "fuzz sample (seeded)",
        ("test_fuzz.py",),
        "a corrupted TIFF/SVS, XML, GeoJSON, CSV, checkpoint or rails file, read in a child "
        "process: a result or an error naming the file; no hang, no crash",
    ),
    (
        "resource bombs",
        ("test_bombs.py",),
        "a file claiming gigapixels or gigabytes: refused from its header, peak RSS under 2 GB",
    ),
    (
        "cohort faults",
        ("test_cohort_faults.py", "test_lock.py"),
        "a worker killed mid-slide, two runs in one folder, a slide changed in place",
    ),
    (
        "training killed",
        ("test_kill.py",),
        "kill -9 mid-epoch and inside each write, then --resume: bit-identical to a clean run",
    ),
    (
        "disk full",
        ("test_disk_full.py",),
        "ENOSPC at the k-th write of segment, evaluate, sift, rails, report, train, phantom: "
        "one clear error, no partial file, earlier files intact",
    ),
    (
        "hostile report",
        ("test_report_safety.py",),
        "HTML and script in names, paths, errors: shown as text, no script runs, the CSP holds",
    ),
    (
        "DICOM slides",
        ("test_dicom.py",),
        "DICOM WSI through wsidicom against its frames; damaged and foreign DICOM refused",
    ),
)


def count_cases(junit_xml: Path) -> dict[str, dict[str, Any]]:
    """Cases per test file from a JUnit XML report.

    Returns
    -------
    dict
        ``{file name: {"cases", "passed", "failed", "skipped", "seconds"}}``; a parametrised
        test counts once per parameter set.
    """
    out: dict[str, dict[str, Any]] = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        module = (case.get("classname") or "").split(".")
        name = next((f"{part}.py" for part in module if part.startswith("test_")), "?")
        row = out.setdefault(
            name, {"cases": 0, "passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0}
        )
        row["cases"] += 1
        row["seconds"] += float(case.get("time") or 0.0)
        if case.find("skipped") is not None:
            row["skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            row["failed"] += 1
        else:
            row["passed"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the categories' tests and write the counts; exit 1 when a case failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    files = [f for _, names, _ in CATEGORIES for f in names if (REPO / "tests" / f).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["-o", "addopts=", f"--junitxml={xml}", *(f"tests/{f}" for f in files)]
        subprocess.run(cmd, cwd=REPO, check=False)
        counts = count_cases(xml)
    rows: list[list[Any]] = []
    details = []
    for category, names, what in CATEGORIES:
        got = [counts[n] for n in names if n in counts]
        tot = {k: sum(g[k] for g in got) for k in ("cases", "passed", "failed", "skipped")}
        seconds = round(sum(g["seconds"] for g in got), 1)
        rows.append([category, tot["cases"], tot["passed"], tot["failed"], tot["skipped"], seconds])
        details.append({"category": category, "files": list(names), "what": what})
    columns = ["category", "cases", "passed", "failed", "skipped", "seconds"]
    path = report(
        "bench_reliability", "hostile input and faults", columns, rows, {"categories": details}
    )
    if args.json is not None:
        args.json.write_text(path.read_text())
    print(f"results in {RESULTS}")
    return 1 if any(r[3] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
