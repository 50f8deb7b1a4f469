"""Thumbnail of a 24000 x 18000 JPEG TIFF to 6000 px: slidesift vs OpenSlide, threads matched.

Three slides, written once into a cache folder:
  * "near": a full pyramid (24000, 12000, 6000, ...): the 6000-px level is read directly;
  * "far": levels 24000 and 3000 only: the thumbnail must be resampled from level 0;
  * "segment": the 6000 x 4839 phantom SVS that ``bench_segment.py`` segments (29 MP at
    level 0, read as it is: the read stage of segmentation).

Every case runs with 1 thread and with all cores (``os.cpu_count()``), each reader with the same
number of threads:
  * slidesift: ``read_thumb(slide, longest=6000, workers=n)`` (bands decoded and resampled by
    ``n`` Python threads), with OpenCV's threads (``cv2.setNumThreads``) and the BLAS threads of
    the band resampling (``OMP/OPENBLAS/MKL_NUM_THREADS``) set to ``n`` as well; its default
    reader (``auto``) decodes the tiles with tifffile + imagecodecs where that equals OpenSlide,
    and the JSON says which reader it used;
  * slidesift, ``reader="openslide"``: the same bands decoded by OpenSlide ``read_region``
    (slidesift's reader before the tifffile path, same threads);
  * OpenSlide, 1 thread: its own ``get_thumbnail`` (one ``read_region`` of the best level, then
    PIL), which decodes on one thread whatever the machine;
  * OpenSlide, ``n`` threads: the same level read as bands of rows by ``read_region`` calls in a
    ``ThreadPoolExecutor(n)`` (OpenSlide decodes each call on the calling thread; ctypes releases
    the GIL), each band composited on white by PIL, the level then shrunk by PIL's
    ``thumbnail`` (one thread) as ``get_thumbnail`` does: what a user wanting all cores from
    OpenSlide would write. It also runs with 1 thread, to show what the
    band reading itself costs.
Times are the best of 3 runs (interleaved: each round runs every case once, so all readers
share the machine's load), each in a fresh subprocess with the thread settings in its
environment; peak memory is RSS above the opened slide, sampled every 2 ms (largest of the runs).
Every reader's pixels are hashed; the JSON says which readers gave identical pixels.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_read.py [--slides segment near]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _common import report

CACHE = Path(os.environ.get("SLIDESIFT_BENCH_CACHE", Path.home() / ".cache" / "slidesift-bench"))
L0 = (18000, 24000)
LONGEST = 6000
REPEAT = 3
#: Environment variables that size the thread pools of OpenMP and the BLAS libraries.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Readers: name in the table and JSON -> child mode.
READERS = {
    "slidesift read_thumb": "slidesift",
    "slidesift read_thumb, reader=openslide": "slidesift-openslide",
    "OpenSlide get_thumbnail": "openslide",
    "OpenSlide read_region bands, thread pool": "openslide-pool",
}

CHILD = r"""
import hashlib, json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import cv2
import numpy as np
from PIL import Image
from slidesift import open_slide, read_thumb

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

def openslide_pool(osr, longest, threads, band=512):
    # get_thumbnail, but the level is read as bands of rows by `threads` threads
    downsample = max(d / longest for d in osr.dimensions)
    level = osr.get_best_level_for_downsample(downsample)
    w, h = osr.level_dimensions[level]
    ds = osr.level_downsamples[level]
    out = np.empty((h, w, 3), np.uint8)

    def read(y0):
        y1 = min(h, y0 + band)
        region = osr.read_region((0, round(y0 * ds)), level, (w, y1 - y0))
        rgb = Image.new("RGB", region.size, "#ffffff")
        rgb.paste(region, None, region)  # on white, as get_thumbnail
        out[y0:y1] = np.asarray(rgb)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(read, range(0, h, band)))
    if max(w, h) <= longest:
        return out  # get_thumbnail's PIL thumbnail() would not change it
    img = Image.fromarray(out)
    del out
    img.thumbnail((longest, longest), Image.Resampling.LANCZOS)  # one thread, as get_thumbnail
    return np.asarray(img)

path, mode, threads, longest = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cv2.setNumThreads(threads)
slide = open_slide(path)
used = "openslide"
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
    img = np.asarray(slide._osr.get_thumbnail((longest, longest)))
elif mode == "openslide-pool":
    img = openslide_pool(slide._osr, longest, threads)
else:
    reader = "openslide" if mode == "slidesift-openslide" else None
    thumb = read_thumb(slide, longest=longest, workers=threads, reader=reader)
    img, used = thumb.pixels, thumb.reader
