"""The tifffile tile reader against OpenSlide: pixel for pixel, on phantoms and real SVS files.

``reader="auto"`` may only pick tifffile where its pixels are OpenSlide's, so every comparison
here is exact equality: whole levels, regions across tile borders and outside the level,
random regions against the obvious reference (the level read whole by OpenSlide, then cut),
thumbnails from both readers, and the cases that must fall back to OpenSlide.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesift import ConfigError, SlideReadError, open_slide, read_thumb
from slidesift.cli.info import describe
from slidesift.io import resample, tiff_read
from slidesift.io.slide import Slide
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.io.tiff_read import IncompleteTile, TileCache
from slidesift.phantom import he_like_image

# --- phantoms ---------------------------------------------------------------------------------


def _segments(jpeg: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """A JPEG stream's marker segments up to and including SOS, and the scan data after it."""
    out, i = [], 2
    while True:
        marker, n = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        out.append((marker, jpeg[i : i + 2 + n]))
        i += 2 + n
        if marker == 0xDA:
            return out, jpeg[i:]


def _ids_123(segment: bytes, count_at: int, stride: int) -> bytes:
    """SOF/SOS with the component ids renumbered 1, 2, 3 (libjpeg then guesses YCbCr)."""
    seg = bytearray(segment)
    for k in range(seg[count_at]):
        seg[count_at + 1 + k * stride] = k + 1
    return bytes(seg)


def write_aperio_rgb(path: Path, levels: list[np.ndarray], tile: tuple[int, int]) -> Path:
    """An SVS whose JPEG tiles are RGB-coded as Aperio's are: shared tables (JPEGTables), no
    Adobe or JFIF marker and component ids 1, 2, 3, so only the photometric tag (RGB) says the
    samples are not YCbCr. ``tile`` is ``(th, tw)``."""
    th, tw = tile
    h0, w0 = levels[0].shape[:2]
    desc = f"Aperio Image Library v12.0.16\r\n{w0}x{h0} ({tw}x{th}) JPEG/RGB Q=80|MPP = 0.5"
    with tifffile.TiffWriter(path) as writer:
        for i, pixels in enumerate(levels):
            h, w = pixels.shape[:2]
            tables, tiles = None, []
            for y in range(0, h, th):
                for x in range(0, w, tw):
                    block = np.full((th, tw, 3), 255, np.uint8)
                    part = pixels[y : y + th, x : x + tw]
                    block[: part.shape[0], : part.shape[1]] = part
                    jpeg = bytes(
                        imagecodecs.jpeg8_encode(
                            block, level=80, colorspace="RGB", outcolorspace="RGB", optimize=False
                        )
                    )
                    segs, scan = _segments(jpeg)
                    shared = b"".join(s for m, s in segs if m in (0xDB, 0xC4))
                    assert tables in (None, b"\xff\xd8" + shared + b"\xff\xd9")
                    tables = b"\xff\xd8" + shared + b"\xff\xd9"
                    sof = next(s for m, s in segs if m == 0xC0)
                    sos = next(s for m, s in segs if m == 0xDA)
                    tiles.append(b"\xff\xd8" + _ids_123(sof, 9, 3) + _ids_123(sos, 4, 2) + scan)
            assert tables is not None
            writer.write(
                iter(tiles), shape=pixels.shape, dtype=np.uint8, tile=(th, tw),
                compression="jpeg", compressionargs={"outcolorspace": "RGB"}, photometric="rgb",
                description=desc if i == 0 else None, subfiletype=1 if i else 0,
                extratags=[(347, 7, len(tables), tables, True)], metadata=None,
            )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory, camelyon_like, paip_like) -> dict[str, Path]:
    """Slides of several layouts, by name.

    * ``camelyon``: generic TIFF, 4096 x 3072, YCbCr JPEG tiles of 256 (conftest);
    * ``paip``: Aperio-flavoured, 3000 x 2400 (conftest); its last level's downsample is 15.96;
    * ``aperio_rgb``: RGB-coded Aperio JPEG with shared tables, 900 x 700, tiles 128 wide and
      64 high, two levels;
    * ``odd``: Aperio-flavoured, 1201 x 997, tiles of 128: every level below 0 has a
      non-integer downsample (1.998...);
    * ``deflate``: random RGB, 500 x 300, Deflate tiles of 64, three levels;
    * ``predictor``: random RGB, Deflate with horizontal differencing, one level;
    * ``lzw_grey``: a random 0-255 mask, LZW, one channel, tiles of 64.
    """
    root = tmp_path_factory.mktemp("tiff_read")
    rng = np.random.default_rng(7)
    he, _ = he_like_image((700, 900), seed=11, nucleus_px=6.0)
    noise = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    predictor = root / "predictor.tif"
    tifffile.imwrite(
        predictor, noise, tile=(64, 64), compression="zlib", predictor=True, photometric="rgb"
    )
    return {
        "camelyon": camelyon_like.slide,
        "paip": paip_like.slide,
        "aperio_rgb": write_aperio_rgb(root / "rgb.svs", [he, he[::2, ::2].copy()], (64, 128)),
        "odd": write_pyramidal_tiff(
            root / "odd.svs", cv2.resize(he, (1201, 997)), mpp=0.5, flavor="aperio", tile=128
        ),
        "deflate": write_pyramidal_tiff(
            root / "deflate.tif", noise, compression="deflate", tile=64, max_levels=3
        ),
        "predictor": predictor,
        "lzw_grey": write_pyramidal_tiff(
            root / "grey.tif", noise[..., 0].copy(), compression="lzw", tile=64, nearest=True
        ),
    }


