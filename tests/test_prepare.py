"""From a manifest on disk to tile sets: the cache, normalisation, and every refusal."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import slidesift.loading as loading
from slidesift.cache import ThumbCache, file_digest
from slidesift.errors import ConfigError, DatasetError
from slidesift.io.slide import open_slide, read_thumb
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.manifest import ManifestError, read_manifest, write_manifest
from slidesift.prepare import prepare_tilesets
from slidesift.tileset import TileSetSpec

SPEC = TileSetSpec(tile=96, longest=480)


def test_prepare_builds_train_and_holdout_sets(tiny_cohort: Path, tmp_path: Path) -> None:
    cache = ThumbCache(tmp_path / "cache")
    p = prepare_tilesets(tiny_cohort, SPEC, cache=cache)
    m = read_manifest(tiny_cohort)
    assert [s.name for s in p.train.slides] == [e.name for e in m.split("train")]
    assert p.holdout is not None
    assert [s.name for s in p.holdout.slides] == [e.name for e in m.split("test")]
    assert p.holdout.rails == p.train.rails and p.holdout.overlaps == p.train.overlaps
    assert p.normalization is None
    counts = p.train.counts()
    assert counts[0] == counts[1] > 0


def test_second_run_reads_no_slide(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ThumbCache(tmp_path / "cache")
    first = prepare_tilesets(tiny_cohort, SPEC, cache=cache)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the slide was decoded again")

    monkeypatch.setattr(loading, "read_thumb", no_reading)
    monkeypatch.setattr(loading, "read_truth", no_reading)
    second = prepare_tilesets(tiny_cohort, SPEC, cache=cache)
    np.testing.assert_array_equal(second.train.th_x, first.train.th_x)
    assert second.train.rails == first.train.rails
    for a, b in zip(first.train.slides, second.train.slides, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.tumor, b.tumor)


def test_cache_keys_on_content_not_path(tiny_cohort: Path, tmp_path: Path) -> None:
    cache = ThumbCache(tmp_path / "cache")
    slide = next(iter(read_manifest(tiny_cohort))).slide
    calls = []

    def read() -> object:
        calls.append(1)
        with open_slide(slide) as s:
            return read_thumb(s, longest=300)

    thumb, key = cache.thumb(slide, read, longest=300)  # type: ignore[arg-type]
    copy = tmp_path / "renamed.svs"
    shutil.copy(slide, copy)
    again, key2 = cache.thumb(copy, read, longest=300)  # type: ignore[arg-type]
    assert key2 == key and len(calls) == 1
    np.testing.assert_array_equal(again.pixels, thumb.pixels)
    assert again.scale == thumb.scale and again.l0_size == thumb.l0_size
    _, key3 = cache.thumb(copy, read, longest=200)  # type: ignore[arg-type]
    assert key3 != key and len(calls) == 2
    with copy.open("ab") as fh:  # new content: a new key
        fh.write(b"\0")
    assert cache.digest(copy) == file_digest(copy) != file_digest(slide)
    npy = cache.root / "thumbs" / f"{key}.npy"
    npy.write_bytes(b"damaged")  # a damaged entry is rebuilt, not trusted
    _, key4 = cache.thumb(slide, read, longest=300)  # type: ignore[arg-type]
    assert key4 == key and len(calls) == 3
    assert np.load(npy, allow_pickle=False).shape == thumb.pixels.shape


def test_normalised_sets_carry_the_normaliser(tiny_cohort: Path, tmp_path: Path) -> None:
    cache = ThumbCache(tmp_path / "cache")
    raw = prepare_tilesets(tiny_cohort, SPEC, cache=cache, holdout=False)
    norm = prepare_tilesets(tiny_cohort, SPEC, cache=cache, normalize="reinhard", holdout=False)
    assert norm.normalization is not None and norm.normalization["method"] == "reinhard"
    assert not np.array_equal(raw.train.slides[0].pixels, norm.train.slides[0].pixels)
    again = prepare_tilesets(
        tiny_cohort, SPEC, cache=cache, normalization=norm.normalization, holdout=False
    )
    np.testing.assert_array_equal(again.train.slides[0].pixels, norm.train.slides[0].pixels)


def _copy_cohort(tiny_cohort: Path, dest: Path) -> Path:
    shutil.copytree(tiny_cohort.parent, dest)
    return dest / "manifest.csv"


def test_bad_cohorts_are_refused_with_the_reason(tiny_cohort: Path, tmp_path: Path) -> None:
    cache = ThumbCache(tmp_path / "cache")
    manifest = _copy_cohort(tiny_cohort, tmp_path / "cohort")
    entries = list(read_manifest(manifest))
    # a missing slide file
    missing = tmp_path / "cohort" / "missing.csv"
    write_manifest(missing, [entries[0], type(entries[0])(tmp_path / "nope.svs", None, "normal")])
    with pytest.raises(ManifestError, match=r"nope\.svs"):
        prepare_tilesets(missing, SPEC, cache=cache)
    # a tumor slide whose mask marks nothing
    empty_mask = tmp_path / "cohort" / "empty_mask.tif"
    with open_slide(entries[0].slide) as s:
        w, h = s.dimensions
    write_pyramidal_tiff(
        empty_mask, np.zeros((h, w), np.uint8), compression="deflate", nearest=True
    )
    bad = tmp_path / "cohort" / "bad.csv"
    write_manifest(bad, [type(entries[0])(entries[0].slide, empty_mask, "solid", "train")])
    with pytest.raises(DatasetError, match=r"paip_000.*marks no tumor"):
        prepare_tilesets(bad, SPEC, cache=cache)
    # no truth and not labelled normal
    nolabel = tmp_path / "cohort" / "nolabel.csv"
    write_manifest(nolabel, [type(entries[0])(entries[0].slide, None, "solid", "train")])
    with pytest.raises(DatasetError, match="no annotation and is not labelled normal"):
        prepare_tilesets(nolabel, SPEC, cache=cache)
    # every slide normal: one class only
    normal = tmp_path / "cohort" / "normal.csv"
    write_manifest(normal, [type(entries[0])(e.slide, None, "normal", "train") for e in entries])
    with pytest.raises(DatasetError, match="one class"):
        prepare_tilesets(normal, SPEC, cache=cache)
    # tiles larger than the thumbnails
    with pytest.raises(ConfigError, match="smaller thumbnails"):
        prepare_tilesets(manifest, TileSetSpec(tile=400, longest=300), cache=cache)
    # one subtype only for a subtype model
    one = tmp_path / "cohort" / "one.csv"
    write_manifest(one, [e for e in entries if e.label == "solid"])
    with pytest.raises(DatasetError, match="at least two subtype"):
        prepare_tilesets(one, TileSetSpec(tile=96, longest=480, classes="subtype"), cache=cache)


def test_held_out_set_is_the_val_split_when_there_is_one(tiny_cohort: Path, tmp_path: Path) -> None:
    m = read_manifest(tiny_cohort)
    test = m.split("test")
    rows = [replace(e, split="val") if e is test[0] else e for e in m]
    manifest = write_manifest(tiny_cohort.parent / "with_val.csv", rows)
    p = prepare_tilesets(manifest, SPEC, cache=ThumbCache(tmp_path / "cache"))
    assert p.holdout_split == "val" and p.holdout is not None
    assert [s.name for s in p.holdout.slides] == [test[0].name]
    plain = prepare_tilesets(tiny_cohort, SPEC, cache=ThumbCache(tmp_path / "cache"))
    assert plain.holdout_split == "test"
    with pytest.raises(ConfigError, match="already has 1 val rows"):
        prepare_tilesets(manifest, SPEC, val_fraction=0.5, cache=ThumbCache(tmp_path / "c"))


def test_val_fraction_draws_from_the_training_rows(tiny_cohort: Path, tmp_path: Path) -> None:
    m = read_manifest(tiny_cohort)
    # four training rows of one label: a quarter of them (one) goes to val
    rows = [replace(e, split="train", label="tumor") for e in m]
    manifest = write_manifest(tiny_cohort.parent / "all_train.csv", rows)
    p = prepare_tilesets(manifest, SPEC, val_fraction=0.25, seed=2,
                         cache=ThumbCache(tmp_path / "cache"))  # fmt: skip
    assert p.holdout_split == "val" and p.holdout is not None
    val = [e.name for e in p.manifest.split("val")]
    assert len(val) == 1 and [s.name for s in p.holdout.slides] == val
    assert sorted(s.name for s in p.train.slides) == sorted(e.name for e in m if e.name not in val)
