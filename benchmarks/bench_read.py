"""Thumbnail of a 24000 x 18000 pyramidal JPEG TIFF to 6000 px: time and peak memory.

Two slides, written once into a cache folder:
  * "near": a full pyramid (24000, 12000, 6000, ...): the 6000-px level is read directly;
  * "far": levels 24000 and 3000 only: the thumbnail must be resampled from level 0.
Reference in the same run: OpenSlide's own ``get_thumbnail`` (PIL resampling) for the near case.
Peak memory is sampled every 2 ms in a fresh subprocess per case: RSS above the opened slide.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_read.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from _common import report

CACHE = Path(os.environ.get("SLIDESIFT_BENCH_CACHE", Path.home() / ".cache" / "slidesift-bench"))
L0 = (18000, 24000)

CHILD = r"""
import json, sys, threading, time
import numpy as np
from slidesift import open_slide, read_thumb

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

path, mode = sys.argv[1], sys.argv[2]
slide = open_slide(path)
base = rss()
peak = [base]
done = threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.perf_counter()
if mode == "openslide":
    img = np.asarray(slide._osr.get_thumbnail((6000, 6000)))
else:
    img = read_thumb(slide, longest=6000).pixels
dt = time.perf_counter() - t0
done.set()
sampler.join()
peak[0] = max(peak[0], rss())
extra_kib = (peak[0] - base) / 1024
print(json.dumps({"seconds": dt, "peak_kib": extra_kib, "out_bytes": int(img.nbytes)}))
"""


def make_slides() -> dict[str, Path]:
    """Write the two benchmark slides once (minutes the first time), from tiled phantom texture."""
    from slidesift.io.tiff import pyramid_levels
    from slidesift.phantom import he_like_image

    CACHE.mkdir(parents=True, exist_ok=True)
    near, far = CACHE / "near_24000.tif", CACHE / "far_24000.tif"
    if near.exists() and far.exists():
        return {"near": near, "far": far}
    import tifffile

    patch, _ = he_like_image((4500, 6000), seed=7, nucleus_px=8.0)
    level0 = np.tile(patch, (4, 4, 1))
    assert level0.shape[:2] == L0
    levels = pyramid_levels(level0, tile=256)
    for path, keep in ((near, levels), (far, [levels[0], levels[3]])):
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            for i, level in enumerate(keep):
                tw.write(
                    level, tile=(256, 256), compression="jpeg", compressionargs={"level": 85},
                    photometric="rgb", subfiletype=0 if i == 0 else 1,
                    resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER",
                )  # fmt: skip
    return {"near": near, "far": far}


def measure(path: Path, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    slides = make_slides()
    rows: list[list[object]] = []
    results: dict[str, dict[str, float]] = {}
    for label, path, mode in (
        ("near level, slidesift", slides["near"], "slidesift"),
        ("near level, openslide get_thumbnail", slides["near"], "openslide"),
        ("from level 0, slidesift", slides["far"], "slidesift"),
    ):
        runs = [measure(path, mode) for _ in range(3)]
        best = min(runs, key=lambda r: r["seconds"])
        peak = max(r["peak_kib"] for r in runs) * 1024
        results[label] = {**best, "peak_bytes": peak}
        rows.append([label, best["seconds"], peak / 2**20, peak / best["out_bytes"]])
    report(
        "bench_read",
        "thumbnail 24000x18000 -> 6000x4500 (peak = extra RSS over the opened slide)",
        ["case", "seconds", "peak MiB", "peak / output"],
        rows,
        {"results": results},
    )


if __name__ == "__main__":
    main()