def _whole(slide: Slide, level: int, reader: str) -> np.ndarray:
    return slide.read_region(level, (0, 0), slide.level_dimensions[level], reader=reader)


def _integer(slide: Slide, level: int) -> bool:
    return slide.level_downsamples[level] == round(slide.level_downsamples[level])


# --- whole levels, regions, thumbnails ----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["camelyon", "paip", "aperio_rgb", "odd", "deflate", "predictor", "lzw_grey"]
)
def test_every_level_equals_openslide(phantoms, name) -> None:
    with open_slide(phantoms[name]) as slide:
        assert slide.format in ("aperio", "generic-tiff")
        for level in range(slide.level_count):
            ours = _whole(slide, level, "tifffile")
            assert np.array_equal(ours, _whole(slide, level, "openslide")), (name, level)
            # auto takes the tiles exactly where the downsample is an integer
            expected = "tifffile" if _integer(slide, level) else "openslide"
            assert slide.reader_for(level) == expected, (name, level)


def test_rgb_coded_jpeg_needs_the_photometric_tag(phantoms) -> None:
    """Decoded with libjpeg's own guess (YCbCr) the Aperio-like tiles come out false-coloured;
    the reader forces RGB from the photometric tag, as OpenSlide does."""
    with tifffile.TiffFile(phantoms["aperio_rgb"]) as tif:
        page = tif.pages.first
        assert page.photometric == 2 and page.jpegtables
        tif.filehandle.seek(page.dataoffsets[3])
        data = tif.filehandle.read(page.databytecounts[3])
        guessed = imagecodecs.jpeg8_decode(data, tables=page.jpegtables)
    with open_slide(phantoms["aperio_rgb"]) as slide:
        tile = slide.read_region(0, (3 * 128, 0), (128, 64), reader="tifffile")
        assert np.array_equal(
            tile, slide.read_region(0, (3 * 128, 0), (128, 64), reader="openslide")
        )
    assert np.abs(guessed.astype(int) - tile).max() > 60


REGIONS = [
    ((200, 190), (130, 140)),  # four tiles around (256, 256)
    ((255, 255), (2, 2)),  # the pixels at a tile corner
    ((-37, -5), (300, 90)),  # above and left of the level: white there
    ((3900, 3000), (400, 300)),  # past the right and bottom edges (camelyon level 0)
    ((4096, 10), (20, 20)),  # wholly outside
    ((0, 0), (4096, 300)),  # full-width band across a tile row
]


@pytest.mark.parametrize(("xy", "size"), REGIONS)
def test_regions_across_tile_borders_and_edges(phantoms, xy, size) -> None:
    with open_slide(phantoms["camelyon"]) as slide:
        ours = slide.read_region(0, xy, size, reader="tifffile")
        theirs = slide.read_region(0, xy, size, reader="openslide")
        level1 = slide.read_region(1, xy, size, reader="tifffile")
        assert np.array_equal(level1, slide.read_region(1, xy, size, reader="openslide"))
    assert ours.shape == (size[1], size[0], 3)
    assert np.array_equal(ours, theirs)


