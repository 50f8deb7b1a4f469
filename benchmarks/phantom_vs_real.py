"""Phantom tissue against real H&E at the same um/px: tile entropy, colour, and the rails.

For each scale (0.5 and 1.0 um/px) and tile size T 96, it measures the tissue tiles (background
at most 10%) of

* real slides with an MPP (e.g. CMU-1-Small-Region.svs, 0.499 um/px), read with ``read_thumb``;
* real labelled patches (e.g. the CAMELYON16 sample patches, 0.243 um/px), area-resized to the
  scale, at 0.5 um/px only (at 1.0 they are smaller than a tile);
* PAIP-like and CAMELYON-like phantoms (3000 px at 0.5 um/px, no artifacts, the first three
  seeds that hold tumor),

and reports the distribution of tile entropy (percentiles and the two-sample Kolmogorov-Smirnov
statistic against the real tiles), mean tissue colour, and the rails' behaviour: rails fitted on
the phantoms' tumor tiles, then the share of real and of phantom tissue tiles they admit (the
rails should treat real tissue as they treat phantom tissue).

Run::

    .venv/bin/python benchmarks/phantom_vs_real.py --slide CMU-1-Small-Region.svs \\
        --patches camelyon16_patches [--label after]

``--label`` names the run in ``bench-results/phantom_vs_real.json`` (runs with other labels are
kept, so a before/after pair sits in one file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from _common import RESULTS, report
from slidesift.io.slide import open_slide, read_thumb
from slidesift.mosaic import read_patch_folder
from slidesift.phantom.plan import plan_slide
from slidesift.phantom.render import render_image
from slidesift.phantom.slide_layout import SlideLayout
from slidesift.rails import fit_rails
from slidesift.sift import SiftSpec, measure_tiles
from slidesift.tiles import TileGrid

T = 96
SCALES = (0.5, 1.0)
PHANTOM_MPP = 0.5
PHANTOM_SIDE = 3000
TISSUE = SiftSpec(max_background=0.1)


def tissue_tiles(
    pixels: NDArray[np.uint8], stride: int = 48, tumor: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Entropy and mean RGB of the tissue tiles, and which are tumor (at least 90% truth)."""
    grid = TileGrid.from_stride(pixels.shape[:2], tile=T, stride=stride)
    stats = measure_tiles(pixels, grid, TISSUE)
    keep = stats.background <= TISSUE.max_background
    colours, is_tumor = [], []
    for (x, y), k in zip(grid.th_xy(), keep.ravel(), strict=True):
        if k:
            colours.append(pixels[y : y + T, x : x + T].reshape(-1, 3).mean(axis=0))
            is_tumor.append(tumor is not None and tumor[y : y + T, x : x + T].mean() >= 0.9)
    return stats.entropy[keep], np.array(colours).reshape(-1, 3), np.array(is_tumor, bool)


def ks_statistic(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs."""
    x = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), x, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), x, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def resized(pixels: NDArray[np.uint8], factor: float) -> NDArray[np.uint8]:
    """Area-resized by ``factor`` (< 1 shrinks)."""
    h, w = pixels.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), np.uint8)


def tumor_layouts(regime: str, count: int = 3) -> list[SlideLayout]:
    """The first ``count`` phantom layouts (seeds 0, 1, ...) that hold tumor."""
    out: list[SlideLayout] = []
    seed = 0
    while len(out) < count:
        lay = plan_slide((PHANTOM_SIDE,) * 2, seed=seed, mpp=PHANTOM_MPP, regime=regime,
                         artifacts=frozenset())  # fmt: skip
        if lay.has_tumor:
            out.append(lay)
        seed += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slide", type=Path, action="append", default=[],
                        help="a real slide with an MPP (repeatable)")  # fmt: skip
    parser.add_argument("--patches", type=Path, help="folder with tumor/*.png, normal/*.png")
    parser.add_argument("--patch-mpp", type=float, default=0.243)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()

    rows, runs = [], {}
    layouts = {regime: tumor_layouts(regime) for regime in ("paip", "camelyon")}
    images = {r: [(render_image(lay), lay) for lay in lays] for r, lays in layouts.items()}
    for um in SCALES:
        real_e, real_c = [], []
        for path in args.slide:
            with open_slide(path) as slide:
                e, c, _ = tissue_tiles(read_thumb(slide, mpp=um).pixels)
            real_e.append(e)
            real_c.append(c)
        if args.patches is not None and 256 * args.patch_mpp / um >= T:
            for p in read_patch_folder(args.patches):
                e, c, _ = tissue_tiles(resized(p.pixels, args.patch_mpp / um), stride=8)
                real_e.append(e)
                real_c.append(c)
        real = np.concatenate(real_e)
        real_colour = np.concatenate(real_c).mean(axis=0)
        rows.append([f"real @ {um} um/px", len(real), *np.percentile(real, [5, 50, 95]),
                     "-", "-", str(real_colour.round().astype(int).tolist())])  # fmt: skip
        for regime, pairs in images.items():
            ents, cols, tumor_e = [], [], []
            for pixels, lay in pairs:
                factor = PHANTOM_MPP / um
                small = resized(pixels, factor) if factor != 1 else pixels
                truth = lay.truth((small.shape[1], small.shape[0]),
                                  (pixels.shape[1] / small.shape[1],
                                   pixels.shape[0] / small.shape[0]))  # fmt: skip
                e, c, is_tumor = tissue_tiles(small, tumor=truth)
                ents.append(e)
                cols.append(c)
                tumor_e.append(e[is_tumor])
            ph = np.concatenate(ents)
            rails = fit_rails(np.concatenate(tumor_e), tile=T)
            admit_ph = float(rails.admits(ph).mean())
            admit_real = float(rails.admits(real).mean())
            ks = ks_statistic(ph, real)
            colour = np.concatenate(cols).mean(axis=0)
            rows.append([f"{regime} @ {um} um/px", len(ph), *np.percentile(ph, [5, 50, 95]),
                         ks, f"{admit_ph:.2f} / {admit_real:.2f}",
                         str(colour.round().astype(int).tolist())])  # fmt: skip
            runs[f"{regime}@{um}"] = {
                "ks_entropy": ks,
                "entropy_percentiles_5_50_95": np.percentile(ph, [5, 50, 95]).tolist(),
                "real_entropy_percentiles_5_50_95": np.percentile(real, [5, 50, 95]).tolist(),
                "rails": [rails.lo, rails.hi],
                "rails_admit_phantom": admit_ph,
                "rails_admit_real": admit_real,
                "mean_rgb": colour.tolist(),
                "real_mean_rgb": real_colour.tolist(),
            }
    previous = RESULTS / "phantom_vs_real.json"
    labelled = {}
    if previous.exists():
        labelled = json.loads(previous.read_text()).get("runs", {})
    labelled[args.label] = runs
    report(
        "phantom_vs_real",
        f"Tissue tiles (T {T}, background <= 10%): phantom vs real ({args.label})",
        [
            "tiles",
            "n",
            "entropy p5",
            "p50",
            "p95",
            "KS vs real",
            "rails admit phantom / real",
            "mean RGB",
        ],
        rows,
        {"runs": labelled, "label": args.label},
    )


if __name__ == "__main__":
    main()
