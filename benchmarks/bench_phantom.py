"""Write phantom slides of growing size: peak memory stays flat, time grows with the area.

Cases, each in a fresh subprocess (peak RSS from ``getrusage`` of the child, which includes the
Python interpreter, numpy, numba and OpenCV: about 150-200 MB before any pixel):
  * streamed: :func:`slidesift.phantom.write_slide` (strip by strip) at 10000 x 8000 and at
    50000 x 40000 (``--quick``: 20000 x 16000);
  * reference in the same run: rendering the 10000 x 8000 slide whole in memory and writing it
    with :func:`slidesift.io.tiff.write_pyramidal_tiff`, as a naive generator would.
The slide has the default PAIP-like content at 0.5 um/px (a 20x scan) and every artifact.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_phantom.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import report

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from slidesift.phantom import plan_slide, render_image, write_slide
from slidesift.phantom.slide_layout import ARTIFACTS
from slidesift.io.tiff import write_pyramidal_tiff

h, w, mode, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
layout = plan_slide((h, w), seed=7, mpp=0.5, regime="paip", subtype="glandular",
                    artifacts=frozenset(ARTIFACTS))
warm = plan_slide((300, 300), seed=1, mpp=0.5)  # compile the kernels before timing
render_image(warm)
start = time.perf_counter()
if mode == "streamed":
    write_slide(layout, out, flavor="aperio")
else:
    write_pyramidal_tiff(out, render_image(layout), mpp=0.5, flavor="aperio", quality=80)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "file_bytes": out.stat().st_size}))
"""


def run(h: int, w: int, mode: str, folder: Path) -> dict[str, float]:
    out = folder / f"{mode}_{w}x{h}.svs"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(h), str(w), mode, str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    out.unlink(missing_ok=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="largest slide 20000 x 16000")
    args = parser.parse_args()
    big = (16000, 20000) if args.quick else (40000, 50000)
    cases = [((8000, 10000), "in-memory"), ((8000, 10000), "streamed"), (big, "streamed")]
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for (h, w), mode in cases:
            r = run(h, w, mode, Path(tmp))
            raw = h * w * 3
            rows.append([
                f"{w} x {h} {mode}", r["seconds"], h * w / r["seconds"] / 1e6,
                r["peak_bytes"] / 2**20, raw / 2**20, r["peak_bytes"] / raw,
                r["file_bytes"] / 2**20,
            ])  # fmt: skip
            print(rows[-1], flush=True)
    report(
        "bench_phantom",
        "Phantom slide writing (0.5 um/px, PAIP-like, all artifacts)",
        ["case", "seconds", "Mpx/s", "peak RSS MiB", "level 0 MiB", "peak / level 0", "file MiB"],
        rows,
        {"note": "peak RSS of the whole process, interpreter and libraries included"},
    )


if __name__ == "__main__":
    main()