THUMBS = [
    ("camelyon", 4096, 2),  # level 0, read as it is
    ("camelyon", 1500, 1),  # level 1 resampled
    ("camelyon", 1500, 3),
    ("paip", 3000, 2),
    ("paip", 1000, 2),  # level 1 (1500 px) resampled
    ("aperio_rgb", 600, 2),
    ("deflate", 200, 2),
    ("lzw_grey", 499, 1),
    ("odd", 1201, 2),  # level 0: tifffile
    ("odd", 500, 2),  # level 1 (downsample 1.998): OpenSlide
]


@pytest.mark.parametrize(("name", "longest", "workers"), THUMBS)
def test_thumbnails_equal_openslide(phantoms, monkeypatch, name, longest, workers) -> None:
    monkeypatch.setattr(resample, "BAND_BYTES", 1 << 20)  # many bands, cut across tiles
    with open_slide(phantoms[name]) as slide:
        auto = read_thumb(slide, longest=longest, workers=workers)
        theirs = read_thumb(slide, longest=longest, workers=workers, reader="openslide")
        assert auto.reader == ("tifffile" if _integer(slide, auto.level) else "openslide")
    assert theirs.reader == "openslide"
    assert (auto.level, auto.size, auto.scale) == (theirs.level, theirs.size, theirs.scale)
    assert np.array_equal(auto.pixels, theirs.pixels)


def test_parallel_bands_share_the_tiles(phantoms, monkeypatch) -> None:
    """Three threads reading bands that cut tiles decode each tile about once between them."""
    monkeypatch.setattr(resample, "BAND_BYTES", 1 << 20)
    caches: list[TileCache] = []
    make = Slide.band_cache

    def spy(self, level, workers):
        caches.append(make(self, level, workers))
        return caches[-1]

    monkeypatch.setattr(Slide, "band_cache", spy)
    with open_slide(phantoms["camelyon"]) as slide:
        ours = read_thumb(slide, longest=3000, workers=3, reader="tifffile")  # from level 0
        theirs = read_thumb(slide, longest=3000, workers=3, reader="openslide")
    assert np.array_equal(ours.pixels, theirs.pixels)
    (cache,) = caches
    assert cache.peak_bytes <= cache.max_bytes + 256 * 256 * 3
    assert 16 * 12 <= cache.decoded < 1.5 * 16 * 12  # 192 tiles; no band decodes its own


# --- random regions against the obvious reference -----------------------------------------------

_REFERENCE: dict[tuple[str, int], np.ndarray] = {}


def _reference(phantoms, name: str, level: int) -> np.ndarray:
    """The level read whole by OpenSlide from (0, 0) (no sub-pixel offset: exact on every
    level), padded with 1000 px of white on each side."""
    key = (name, level)
    if key not in _REFERENCE:
        with open_slide(phantoms[name]) as slide:
            whole = _whole(slide, level, "openslide")
        _REFERENCE[key] = np.pad(whole, ((1000, 1000), (1000, 1000), (0, 0)), constant_values=255)
    return _REFERENCE[key]


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["paip", "aperio_rgb", "odd", "deflate", "lzw_grey"]),
    level=st.integers(0, 5),
    fx=st.floats(-0.2, 1.1),
    fy=st.floats(-0.2, 1.1),
    w=st.integers(1, 500),
    h=st.integers(1, 500),
    budget=st.sampled_from([None, 0, 200_000, 10**8]),
)
def test_random_regions_match_the_whole_level(phantoms, name, level, fx, fy, w, h, budget) -> None:
    with open_slide(phantoms[name]) as slide:
        level = min(level, slide.level_count - 1)
        lw, lh = slide.level_dimensions[level]
        x, y = round(fx * lw), round(fy * lh)
        cache = None if budget is None else TileCache(budget)
        ours = slide.read_region(level, (x, y), (w, h), reader="tifffile", cache=cache)
        again = slide.read_region(level, (x, y), (w, h), reader="tifffile", cache=cache)
    ref = _reference(phantoms, name, level)[1000 + y : 1000 + y + h, 1000 + x : 1000 + x + w]
    assert ref.shape == (h, w, 3)  # the padding covers every drawn region
    assert np.array_equal(ours, ref)
    assert np.array_equal(again, ref)