dt = time.perf_counter() - t0
done.set()
sampler.join()
peak[0] = max(peak[0], rss())
print(json.dumps({
    "seconds": dt, "peak_kib": (peak[0] - base) / 1024, "out_bytes": int(img.nbytes),
    "shape": list(img.shape), "sha1": hashlib.sha1(np.ascontiguousarray(img)).hexdigest(),
    "decoder": used,
}))
"""


def make_segment_slide() -> Path:
    """The phantom of ``bench_segment.py`` (same cohort spec), written once into the cache."""
    import shutil
    import tempfile

    from slidesift.phantom.cohort import CohortSpec, make_cohort

    path = CACHE / "segment_6000.svs"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            cohort = make_cohort(CohortSpec(count=1, longest=(6000, 6000), seed=4), Path(tmp))
            shutil.move(next(iter(cohort)).slide, path)
    return path


def make_slides(wanted: list[str]) -> dict[str, Path]:
    """Write the benchmark slides in ``wanted`` once (minutes the first time), from phantoms.

    Returns
    -------
    dict
        ``{"near": path, "far": path, "segment": path}``, the wanted ones.
    """
    from slidesift.io.tiff import pyramid_levels
    from slidesift.phantom import he_like_image

    CACHE.mkdir(parents=True, exist_ok=True)
    out = {"segment": make_segment_slide()} if "segment" in wanted else {}
    near, far = CACHE / "near_24000.tif", CACHE / "far_24000.tif"
    if not {"near", "far"} & set(wanted) or (near.exists() and far.exists()):
        return out | {k: v for k, v in (("near", near), ("far", far)) if k in wanted}
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
    return out | {k: v for k, v in (("near", near), ("far", far)) if k in wanted}


def measure(path: Path, mode: str, threads: int) -> dict[str, Any]:
    """One read in a fresh subprocess whose thread pools are all sized ``threads``.

    Returns
    -------
    dict
        ``seconds``, ``peak_kib`` (RSS above the opened slide), ``out_bytes``, ``shape`` and
        ``sha1`` of the thumbnail's pixels.
    """
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(threads))}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, str(threads), str(LONGEST)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def cases(cores: int, slides: list[str]) -> list[tuple[str, str, int]]:
    """``(slide, reader, threads)`` in the order they run: each slide, each thread setting."""
    settings = [1] if cores == 1 else [1, cores]
    out = []
    for slide in slides:
        for threads in settings:
            for reader in READERS:
                if reader == "OpenSlide get_thumbnail" and threads > 1:
                    continue  # no thread knob: the pool reader is the n-thread OpenSlide
                out.append((slide, reader, threads))
    return out


def main() -> None:
    """Run every case, print the table and write ``bench-results/bench_read.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--slides",
        nargs="+",
        choices=["near", "far", "segment"],
        default=["near", "far", "segment"],
        help="which slides (default all)",
    )
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs per case (best kept)")
    args = parser.parse_args()
    slides = make_slides(args.slides)
    cores = os.cpu_count() or 1
    rows: list[list[object]] = []
    results: list[dict[str, Any]] = []
    todo = cases(cores, args.slides)
    for _ in range(args.repeat):  # interleaved, so every reader sees the same machine load
        for slide, reader, threads in todo:
            run = measure(slides[slide], READERS[reader], threads)
            key = (slide, reader, threads)
            done = next(
                (r for r in results if (r["slide"], r["reader"], r["threads"]) == key), None
            )
            if done is None:
                done = {"slide": slide, "reader": reader, "threads": threads, "runs": []}
                results.append(done)
            done["runs"].append(run)
    for r in results:
        runs = r.pop("runs")
        best = min(runs, key=lambda q: q["seconds"])
        r |= {
            "seconds": best["seconds"], "all_seconds": [q["seconds"] for q in runs],
            "peak_bytes": max(q["peak_kib"] for q in runs) * 1024,
            "out_bytes": best["out_bytes"], "shape": best["shape"], "sha1": best["sha1"],
            "decoder": best["decoder"],
        }  # fmt: skip
        print(f"{r['slide']}, {r['reader']}, {r['threads']} thread(s): {r['seconds']:.3f} s "
              f"({r['decoder']})", flush=True)  # fmt: skip
    for r in results:
        same = [q for q in results if q["slide"] == r["slide"] and q["threads"] == r["threads"]]
        ours = next(q for q in same if q["reader"] == "slidesift read_thumb")
        rows.append([
            r["slide"], r["reader"], r["decoder"], r["threads"], r["seconds"],
            r["seconds"] / ours["seconds"], r["peak_bytes"] / 2**20,
            r["peak_bytes"] / r["out_bytes"], "yes" if r["sha1"] == ours["sha1"] else "no",
        ])  # fmt: skip
    report(
        "bench_read",
        f"thumbnail -> {LONGEST} px (near/far: 24000x18000 JPEG TIFF; segment: 6000x4839 "
        f"phantom SVS), threads matched (best of {args.repeat}, interleaved; "
        "peak = extra RSS over the opened slide; vs slidesift = time / slidesift's time "
        "at the same threads)",
        ["slide", "reader", "decoder", "threads", "seconds", "vs slidesift", "peak MiB",
         "peak / output", "same pixels"],
        rows,
        {"results": results, "longest": LONGEST, "level0": [L0[1], L0[0]],
         "repeat": args.repeat, "slides": args.slides,
         "thread_settings": sorted({r["threads"] for r in results}),
         "thread_knobs": {
             "slidesift": "read_thumb(workers=n[, reader='openslide']), cv2.setNumThreads(n), "
                          "OMP/OPENBLAS/MKL_NUM_THREADS=n; tifffile tiles decoded on the n "
                          "band threads",
             "openslide": "get_thumbnail: one read_region on the calling thread; pool reader: "
                          "read_region bands in ThreadPoolExecutor(n)",
         }},
    )  # fmt: skip


if __name__ == "__main__":
    main()
