"""Fuzz every reader: 2,000+ seeded corruptions of slides, annotations, manifests, checkpoints
and rails, each read by slidesift's own reader in a child process under a 20 s limit.

Every case must end ``ok`` (a valid result) or ``error`` (a ``SlidesiftError`` whose message
names the file); ``bad-error`` (another exception, or a message without the file's name),
``hang`` (past 20 s) and ``crash`` (the process died) are defects. The table gives the outcomes
per kind; the JSON adds them per corruption and the detail of every defect.
Seeds and corruptions: ``benchmarks/_fuzz.py`` and ``_fuzz_mutate.py``.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_fuzz.py [--cases N] [--seed S]
[--slides REAL.svs ...]``; exits 1 when a defect is found.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from _common import report
from _fuzz import KINDS, OUTCOMES, Result, make_cases, make_seeds, run_cases, table


def _by_op(results: list[Result]) -> dict[str, dict[str, int]]:
    """``{"kind/op": {outcome: count}}``."""
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        out[f"{r.case.kind}/{r.case.op}"][r.outcome] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=2000, help="cases over all kinds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    parser.add_argument("--workers", type=int, default=2, help="child processes reading cases")
    parser.add_argument("--slides", type=Path, nargs="*", default=[],
                        help="real slides to add to the TIFF seeds")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slidesift-fuzz-") as tmp:
        folder = Path(tmp)
        seeds = make_seeds(folder, args.slides)
        cases = make_cases(seeds, args.cases, args.seed)
        done = [0]

        def progress(r: Result) -> None:
            done[0] += 1
            if r.outcome not in ("ok", "error"):
                print(f"  case {r.case.index} {r.case.kind}/{r.case.op}: {r.outcome}: "
                      f"{r.detail[:160]}", flush=True)  # fmt: skip
            if done[0] % 250 == 0:
                print(f"  {done[0]} / {len(cases)} cases", flush=True)

        results = run_cases(cases, folder, workers=args.workers, on_result=progress)
    seconds = time.perf_counter() - start
    rows = table(results)
    defects = [
        {
            "case": r.case.index,
            "kind": r.case.kind,
            "seed_file": Path(r.case.seed).name,
            "op": r.case.op,
            "outcome": r.outcome,
            "detail": r.detail,
        }
        for r in results
        if r.outcome not in ("ok", "error")
    ]
    report(
        "bench_fuzz",
        f"fuzzed readers: {len(results)} cases, seed {args.seed}, {seconds:.0f} s",
        ["kind", "cases", *OUTCOMES, "slowest s"],
        rows,
        {
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "kinds": list(KINDS),
            "seeds": {k: [p.name for p in v] for k, v in seeds.items()},
            "by_corruption": _by_op(results),
            "defects": defects,
        },
    )
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
