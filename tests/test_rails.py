"""Rails: exact min/max of tumor tiles, JSON round trip, the Fig. 5 spread diagnostic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slidesift import ConfigError, Rails, SiftSpec, SlidesiftError, TileGrid, fit_rails
from slidesift.phantom import he_like_image
from slidesift.sift import measure_tiles_reference
from slidesift.tumor_rails import rails_spread, tumor_tile_entropies


def test_fit_is_exact_min_and_max(rng) -> None:
    values = rng.uniform(3, 8, 1000)
    rails = fit_rails(values, tile=200)
    assert rails.lo == values.min() and rails.hi == values.max()
    assert rails.n_tiles == 1000 and rails.tile == 200
    assert rails.admits(np.array([values.min(), values.max()])).all()
    assert not rails.admits(np.array([np.nextafter(values.min(), 0)]))[0]


def test_no_tumor_tile_is_a_clear_error() -> None:
    with pytest.raises(SlidesiftError, match="no tumor tile"):
        fit_rails(np.array([]))


def test_save_load_round_trip(tmp_path: Path) -> None:
    rails = Rails(6.42, 7.46, "gray", 400, 1234)
    path = rails.save(tmp_path / "rails.json")
    assert Rails.load(path) == rails
    assert json.loads(path.read_text())["lo"] == 6.42


@pytest.mark.parametrize(
    "text", ["{", "[1, 2]", '{"lo": "x", "hi": 1}', '{"hi": 1}', '{"lo": 3, "hi": 2}']
)
def test_bad_rails_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rails.json"
    path.write_text(text)
    with pytest.raises(SlidesiftError):
        Rails.load(path)


def test_inverted_rails_are_refused() -> None:
    with pytest.raises(ConfigError):
        Rails(7.0, 6.0)


def test_tumor_tiles_are_those_of_the_blackened_image() -> None:
    pixels, tumor = he_like_image((300, 400), seed=4, nucleus_px=3.0, tumor_fraction=0.5)
    grid = TileGrid.from_overlap(pixels.shape[:2], tile=50, overlap=0.5)
    got = tumor_tile_entropies(pixels, tumor, grid)
    blackened = np.where(tumor[..., None], pixels, 0).astype(np.uint8)
    ref = measure_tiles_reference(blackened, grid)
    assert np.array_equal(np.sort(got), np.sort(ref.entropy[ref.keep_background]))
    assert got.size > 0


def test_rails_spread_over_tile_sizes() -> None:
    pixels, tumor = he_like_image((400, 500), seed=6, nucleus_px=3.0, tumor_fraction=0.5)
    rows = rails_spread([(pixels, tumor)], [20, 50, 100, 450], overlap=0.5)
    assert [r.tile for r in rows] == [20, 50, 100, 450]
    assert rows[-1].rails is None and np.isnan(rows[-1].spread)  # larger than the image
    spreads = [r.spread for r in rows[:3]]
    assert all(s > 0 for s in spreads)
    # Smaller tiles see less of the texture: their rails are at least as wide.
    assert spreads[0] >= spreads[2]
    gray = rails_spread([(pixels, tumor)], [50], spec=SiftSpec(entropy="gray"))[0].rails
    assert gray is not None and gray.entropy == "gray"
