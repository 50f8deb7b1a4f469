"""The default phantom cohort is hard by colour, easy by texture, and its rails act as Fig. 5.

These render whole cohorts (about a minute on two cores), so they are marked slow; CI runs them.
"""

from __future__ import annotations

import pytest

from slidesift.phantom.cohort import CohortSpec, plan_cohort
from slidesift.phantom.quality import COLOUR, TEXTURE, separability, thumbnail, tile_features
from slidesift.sift import SiftSpec
from slidesift.tiles import TileGrid
from slidesift.tumor_rails import rails_spread

pytestmark = pytest.mark.slow


def test_default_cohort_colour_alone_is_not_enough_but_texture_is() -> None:
    slides = []
    for item in plan_cohort(CohortSpec()):  # the default cohort, thumbnails at N = 6000
        pixels, truth = thumbnail(item.layout, 6000)
        grid = TileGrid.from_overlap(pixels.shape[:2], tile=400, overlap=0.5)
        slides.append(tile_features(pixels, truth, grid))
    colour = separability(slides, COLOUR)
    both = separability(slides, COLOUR + TEXTURE)
    print(f"\ncolour only: {colour}\ncolour + texture: {both}")
    assert colour.n_tumor > 300 and colour.n_normal > 300
    assert colour.fitted <= 0.80 and colour.held_out <= 0.80
    assert both.fitted >= 0.8 and both.fitted > colour.fitted + 0.15


def test_camelyon_rails_are_narrow_at_200_to_400_px_and_widen_below() -> None:
    spec = CohortSpec(regime="camelyon", count=10)
    images = [thumbnail(item.layout, 6000) for item in plan_cohort(spec) if item.layout.tumors]
    assert images
    # tumor tiles with at most 10% background, as the paper's PAIP2020 rails imply (see the note)
    rows = rails_spread(images, [64, 100, 200], spec=SiftSpec(max_background=0.1))
    spread = {r.tile: r.rails.spread for r in rows if r.rails is not None}
    print(f"\ncamelyon rails spread by tile size: {spread}")
    assert spread[200] < 0.6
    assert spread[64] > 3 * spread[200]
    assert spread[64] > spread[100] > spread[200]