# --- real slides --------------------------------------------------------------------------------


def test_cmu1_rgb_jpeg_with_shared_tables(cmu1_svs: Path) -> None:
    with open_slide(cmu1_svs) as slide:
        assert slide.reader_for(0) == "tifffile"
        assert np.array_equal(_whole(slide, 0, "tifffile"), _whole(slide, 0, "openslide"))
        for longest in (2967, 1000):
            auto = read_thumb(slide, longest=longest)
            theirs = read_thumb(slide, longest=longest, reader="openslide")
            assert auto.reader == "tifffile"
            assert np.array_equal(auto.pixels, theirs.pixels)


def test_tcga_jpeg2000_level0_and_the_level_that_falls_back(tcga_svs: Path) -> None:
    with open_slide(tcga_svs) as slide:
        lines = describe(slide).splitlines()
        assert lines[1:3] == [
            "  level 0: 4443 x 3567 px (downsample 1, tifffile)",
            "  level 1: 2221 x 1783 px (downsample 2.00051, openslide)",
        ]
        assert np.array_equal(_whole(slide, 0, "tifffile"), _whole(slide, 0, "openslide"))
        assert slide.reader_for(0) == "tifffile"
        assert slide.reader_for(1) == "openslide"  # downsample 2.0005
        l0 = read_thumb(slide, longest=3000)
        l1 = read_thumb(slide, longest=2000)
        assert (l0.level, l0.reader, l1.level, l1.reader) == (0, "tifffile", 1, "openslide")
        assert np.array_equal(l0.pixels, read_thumb(slide, longest=3000, reader="openslide").pixels)
        assert np.array_equal(l1.pixels, read_thumb(slide, longest=2000, reader="openslide").pixels)
        # level 1's own tiles, read from the origin where OpenSlide adds no offset
        region = ((0, 0), (700, 500))
        assert np.array_equal(
            slide.read_region(1, *region, reader="tifffile"),
            slide.read_region(1, *region, reader="openslide"),
        )


# --- fallbacks and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"compression": "packbits", "photometric": "rgb"}, "compression 32773"),
        ({"compression": "jpeg", "photometric": "minisblack"}, "compression 7 with photometric 1"),
    ],
)
def test_unsupported_compression_goes_through_openslide(tmp_path, kwargs, why) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    if kwargs["photometric"] == "minisblack":
        img = img[..., 0].copy()
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, img, tile=(64, 64), **kwargs)
    with open_slide(path) as slide:
        assert slide.format == "generic-tiff"
        assert slide.reader_for(0) == "openslide"
        thumb = read_thumb(slide, longest=150)
        with pytest.raises(SlideReadError, match=why):
            slide.read_region(0, (0, 0), (10, 10), reader="tifffile")
    assert thumb.reader == "openslide"


def test_non_integer_downsample_goes_through_openslide(phantoms) -> None:
    """Bands below row 0 of level 1 (downsample 1.998) are shifted by OpenSlide; auto leaves
    them to it, a forced tifffile reader gives the tiles' own pixels."""
    with open_slide(phantoms["odd"]) as slide:
        assert slide.level_downsamples[1] != 2.0
        region = ((0, 100), (300, 200))
        shifted = slide.read_region(1, *region, reader="openslide")
        assert np.array_equal(slide.read_region(1, *region), shifted)  # auto: OpenSlide's
        tiles = slide.read_region(1, *region, reader="tifffile")
        assert np.array_equal(tiles, _whole(slide, 1, "openslide")[100:300, :300])
    assert not np.array_equal(tiles, shifted)


