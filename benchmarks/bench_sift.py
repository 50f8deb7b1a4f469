"""Sift a 6000 x 4500 H&E-like thumbnail, T=400, 80% overlap (3692 tiles): engine vs references.

References on the same image in the same run:
  (a) a per-tile numpy ``bincount`` loop (the obvious code),
  (b) ``skimage.measure.shannon_entropy`` per tile (entropy only),
  (c) one memory pass over the image (``pixels.sum()``): the floor any method must pay.
Entropy is over RGB values (the paper's default); grey conversion is included in every time.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_sift.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from _common import best_of, report
from slidesift import SiftSpec, TileGrid, measure_tiles
from slidesift.phantom import he_like_image
from slidesift.sift import measure_tiles_reference, to_gray


def skimage_loop(pixels: np.ndarray, grid: TileGrid) -> np.ndarray:
    from skimage.measure import shannon_entropy

    t = grid.tile
    out = np.empty(grid.grid_shape)
    for (x, y), i in zip(grid.th_xy(), range(len(grid)), strict=True):
        tile = pixels[y : y + t, x : x + t]
        to_gray(tile)  # the background test needs grey too
        out.flat[i] = shannon_entropy(tile, base=2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the slow skimage reference")
    args = parser.parse_args()

    pixels, _ = he_like_image((4500, 6000), seed=0)
    grid = TileGrid.from_overlap(pixels.shape[:2], tile=400, overlap=0.8)
    spec = SiftSpec()
    measure_tiles(pixels[:800, :800], TileGrid.from_overlap((800, 800), tile=400, overlap=0.8))

    t_engine, fast = best_of(lambda: measure_tiles(pixels, grid, spec), 5)
    cores = os.cpu_count() or 1
    t_engine_mt, fast_mt = best_of(lambda: measure_tiles(pixels, grid, spec, workers=cores), 5)
    t_numpy, slow = best_of(lambda: measure_tiles_reference(pixels, grid, spec), 2)
    t_pass, _ = best_of(lambda: int(pixels.sum(dtype=np.uint64)), 5)
    assert np.array_equal(fast.entropy, slow.entropy)
    assert np.array_equal(fast.background, slow.background)
    assert np.array_equal(fast_mt.entropy, slow.entropy)

    n = len(grid)
    rows: list[list[object]] = [
        ["engine, 1 thread", t_engine, n / t_engine, 1.0],
        [f"engine, {cores} threads", t_engine_mt, n / t_engine_mt, t_engine / t_engine_mt],
        ["(a) per-tile numpy bincount", t_numpy, n / t_numpy, t_engine / t_numpy],
    ]
    extra: dict[str, object] = {
        "tiles": n,
        "image": [4500, 6000],
        "tile": 400,
        "stride": grid.stride,
        "speedup_vs_numpy_loop": t_numpy / t_engine,
        "engine_seconds_one_thread": t_engine,
        "exact_match": True,
    }
    if not args.quick:
        t_sk, ent_sk = best_of(lambda: skimage_loop(pixels, grid), 1)
        assert np.allclose(ent_sk, fast.entropy, atol=1e-9)
        rows.append(["(b) skimage shannon_entropy loop", t_sk, n / t_sk, t_engine / t_sk])
        extra["speedup_vs_skimage_loop"] = t_sk / t_engine
    rows.append(["(c) one memory pass (sum)", t_pass, n / t_pass, t_engine / t_pass])
    report(
        "bench_sift",
        "sift of 3692 tiles (6000x4500, T=400, 80% overlap); ratio = engine time / row time",
        ["method", "seconds", "tiles/s", "ratio"],
        rows,
        extra,
    )


if __name__ == "__main__":
    main()
