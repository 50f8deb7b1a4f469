"""Training tile sets: the rails, both sifts, balancing, overlaps, labels, errors, PNG export."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slidesift.dataset import OVERLAP_CANDIDATES, build_tileset, friendly_overlap
from slidesift.errors import ConfigError, DatasetError
from slidesift.phantom import he_like_image
from slidesift.sift import SiftSpec, measure_tiles_reference
from slidesift.tiles import TileGrid
from slidesift.tileset import NON_TUMOR, SlideImage, TileSetSpec, class_image

T = 96


def _slide(seed: int, label: str | None, shape: tuple[int, int] = (360, 460)) -> SlideImage:
    pixels, tumor = he_like_image(shape, seed=seed, tumor_fraction=0.45)
    return SlideImage(f"s{seed}", label, pixels, tumor, key=f"k{seed}")


@pytest.fixture(scope="module")
def slides() -> list[SlideImage]:
    return [_slide(1, "msi-h"), _slide(2, "msi-l"), _slide(3, "msi-h"), _slide(4, "msi-l")]


def _tile_stats(tile: np.ndarray, spec: SiftSpec) -> tuple[float, float]:
    """Background fraction and entropy of one tile by the naive reference."""
    grid = TileGrid.from_stride(tile.shape[:2], tile=tile.shape[0], stride=tile.shape[0])
    st = measure_tiles_reference(np.ascontiguousarray(tile), grid, spec)
    return float(st.background[0, 0]), float(st.entropy[0, 0])


def test_rails_are_exact_min_and_max_of_tumor_tiles(slides: list[SlideImage]) -> None:
    spec = TileSetSpec(tile=T, longest=1000)
    ts = build_tileset(slides, spec)
    o = ts.overlaps["tumor"]
    entropies = []
    for s in slides:  # the obvious way: every tumor tile, naive histograms
        grid = TileGrid.from_overlap(s.pixels.shape[:2], tile=T, overlap=o)
        st = measure_tiles_reference(class_image(s, tumor=True), grid, spec.sift)
        entropies.append(st.entropy[st.background <= spec.sift.max_background])
    e = np.concatenate(entropies)
    assert ts.rails.lo == e.min() and ts.rails.hi == e.max()
    assert ts.rails.n_tiles == e.size


def test_every_tile_passes_both_sifts_and_is_cut_from_its_class_image(
    slides: list[SlideImage],
) -> None:
    spec = TileSetSpec(tile=T, longest=1000, tumor_max_background=0.4)
    ts = build_tileset(slides, spec)
    assert len(ts) > 20
    for i in range(len(ts)):
        tile = ts.tile(i)
        s = ts.slides[ts.slide[i]]
        y, x = ts.th_y[i], ts.th_x[i]
        image = class_image(s, tumor=bool(ts.label[i] > 0))
        np.testing.assert_array_equal(tile, image[y : y + T, x : x + T])
        limit = 0.4 if ts.label[i] > 0 else spec.sift.max_background
        bg, h = _tile_stats(tile, spec.sift)
        assert bg <= limit
        assert ts.rails.lo <= h <= ts.rails.hi
        assert h == pytest.approx(ts.entropy[i], abs=1e-12)


def test_classes_are_balanced_and_summary_matches_the_table(slides: list[SlideImage]) -> None:
    ts = build_tileset(slides, TileSetSpec(tile=T, longest=1000, seed=3))
    counts = ts.counts()
    assert counts[0] == counts[1] > 0
    assert [s.final for s in ts.summary] == counts.tolist()
    for s in ts.summary:
        assert s.final <= s.kept_rails <= s.kept_background <= s.cut
    unbalanced = build_tileset(slides, TileSetSpec(tile=T, longest=1000, balance="none"))
    assert unbalanced.counts().tolist() == [s.kept_rails for s in ts.summary]
    # the balanced set is a subset of the unbalanced one
    full = set(
        zip(unbalanced.slide, unbalanced.th_x, unbalanced.th_y, unbalanced.label, strict=True)
    )
    part = set(zip(ts.slide, ts.th_x, ts.th_y, ts.label, strict=True))
    assert part <= full
    again = build_tileset(slides, TileSetSpec(tile=T, longest=1000, seed=3))
    np.testing.assert_array_equal(again.th_x, ts.th_x)
    other = build_tileset(slides, TileSetSpec(tile=T, longest=1000, seed=4))
    assert not np.array_equal(other.th_x, ts.th_x) or not np.array_equal(other.th_y, ts.th_y)


def test_subtype_classes_take_the_slide_label(slides: list[SlideImage]) -> None:
    ts = build_tileset(slides, TileSetSpec(tile=T, longest=1000, classes="subtype"))
    assert ts.classes == (NON_TUMOR, "msi-h", "msi-l")
    for i in range(len(ts)):
        if ts.label[i] > 0:
            assert ts.classes[ts.label[i]] == ts.slides[ts.slide[i]].label
    counts = ts.counts()
    assert counts[0] == counts[1] == counts[2]
    pooled = build_tileset(
        slides, TileSetSpec(tile=T, longest=1000, classes="subtype", balance="tumor")
    )
    c = pooled.counts()
    assert c[0] == c[1] + c[2]


def test_overlaps_are_the_smallest_candidates_that_match_the_other_class(
    slides: list[SlideImage],
) -> None:
    spec = TileSetSpec(tile=T, longest=1000, balance="none")
    ts = build_tileset(slides, spec)
    base = friendly_overlap(T, 0.5)

    def summary(tumor_o: float, normal_o: float) -> tuple[int, int, int]:
        fixed = build_tileset(
            slides,
            TileSetSpec(tile=T, longest=1000, balance="none", tumor_overlap=tumor_o,
                        non_tumor_overlap=normal_o),
        )  # fmt: skip
        return (
            fixed.summary[0].kept_background,
            fixed.summary[1].kept_background,
            fixed.rails.n_tiles,
        )

    target = summary(base, base)[0]  # non-tumor tiles at 50% after the background sift
    o_tumor, o_normal = ts.overlaps["tumor"], ts.overlaps[NON_TUMOR]
    candidates = [friendly_overlap(T, o) for o in OVERLAP_CANDIDATES]
    assert o_tumor in candidates
    assert summary(o_tumor, base)[1] >= target or o_tumor == candidates[-1]
    for c in candidates:
        if c < o_tumor:
            assert summary(c, base)[1] < target
    n_tumor = ts.counts()[1]
    assert o_normal in candidates
    assert ts.counts()[0] >= n_tumor or o_normal == candidates[-1]
    for c in candidates:
        if c < o_normal:
            other = build_tileset(
                slides,
                TileSetSpec(tile=T, longest=1000, balance="none", tumor_overlap=o_tumor,
                            non_tumor_overlap=c),
            )  # fmt: skip
            assert other.counts()[0] < n_tumor
    # user-set overlaps are used as given
    fixed = build_tileset(
        slides, TileSetSpec(tile=T, longest=1000, tumor_overlap=0.75, non_tumor_overlap=0.5)
    )
    assert fixed.overlaps == {"tumor": 0.75, NON_TUMOR: 0.5}


def test_friendly_overlap_keeps_the_stride_close_and_the_gcd_large() -> None:
    for tile in (96, 100, 128, 200, 400):
        for o in OVERLAP_CANDIDATES:
            f = friendly_overlap(tile, o)
            stride = round(tile * (1 - f))
            assert abs(stride - tile * (1 - o)) <= 0.1 * tile * (1 - o) + 1
            assert TileGrid.from_overlap((1000, 1000), tile=tile, overlap=f).stride == stride
    assert friendly_overlap(400, 0.8) == pytest.approx(0.8)
    assert round(96 * (1 - friendly_overlap(96, 0.7))) == 32  # 29 has gcd 1 with 96


def test_held_out_set_uses_given_rails_overlaps_and_classes(slides: list[SlideImage]) -> None:
    spec = TileSetSpec(tile=T, longest=1000, classes="subtype")
    ts = build_tileset(slides, spec)
    held = build_tileset(
        [_slide(7, "msi-l")], spec, rails=ts.rails, overlaps=ts.overlaps, classes=ts.classes
    )
    assert held.rails == ts.rails and held.overlaps == ts.overlaps
    assert held.classes == ts.classes
    assert set(np.unique(held.label)) <= {0, 2}
    assert np.all((held.entropy >= ts.rails.lo) & (held.entropy <= ts.rails.hi))


def test_one_class_cohorts_and_oversized_tiles_are_refused(slides: list[SlideImage]) -> None:
    pixels, _ = he_like_image((360, 460), seed=9)
    normal = SlideImage("n", "normal", pixels, np.zeros((360, 460), bool))
    with pytest.raises(DatasetError, match=r"only one class|no.*tumor"):
        build_tileset([normal], TileSetSpec(tile=T, longest=1000))
    with pytest.raises(ConfigError, match="smaller thumbnails: s1"):
        build_tileset(slides, TileSetSpec(tile=400, longest=1000))
    one_subtype = [_slide(1, "msi-h"), _slide(3, "msi-h")]
    with pytest.raises(DatasetError, match="at least two subtype"):
        build_tileset(one_subtype, TileSetSpec(tile=T, longest=1000, classes="subtype"))
    all_tumor = SlideImage("t", "x", pixels, np.ones((360, 460), bool))
    with pytest.raises(DatasetError, match="non-tumor"):
        build_tileset([all_tumor], TileSetSpec(tile=T, longest=1000))
    with pytest.raises(ConfigError):
        SlideImage("bad", None, pixels, np.zeros((10, 10), bool))


def test_export_png_writes_an_imagefolder(slides: list[SlideImage], tmp_path: Path) -> None:
    ts = build_tileset(slides[:2], TileSetSpec(tile=T, longest=1000))
    root = ts.export_png(tmp_path / "tiles")
    files = sorted(root.rglob("*.png"))
    assert len(files) == len(ts)
    assert {p.parent.name for p in files} == set(ts.classes)
    i = 0
    name = ts.slides[ts.slide[i]].name
    path = root / ts.classes[ts.label[i]] / f"{name}_{ts.th_x[i]}_{ts.th_y[i]}.png"
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, ts.tile(i))
    csv_text = ts.table_csv().splitlines()
    assert csv_text[0].startswith("slide,th_x,th_y,class,label")
    assert len(csv_text) == len(ts) + 1


def test_raw_tiles_are_the_slides_pixels_labelled_by_truth_fraction(
    slides: list[SlideImage],
) -> None:
    from slidesift.tile_truth import truth_fractions

    spec = TileSetSpec(tile=T, longest=1000, source="raw", classes="subtype")
    ts = build_tileset(slides, spec)
    assert set(ts.label.tolist()) == {0, 1, 2}
    rails_entropies = []
    for s_i, s in enumerate(slides):
        for o_name in ("tumor", NON_TUMOR):
            grid = TileGrid.from_overlap(s.pixels.shape[:2], tile=T, overlap=ts.overlaps[o_name])
            frac = truth_fractions(np.asarray(s.pixels), s.tumor, grid, spec.sift)
            if o_name == "tumor":
                st = measure_tiles_reference(np.asarray(s.pixels), grid, spec.tumor_sift)
                fit = (frac >= 0.75) & (st.background <= spec.tumor_sift.max_background)
                rails_entropies.append(st.entropy[fit])
            rows = np.flatnonzero(ts.slide == s_i)
            for i in rows:
                x, y = int(ts.th_x[i]), int(ts.th_y[i])
                np.testing.assert_array_equal(ts.tile(i), s.pixels[y : y + T, x : x + T])
            # each tile's label follows the rule: >= 0.75 tumor (its subtype), <= 0.25 not
            on_grid = [i for i in rows if ts.th_x[i] % grid.stride == ts.th_y[i] % grid.stride == 0
                       and (ts.label[i] > 0) == (o_name == "tumor")]  # fmt: skip
            for i in on_grid:
                f = frac[ts.th_y[i] // grid.stride, ts.th_x[i] // grid.stride]
                if ts.label[i] > 0:
                    assert f >= 0.75 and ts.classes[ts.label[i]] == s.label
                else:
                    assert f <= 0.25
    e = np.concatenate(rails_entropies)
    assert ts.rails.lo == e.min() and ts.rails.hi == e.max()
    with pytest.raises(ConfigError, match="source"):
        TileSetSpec(tile=T, longest=1000, source="blur")  # type: ignore[arg-type]
