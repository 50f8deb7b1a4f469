"""``slidesift segment CKPT SLIDE`` as a user runs it: wall time from process start to exit.

The slide is a 6000-px-thumbnail phantom (T 400, stride 80, the defaults), the checkpoint a
T=400 model with random weights and wide-open rails (every tissue tile is classified, the
worst case); both are written once into a cache folder. One warm-up run exports the ONNX
graphs (cached for later runs, as for a user's second slide); then each run is a fresh
process, timed from before ``exec`` to exit (median of 5), against the same process doing
nothing but start Python (``python -c pass``) and import the CLI (``slidesift --version``),
so the table shows where the time goes. A last run reports whether torch was imported and
which classifier ``--inference auto`` picked (the ``inference`` column of ``scores.csv``): on
a CPU the probe's choice, int8 where it passed its accuracy gates on this machine.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_e2e.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report

CACHE = Path(os.environ.get("SLIDESIFT_BENCH_CACHE", Path.home() / ".cache" / "slidesift-bench"))
RUNS = 5
N, T = 6000, 400
BIN = Path(sys.executable).parent


def _inputs() -> tuple[Path, Path]:
    """The cached phantom slide and random T=400 checkpoint (made on first use)."""
    folder = CACHE / "e2e"
    ckpt = folder / "random_t400.safetensors"
    slide_dir = folder / "cohort" / "slides"
    slides = sorted(slide_dir.glob("*")) if slide_dir.is_dir() else []
    if ckpt.is_file() and slides:
        return slides[0], ckpt
    import torch

    from slidesift.checkpoint import save_checkpoint
    from slidesift.model import LightweightCNN
    from slidesift.phantom.cohort import CohortSpec, make_cohort
    from slidesift.rails import Rails
    from slidesift.sift import SiftSpec

    folder.mkdir(parents=True, exist_ok=True)
    make_cohort(CohortSpec(count=1, longest=(N, N), seed=4), folder / "cohort", overwrite=True)
    torch.manual_seed(0)
    meta = {
        "tile": T, "longest": N, "mpp": None, "classes": ["non-tumor", "tumor"],
        "rails": Rails(0.0, 8.0, tile=T).to_dict(), "sift": SiftSpec().to_dict(),
        "epoch": 1, "normalization": None, "overlaps": {},
    }  # fmt: skip
    save_checkpoint(ckpt, LightweightCNN(T, 2).eval().state_dict(), meta)
    return sorted(slide_dir.glob("*"))[0], ckpt


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _median(argv: list[str]) -> tuple[float, list[float]]:
    times = [_wall(argv) for _ in range(RUNS)]
    return statistics.median(times), times


_PROBE = """
import json, sys
from slidesift.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules,
                  "onnxruntime": "onnxruntime" in sys.modules}))
"""


def main() -> None:
    """Time the command, print the table and write ``bench-results/bench_e2e.json``."""
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    slide, ckpt = _inputs()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seg"
        segment = [str(BIN / "slidesift"), "segment", str(ckpt), str(slide), "--out", str(out)]
        _wall(segment)  # warm-up: ONNX export into the cache, page cache
        python_s, python_runs = _median([sys.executable, "-c", "pass"])
        cli_s, cli_runs = _median([str(BIN / "slidesift"), "--version"])
        total_s, total_runs = _median(segment)
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, "segment", str(ckpt), str(slide), "--out", str(out)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        loaded = json.loads(probe.stdout.strip().splitlines()[-1])
        with (out / "scores.csv").open(newline="") as f:
            inference = next(csv.DictReader(f))["inference"]
    rows = [
        ["python start (python -c pass)", python_s, ""],
        ["CLI start (slidesift --version)", cli_s, "imports the CLI only"],
        ["slidesift segment CKPT SLIDE", total_s, f"{N}-px, T {T}, stride 80, {inference}"],
        ["torch imported by segment", "yes" if loaded["torch"] else "no", ""],
    ]
    report(
        "bench_e2e",
        "slidesift segment, wall time from process start (median of 5, seconds)",
        ["what", "seconds", "note"],
        rows,
        {
            "runs": RUNS, "longest": N, "tile": T,
            "python_start_s": python_s, "python_start_runs_s": python_runs,
            "cli_start_s": cli_s, "cli_start_runs_s": cli_runs,
            "segment_s": total_s, "segment_runs_s": total_runs,
            "torch_imported": loaded["torch"], "onnxruntime_imported": loaded["onnxruntime"],
            "inference": inference,
            "target_s": 2.5,
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
