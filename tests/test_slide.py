"""Opening slides and reading thumbnails: real SVS files, written pyramids, plain images."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesift import ConfigError, SlideReadError, open_slide, read_thumb
from slidesift.cli.info import describe
from slidesift.io import resample
from slidesift.io.resample import area_resample, nearest_resample
from slidesift.io.slide import Slide
from slidesift.io.tiff import write_pyramidal_tiff


def _rows(arr: np.ndarray):
    return lambda y0, y1: arr[y0:y1]


# --- real slides -----------------------------------------------------------------------------


def test_cmu1_single_level_svs_opens_with_mpp(cmu1_svs: Path) -> None:
    with open_slide(cmu1_svs) as slide:
        assert slide.format == "aperio"
        assert slide.level_dimensions == ((2220, 2967),)
        assert slide.mpp == pytest.approx((0.499, 0.499))
        thumb = read_thumb(slide, longest=1000)
        full = slide.read_region(0, (0, 0), slide.dimensions)
    assert thumb.pixels.shape == (1000, 748, 3)
    assert thumb.level == 0
    assert thumb.scale == pytest.approx((2220 / 748, 2967 / 1000))
    assert thumb.mpp == pytest.approx((0.499 * 2220 / 748, 0.499 * 2967 / 1000))
    expected = cv2.resize(full, (748, 1000), interpolation=cv2.INTER_AREA)
    assert np.abs(thumb.pixels.astype(int) - expected).max() <= 1
    # Real H&E: mostly pink/purple tissue, not blank.
    assert thumb.pixels.std() > 10


def test_tcga_two_level_jp2k_svs_reads_from_level_1(tcga_svs: Path) -> None:
    with open_slide(tcga_svs) as slide:
        assert slide.level_count == 2
        assert slide.mpp is None
        assert "MPP: none" in describe(slide)
        thumb = read_thumb(slide, longest=2000)
        level1 = slide.read_region(1, (0, 0), slide.level_dimensions[1])
        with pytest.raises(ConfigError, match="no MPP"):
            read_thumb(slide, mpp=8.0)
    assert thumb.level == 1  # 2221 px is the smallest level still >= 2000
    assert max(thumb.size) == 2000
    assert thumb.mpp is None
    expected = cv2.resize(level1, thumb.size, interpolation=cv2.INTER_AREA)
    # Level 1's downsample is 2.0005, not 2: OpenSlide places bands that start below row 0 with
    # a sub-pixel shift (<= 0.25 px here) that it interpolates. Close, not exact.
    diff = np.abs(thumb.pixels.astype(int) - expected)
    assert diff.mean() < 1.5
    assert np.abs(thumb.pixels.astype(int).mean() - expected.mean()) < 0.1
    # Level 0 is chosen when the target exceeds level 1.
    with open_slide(tcga_svs) as slide:
        assert read_thumb(slide, longest=3000).level == 0


def test_truncated_svs_is_a_clear_error(cmu1_svs: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.svs"
    broken.write_bytes(cmu1_svs.read_bytes()[:300_000])
    with pytest.raises(SlideReadError, match="truncated or corrupt") as err:
        slide = open_slide(broken)
        read_thumb(slide, longest=500)
    assert "broken.svs" in str(err.value)


# --- written pyramids -------------------------------------------------------------------------


def test_pyramidal_tiff_level_choice_and_mpp(camelyon_like) -> None:
    with open_slide(camelyon_like.slide) as slide:
        assert slide.format == "generic-tiff"
        assert slide.level_dimensions[:3] == ((4096, 3072), (2048, 1536), (1024, 768))
        assert slide.mpp == pytest.approx((0.25, 0.25))
        exact = read_thumb(slide, longest=1024)
        between = read_thumb(slide, longest=1500)
        by_mpp = read_thumb(slide, mpp=1.0)
    assert exact.level == 2 and exact.size == (1024, 768)
    assert between.level == 1 and between.size == (1500, 1125)
    assert by_mpp.level == 2 and by_mpp.size == (1024, 768)
    assert by_mpp.mpp == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize("reader", ["openslide", "tifffile"])
def test_thumbnail_never_reads_a_whole_large_level(camelyon_like, monkeypatch, reader) -> None:
    """Reads happen in bands whose size is bounded, not as one level-0 read; the tile reader
    keeps a bounded cache and decodes each tile of the level once."""
    monkeypatch.setattr(resample, "BAND_BYTES", 1 << 20)
    sizes: list[int] = []
    caches = set()
    original = Slide.read_region

    def spy(self, level, xy, size, **kw):
        if kw:  # not open_slide's look at the smallest level
            sizes.append(size[0] * size[1])
            caches.add(kw["cache"])
        return original(self, level, xy, size, **kw)

    monkeypatch.setattr(Slide, "read_region", spy)
    with open_slide(camelyon_like.slide) as slide:
        thumb = read_thumb(slide, longest=3000, workers=1, reader=reader)  # from level 0
    assert thumb.level == 0 and thumb.reader == reader
    assert max(sizes) * 4 <= 4 * (1 << 20)  # each band <= BAND_BYTES of RGBA
    assert sum(sizes) >= 4096 * 3072  # yet every row was read once
    (cache,) = caches
    if reader == "tifffile":
        tile_row = 16 * 256 * 256 * 3  # 4096 px across in 256-px tiles
        assert cache.max_bytes == 3 * tile_row  # workers + 2 tile rows
        assert cache.peak_bytes <= cache.max_bytes + 256 * 256 * 3
        assert cache.decoded == 16 * 12  # every tile of level 0 once, though bands cut them
    else:
        assert cache is None


def test_slide_smaller_than_target_is_not_upsampled(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), img[..., ::-1])
    with open_slide(path) as slide:
        thumb = read_thumb(slide, longest=6000)
    assert thumb.size == (200, 120)
    assert np.array_equal(thumb.pixels, img)


# --- plain images and bad input -----------------------------------------------------------------


def test_plain_jpeg_and_png(tmp_path: Path) -> None:
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48] = (200, 100, 150)
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), img[..., ::-1])
    with open_slide(png) as slide:
        assert slide.format == "image"
        assert np.array_equal(slide.read_region(0, (0, 0), (96, 64)), img)
        assert slide.mpp is None


def test_png_renamed_svs_is_refused_with_rename_hint(tmp_path: Path) -> None:
    img = np.full((32, 32, 3), 128, np.uint8)
    fake = tmp_path / "slide.svs"
    _, buf = cv2.imencode(".png", img)
    fake.write_bytes(buf.tobytes())
    with pytest.raises(SlideReadError, match=r"PNG image but is named '\.svs'") as err:
        open_slide(fake)
    assert "rename it to slide.png" in str(err.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "no such file"), (b"", "empty"), (b"hello world" * 10, "not a format")],
)
def test_missing_empty_and_unknown_files(tmp_path: Path, content, match) -> None:
    path = tmp_path / "x.svs"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SlideReadError, match=match):
        open_slide(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SlideReadError, match="directory"):
        open_slide(tmp_path)


def test_bad_downsample_options(camelyon_like) -> None:
    with open_slide(camelyon_like.slide) as slide:
        for kwargs in ({}, {"longest": 100, "mpp": 1.0}, {"longest": 0}, {"mpp": -1.0}):
            with pytest.raises(ConfigError):
                read_thumb(slide, **kwargs)


def test_rgba_transparency_is_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent
    path = tmp_path / "t.png"
    cv2.imwrite(str(path), rgba[..., [2, 1, 0, 3]])
    with open_slide(path) as slide:
        px = slide.read_region(0, (0, 0), (10, 10))
    assert (px[:5] == (255, 0, 0)).all()
    assert (px[5:] == 255).all()


def test_written_tiff_with_levels_round_trips(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    path = write_pyramidal_tiff(tmp_path / "x.tif", img, compression="deflate", tile=64)
    with open_slide(path) as slide:
        assert slide.level_count >= 3
        assert np.array_equal(slide.read_region(0, (0, 0), (500, 300)), img)


# --- resampling against the whole-image reference ----------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    src_w=st.integers(1, 300),
    src_h=st.integers(1, 300),
    fx=st.floats(0.05, 1.0),
    fy=st.floats(0.05, 1.0),
    band_bytes=st.integers(64, 100_000),
    seed=st.integers(0, 2**16),
)
def test_area_resample_matches_cv2_whole_image(src_w, src_h, fx, fy, band_bytes, seed) -> None:
    src = np.random.default_rng(seed).integers(0, 256, (src_h, src_w, 3), dtype=np.uint8)
    dst = (max(1, round(src_w * fx)), max(1, round(src_h * fy)))
    old = resample.BAND_BYTES
    resample.BAND_BYTES = band_bytes
    try:
        ours = area_resample(_rows(src), (src_w, src_h), dst)
    finally:
        resample.BAND_BYTES = old
    ref = cv2.resize(src, dst, interpolation=cv2.INTER_AREA).reshape(dst[1], dst[0], 3)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


@settings(max_examples=40, deadline=None)
@given(
    src_w=st.integers(1, 200),
    src_h=st.integers(1, 200),
    dst_w=st.integers(1, 250),
    dst_h=st.integers(1, 250),
    seed=st.integers(0, 2**16),
)
def test_nearest_resample_matches_centre_formula(src_w, src_h, dst_w, dst_h, seed) -> None:
    src = np.random.default_rng(seed).integers(0, 4, (src_h, src_w, 1), dtype=np.uint8)
    ours = nearest_resample(_rows(src), (src_w, src_h), (dst_w, dst_h))
    from fractions import Fraction

    rows = [int((i + Fraction(1, 2)) * src_h / dst_h) for i in range(dst_h)]
    cols = [int((j + Fraction(1, 2)) * src_w / dst_w) for j in range(dst_w)]
    assert np.array_equal(ours, src[rows][:, cols])


def test_copy_of_real_svs_under_another_name_still_opens(cmu1_svs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "renamed.svs"
    shutil.copy(cmu1_svs, copy)
    with open_slide(copy) as slide:
        assert slide.dimensions == (2220, 2967)