def test_a_decoder_that_differs_is_caught_by_the_check(phantoms, monkeypatch) -> None:
    decode = tiff_read._decode

    def off_by_one(lv, data):
        tile = decode(lv, data).copy()
        tile[5, 7, 1] ^= 1
        return tile

    monkeypatch.setattr(tiff_read, "_decode", off_by_one)
    with open_slide(phantoms["paip"]) as slide:
        assert slide.reader_for(0) == "openslide"
        auto = read_thumb(slide, longest=3000)
        forced = read_thumb(slide, longest=3000, reader="tifffile")
        theirs = read_thumb(slide, longest=3000, reader="openslide")
    assert auto.reader == "openslide" and np.array_equal(auto.pixels, theirs.pixels)
    assert not np.array_equal(forced.pixels, theirs.pixels)


def _tile_of(path: Path, row: int, col: int) -> tuple[int, int]:
    with open_slide(path) as slide:
        lv = slide._tiles.levels[0]
        return int(lv.offsets[row, col]), int(lv.counts[row, col])


def test_a_cut_jpeg_tile_is_left_to_openslide(phantoms, tmp_path) -> None:
    """libjpeg only warns on a stream cut short; OpenSlide fails, and so must we."""
    path = tmp_path / "cut.tif"
    shutil.copy(phantoms["camelyon"], path)
    offset, count = _tile_of(path, 1, 2)
    with path.open("r+b") as fh:
        fh.seek(offset + count // 2)
        fh.write(bytes(count - count // 2))
    with open_slide(path) as slide:
        with pytest.raises(IncompleteTile, match="EOI"):
            slide.read_region(0, (512, 256), (256, 256), reader="tifffile")
        with pytest.raises(SlideReadError, match="decoding level 0 at"):  # OpenSlide's error
            slide.read_region(0, (512, 256), (256, 256))
        good = slide.read_region(0, (0, 0), (256, 256))
    with open_slide(phantoms["camelyon"]) as slide:
        assert np.array_equal(good, slide.read_region(0, (0, 0), (256, 256), reader="openslide"))


def test_a_file_cut_short_is_a_clear_error(phantoms, tmp_path) -> None:
    path = tmp_path / "short.tif"
    shutil.copy(phantoms["camelyon"], path)
    offset, count = _tile_of(path, 11, 15)
    with open_slide(path) as slide:
        os.truncate(path, offset + count // 2)  # the file changes under the open slide
        with pytest.raises(SlideReadError, match="truncated") as err:
            slide.read_region(0, (3840, 2816), (256, 256), reader="tifffile")
    assert "bytes listed" in str(err.value) and "short.tif" in str(err.value)


def test_missing_aperio_tiles_are_white(phantoms) -> None:
    with open_slide(phantoms["paip"]) as slide:
        tiles = slide._tiles
        lv = tiles.levels[0]
        counts = lv.counts.copy()
        counts[1, 2] = 0  # as Aperio marks a tile it did not scan
        tiles.levels[0] = dataclasses.replace(lv, counts=counts)
        out = slide.read_region(0, (500, 200), (300, 100), reader="tifffile")
        full = slide.read_region(0, (500, 200), (300, 100), reader="openslide")
    th, tw = lv.tile[1], lv.tile[0]
    inside = (slice(th - 200, min(100, 2 * th - 200)), slice(2 * tw - 500, 3 * tw - 500))
    assert (out[inside] == 255).all()
    mask = np.ones(out.shape[:2], bool)
    mask[inside] = False
    assert np.array_equal(out[mask], full[mask])


def test_reader_choice_from_the_environment(phantoms, monkeypatch, tmp_path) -> None:
    with open_slide(phantoms["deflate"]) as slide:
        monkeypatch.setenv("SLIDESIFT_READER", "openslide")
        assert read_thumb(slide, longest=100).reader == "openslide"
        monkeypatch.setenv("SLIDESIFT_READER", "tifffile")
        assert read_thumb(slide, longest=100).reader == "tifffile"
        monkeypatch.setenv("SLIDESIFT_READER", "fast")
        with pytest.raises(ConfigError, match="SLIDESIFT_READER"):
            read_thumb(slide, longest=100)
        with pytest.raises(ConfigError, match="reader"):
            read_thumb(slide, longest=100, reader="libtiff")
    png = tmp_path / "p.png"
    cv2.imwrite(str(png), np.zeros((20, 30, 3), np.uint8))
    with open_slide(png) as plain:
        assert read_thumb(plain, longest=10, reader="tifffile").reader == "memory"
