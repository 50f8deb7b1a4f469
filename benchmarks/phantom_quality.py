"""How hard are the default phantom cohorts? Colour vs texture separability, rails vs tile size.

Renders the default PAIP-like cohort and a CAMELYON-like cohort of the same size in memory,
thumbnails at N = 6000, and reports:
  * balanced accuracy of a logistic regression on 400-px tiles' RGB mean + std (colour only;
    the phantom bar is <= 0.80), and on colour plus two texture statistics (should be higher);
  * tumor-tile entropy rails (lo, hi, spread) from 50 to 400 px, with the paper's 50% background
    limit and with 10% (which reproduces the paper's PAIP2020 rails; see docs/design.md).

Run: ``.venv/bin/python benchmarks/phantom_quality.py`` (about three minutes on two cores).
"""

from __future__ import annotations

from _common import report
from slidesift.phantom.cohort import CohortSpec, plan_cohort
from slidesift.phantom.quality import COLOUR, TEXTURE, separability, thumbnail, tile_features
from slidesift.sift import SiftSpec
from slidesift.tiles import TileGrid
from slidesift.tumor_rails import rails_spread

SIZES = [50, 64, 100, 150, 200, 300, 400]


def main() -> None:
    rows = []
    extra: dict[str, object] = {}
    for regime in ("paip", "camelyon"):
        images, slides = [], []
        for item in plan_cohort(CohortSpec(regime=regime)):
            pixels, truth = thumbnail(item.layout, 6000)
            grid = TileGrid.from_overlap(pixels.shape[:2], tile=400, overlap=0.5)
            slides.append(tile_features(pixels, truth, grid))
            if truth.any():
                images.append((pixels, truth))
        for name, cols in (("colour", COLOUR), ("colour+texture", COLOUR + TEXTURE)):
            sep = separability(slides, cols)
            extra[f"{regime} {name}"] = sep.__dict__
            rows.append([f"{regime}: LR {name}", "fitted", sep.fitted, "held out", sep.held_out,
                         f"{sep.n_tumor} tumor / {sep.n_normal} other tiles"])  # fmt: skip
        for limit in (0.5, 0.1):
            spread = rails_spread(images, SIZES, spec=SiftSpec(max_background=limit))
            for r in spread:
                if r.rails is None:
                    continue
                detail = f"spread {r.rails.spread:.3f} over {r.rails.n_tiles} tiles"
                rows.append([f"{regime}: rails, background <= {limit}", f"T={r.tile}",
                             r.rails.lo, "hi", r.rails.hi, detail])  # fmt: skip
    report("phantom_quality", "Default phantom cohorts at N = 6000",
           ["check", "", "value", "", "value", "detail"], rows, extra)  # fmt: skip


if __name__ == "__main__":
    main()
