"""Phantom cohorts: real pyramidal slides, exact truth in every format, same seed same bytes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from slidesift.errors import ConfigError
from slidesift.io.annotations import read_geojson, read_truth
from slidesift.io.slide import Thumb, open_slide, read_thumb
from slidesift.io.tiff import pyramid_shapes
from slidesift.manifest import read_manifest
from slidesift.phantom import (
    ARTIFACTS,
    plan_slide,
    render_block,
    render_image,
    tumor_block,
)
from slidesift.phantom.cohort import CohortSpec, make_cohort, plan_cohort

SMALL = {"count": 4, "longest": (1800, 2200), "mpp": 4.0, "artifacts": 0.5}


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def thumb_of(path: Path, longest: int = 900) -> Thumb:
    with open_slide(path) as slide:
        return read_thumb(slide, longest=longest)


@pytest.fixture(scope="module")
def paip_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CohortSpec]:
    spec = CohortSpec(regime="paip", subtypes=2, seed=11, **SMALL)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("paip")
    make_cohort(spec, out)
    return out, spec


@pytest.fixture(scope="module")
def camelyon_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CohortSpec]:
    spec = CohortSpec(regime="camelyon", subtypes=1, seed=12, **SMALL)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("camelyon")
    make_cohort(spec, out)
    return out, spec


@pytest.mark.parametrize("name", ["paip_cohort", "camelyon_cohort"])
def test_every_slide_opens_in_openslide_with_its_levels_and_mpp(
    name: str, request: pytest.FixtureRequest
) -> None:
    out, spec = request.getfixturevalue(name)
    info = json.loads((out / "cohort.json").read_text())
    manifest = read_manifest(out / "manifest.csv")
    assert len(manifest) == spec.count == len(info["slides"])
    for entry, meta in zip(manifest, info["slides"], strict=True):
        with openslide.OpenSlide(entry.slide) as s:
            h, w = meta["shape"]
            assert s.level_dimensions[0] == (w, h)
            assert s.level_count == meta["levels"] == len(pyramid_shapes((h, w))) >= 3
            assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(spec.mpp)
            want = "aperio" if spec.regime == "paip" else "generic-tiff"
            assert s.properties[openslide.PROPERTY_NAME_VENDOR] == want
        with tifffile.TiffFile(entry.slide) as tf:  # JPEG tiles on every level
            assert all(p.compression == tifffile.COMPRESSION.JPEG and p.is_tiled for p in tf.pages)


@pytest.mark.parametrize("name", ["paip_cohort", "camelyon_cohort"])
def test_truth_files_rasterize_back_to_the_generators_mask(
    name: str, request: pytest.FixtureRequest
) -> None:
    out, spec = request.getfixturevalue(name)
    planned = plan_cohort(spec)
    manifest = read_manifest(out / "manifest.csv")
    checked = 0
    for entry, item in zip(manifest, planned, strict=True):
        thumb = thumb_of(entry.slide)
        own = item.layout.truth(thumb.size, thumb.scale)
        if entry.annotation is None:
            assert entry.label == "normal" and not own.any()
            continue
        assert own.any()
        assert jaccard(read_truth(entry.annotation, thumb), own) >= 0.99
        geojson = out / "annotations" / f"{entry.name}.geojson"
        assert jaccard(read_geojson(geojson, thumb), own) >= 0.99
        checked += 1
    assert checked >= 2


def test_tumor_pixels_are_exactly_the_truth(paip_cohort: tuple[Path, CohortSpec]) -> None:
    """The texture switch and the truth come from the same polygons."""
    from slidesift.phantom.slide_layout import TUMOR

    _out, spec = paip_cohort
    lay = plan_cohort(spec)[0].layout
    h, w = lay.shape
    codes = lay.regions((w, h), (1.0, 1.0))
    assert np.array_equal(codes == TUMOR, tumor_block(lay, 0, h, 0, w) == 1)


def test_manifest_labels_and_splits(paip_cohort: tuple[Path, CohortSpec],
                                    camelyon_cohort: tuple[Path, CohortSpec]) -> None:  # fmt: skip
    paip = read_manifest(paip_cohort[0] / "manifest.csv")
    assert sorted(e.label or "" for e in paip) == ["glandular", "glandular", "solid", "solid"]
    assert {e.split for e in paip} == {"train", "test"}
    for label in ("glandular", "solid"):
        assert sorted(e.split or "" for e in paip if e.label == label) == ["test", "train"]
    assert all(e.annotation is not None and e.annotation.suffix == ".tif" for e in paip)
    nodes = read_manifest(camelyon_cohort[0] / "manifest.csv")
    assert sorted(e.label or "" for e in nodes) == ["normal", "normal", "tumor", "tumor"]
    assert all((e.annotation is None) == e.is_normal for e in nodes)
    assert all(e.annotation is None or e.annotation.suffix == ".xml" for e in nodes)


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    spec = CohortSpec(count=2, longest=(900, 1100), mpp=4.0, artifacts=ARTIFACTS, seed=5)
    a, b = tmp_path / "a", tmp_path / "b"
    make_cohort(spec, a)
    make_cohort(spec, b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 + 2 * 3  # cohort.json, manifest.csv; slide, mask, geojson each
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    other = dataclasses.replace(spec, seed=6)
    make_cohort(other, tmp_path / "c")
    assert (tmp_path / "c/slides/paip_000.svs").read_bytes() != (
        a / "slides/paip_000.svs"
    ).read_bytes()


def test_rerun_resumes_and_a_different_spec_is_refused(tmp_path: Path) -> None:
    spec = CohortSpec(count=1, longest=(600, 600), mpp=4.0, seed=1)
    make_cohort(spec, tmp_path)
    slide = tmp_path / "slides/paip_000.svs"
    stamp = slide.stat().st_mtime_ns
    make_cohort(spec, tmp_path)
    assert slide.stat().st_mtime_ns == stamp  # kept, not rewritten
    with pytest.raises(ConfigError, match="same spec"):
        make_cohort(dataclasses.replace(spec, seed=2), tmp_path)
    make_cohort(dataclasses.replace(spec, seed=2), tmp_path, overwrite=True)
    assert slide.stat().st_mtime_ns != stamp


@pytest.mark.parametrize("regime", ["paip", "camelyon"])
def test_blocks_render_exactly_as_the_whole_slide(regime: str) -> None:
    lay = plan_slide((700, 900), seed=3, mpp=3.0, regime=regime, subtype="solid",
                     artifacts=frozenset(ARTIFACTS))  # fmt: skip
    assert set(lay.artifacts.names()) == set(ARTIFACTS)
    whole = render_image(lay)
    for y0, x0, h, w in [(0, 0, 700, 900), (13, 17, 101, 203), (600, 800, 100, 100)]:
        assert np.array_equal(
            render_block(lay, y0, y0 + h, x0, x0 + w), whole[y0 : y0 + h, x0 : x0 + w]
        )


def test_layouts_follow_the_seed_and_the_regime() -> None:
    a = plan_slide((2000, 2600), seed=1, regime="paip", subtype="glandular", artifacts=0.0)
    b = plan_slide((2000, 2600), seed=1, regime="paip", subtype="glandular", artifacts=0.0)
    c = plan_slide((2000, 2600), seed=2, regime="paip", subtype="glandular", artifacts=0.0)
    assert np.array_equal(a.tumors[0].rings[0], b.tumors[0].rings[0])
    assert not np.array_equal(a.tumors[0].rings[0], c.tumors[0].rings[0])
    share = a.truth((650, 500), (4.0, 4.0)).sum() / (a.regions((650, 500), (4.0, 4.0)) > 0).sum()
    assert 0.08 <= share <= 0.55  # PAIP-like: tumor 10-50% of the tissue
    free = plan_slide((2000, 2600), seed=1, regime="camelyon", subtype=None)
    assert not free.tumors and free.subtype is None


def test_tumor_texture_departs_from_normal_with_the_difficulty_knob() -> None:
    """At difficulty 1 glandular tumor is normal mucosa; easier settings differ more."""
    from slidesift.phantom import _texture as tx

    easy, mid, hard = (tx.mean_stain(0, s) for s in (1.0, 0.5, 0.0))
    mucosa = tx.mean_stain(2, 0.0)
    assert hard == pytest.approx(mucosa)
    gap = [abs(t[0] - mucosa[0]) + abs(t[1] - mucosa[1]) for t in (hard, mid, easy)]
    assert gap[0] < gap[1] < gap[2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"regime": "liver"}, "regime"), ({"difficulty": 1.5}, "difficulty"),
     ({"subtype": "sarcoma"}, "subtype"), ({"artifacts": frozenset({"coffee"})}, "artifacts")],
)  # fmt: skip
def test_bad_phantom_options_say_what_is_allowed(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_slide((500, 500), seed=0, **kwargs)


def test_holes_in_tumor_become_asap_exclusions(tmp_path: Path) -> None:
    from slidesift.io.asap import parse_asap_xml, write_asap_xml
    from slidesift.io.polygons import rasterize

    lay = plan_slide((3000, 4000), seed=0, regime="paip", subtype="glandular", artifacts=0.0)
    holed = [t for t in lay.tumors if len(t.rings) > 1]
    assert holed  # seed 0 puts tears inside the tumor
    path = write_asap_xml(tmp_path / "t.xml", lay.tumors)
    text = path.read_text()
    assert 'PartOfGroup="_2"' in text and 'PartOfGroup="_0"' in text
    polys = parse_asap_xml(path)
    assert sum(p.label == 0 for p in polys) == sum(len(t.rings) - 1 for t in lay.tumors)
    back = rasterize(polys, (1000, 750), (4.0, 4.0)) > 0
    own = lay.truth((1000, 750), (4.0, 4.0))
    assert np.array_equal(back, own)
    # the exclusions are glass on the slide: holes are cut from the tissue too
    codes = lay.regions((1000, 750), (4.0, 4.0))
    hole_mask = rasterize([type(t)(t.rings[1:2], 1) for t in holed], (1000, 750), (4.0, 4.0)) > 0
    assert hole_mask.any() and (codes[hole_mask] == 0).all()
