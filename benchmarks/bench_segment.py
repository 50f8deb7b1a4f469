"""Segment a 6000-px phantom slide with a T=400 model: seconds per stage, classifier tiles/s.

References in the same run:
  (a) the bare ONNX Runtime ceiling: ``session.run`` on batches of random 400-px tiles, nothing
      else (tiles/s);
  (b) per-tile ONNX Runtime on the slide's kept tiles (timed on a sample of them);
  (c) dense shared feature maps on all kept tiles (what ``segment`` picks at stride 80).
The network's weights are random (speed does not depend on them); the rails are wide open so
every tissue tile is classified, the worst case.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_segment.py [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import report
from slidesift.checkpoint import load_checkpoint, save_checkpoint
from slidesift.inference import OnnxTiles, classify_tiles
from slidesift.io.segment_outputs import write_segmentation
from slidesift.model import LightweightCNN
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.rails import Rails
from slidesift.segment import Classifiers, SegmentSpec, segment
from slidesift.sift import SiftSpec

T, N = 400, 6000


def make_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    net = LightweightCNN(T, 2).eval()
    meta = {
        "tile": T, "longest": N, "mpp": None, "classes": ["non-tumor", "tumor"],
        "rails": Rails(0.0, 8.0, tile=T).to_dict(), "sift": SiftSpec().to_dict(),
        "epoch": 1, "normalization": None, "overlaps": {},
    }  # fmt: skip
    return save_checkpoint(folder / "random.safetensors", net.state_dict(), meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 3000-px slide")
    args = parser.parse_args()
    longest = 3000 if args.quick else N
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cohort = make_cohort(CohortSpec(count=1, longest=(longest, longest), seed=4), root / "c")
        slide = next(iter(cohort)).slide
        ck = load_checkpoint(make_checkpoint(root))
        classifiers = Classifiers(ck)
        spec = SegmentSpec()  # 80% overlap: stride 80, a multiple of 16 -> dense
        segment(slide, ck, spec, classifiers=classifiers)  # warm-up: export, JIT, sessions
        start = time.perf_counter()
        r = segment(slide, ck, spec, classifiers=classifiers)
        total = time.perf_counter() - start
        t0 = time.perf_counter()
        write_segmentation(root / "out", "slide", r)
        write_s = time.perf_counter() - t0
        n_kept = int(r.keep.sum())

        onnx = OnnxTiles(ck)
        rng = np.random.default_rng(0)
        batch = rng.integers(0, 256, (32, T, T, 3), dtype=np.uint8)
        onnx(batch)
        t0 = time.perf_counter()
        reps = 2 if args.quick else 4
        for _ in range(reps):
            onnx.session.run(None, {"x": batch})
        ceiling = 32 * reps / (time.perf_counter() - t0)

        xy = r.grid.th_xy()[np.flatnonzero(r.keep.ravel())]
        sample = xy[rng.permutation(len(xy))[: 128 if not args.quick else 64]]
        t0 = time.perf_counter()
        for _ in classify_tiles(onnx, r.pixels, sample, T, batch=32):
            pass
        per_tile = len(sample) / (time.perf_counter() - t0)
        dense = n_kept / r.seconds["classify"]

        # the full grid (every tile, tissue or not): the dense target
        all_xy = r.grid.th_xy()
        dense_net = classifiers.get("dense")
        t0 = time.perf_counter()
        n_all = sum(len(i) for i, _ in dense_net.classify(r.pixels, all_xy, r.grid.stride))
        full_s = time.perf_counter() - t0

    s = r.seconds
    rows = [
        ["read", round(s["read"], 3), ""],
        ["sift", round(s["sift"], 3), f"{len(r.grid)} tiles, {n_kept} kept"],
        ["classify (dense)", round(s["classify"], 3), f"{dense:.0f} tiles/s"],
        ["assemble", round(s["assemble"], 3), ""],
        ["write outputs", round(write_s, 3), ""],
        ["total", round(total + write_s, 3), f"{r.pixels.shape[1]}x{r.pixels.shape[0]}"],
        ["per-tile ONNX (sample)", round(n_kept / per_tile, 3), f"{per_tile:.1f} tiles/s, "
         f"{per_tile / ceiling:.0%} of the ceiling; dense is {dense / per_tile:.1f}x"],
        ["dense, full grid", round(full_s, 3), f"{n_all} tiles, {n_all / full_s:.0f} tiles/s, "
         f"{n_all / full_s / per_tile:.1f}x per tile"],
        ["bare ONNX ceiling", round(n_kept / ceiling, 3), f"{ceiling:.1f} tiles/s"],
    ]  # fmt: skip
    report(
        "bench_segment",
        f"segment a {longest}-px phantom slide, T={T}, stride 80 (seconds; "
        "per-tile rows: time for all kept tiles at that rate)",
        ["stage", "seconds", "note"],
        rows,
        {
            "kept_tiles": n_kept,
            "dense_tiles_per_s": dense,
            "per_tile_tiles_per_s": per_tile,
            "ceiling_tiles_per_s": ceiling,
            "full_grid_tiles": n_all,
            "full_grid_dense_s": full_s,
            "everything_but_classify_s": s["read"] + s["sift"] + s["assemble"] + write_s,
        },
    )


if __name__ == "__main__":
    main()
