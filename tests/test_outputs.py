"""The files of one segmented slide: the PNG encoder, the output choice, parallel writing."""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from slidesift.assemble import assemble
from slidesift.errors import ConfigError, OutputError
from slidesift.io.geojson import mask_to_geojson, parse_geojson
from slidesift.io.outputs import encode_png, location_map_image, write_png
from slidesift.io.polygons import rasterize
from slidesift.phantom import he_like_image
from slidesift.segment import SegmentResult
from slidesift.segment_outputs import (
    OUTPUT_KINDS,
    PREVIEW_KINDS,
    PREVIEW_PX,
    SUFFIXES,
    OutputSpec,
    _preview_factor,
    output_path,
    tile_table_csv,
    write_segmentation,
)
from slidesift.sift import SiftSpec, measure_tiles, sift
from slidesift.tiles import TileGrid


def _decoded(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The pixels as OpenCV (RGB order restored) and as Pillow read them."""
    cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if cv.ndim == 3:
        cv = cv[..., ::-1]
    return cv, np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("shape", [(37, 53, 3), (37, 53), (1, 1, 3), (5, 1)])
def test_png_round_trips_rgb_and_grey(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img[: shape[0] // 2] = 200  # flat rows next to noisy ones: the "up" filter wraps
    cv, pil = _decoded(encode_png(img))
    assert np.array_equal(cv, img) and np.array_equal(pil, img)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 61])
def test_png_masks_are_one_bit_and_exact(width: int) -> None:
    mask = np.random.default_rng(width).random((23, width)) < 0.4
    data = encode_png(mask)
    assert data[24:26] == bytes([1, 0])  # IHDR: bit depth 1, greyscale
    cv, pil = _decoded(data)
    assert np.array_equal(cv > 0, mask) and np.array_equal(pil.astype(bool), mask)


def test_png_chunks_are_valid_and_the_bytes_depend_only_on_the_pixels() -> None:
    pixels, _ = he_like_image((120, 90), seed=2)
    data = encode_png(pixels)
    assert data == encode_png(pixels.copy()) == encode_png(np.asfortranarray(pixels))
    pos = 8
    while pos < len(data):  # every chunk's CRC is right (a strict reader checks them)
        (length,) = np.frombuffer(data[pos : pos + 4], ">u4")
        body = data[pos + 4 : pos + 8 + length]
        assert int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big") == zlib.crc32(body)
        pos += 12 + int(length)
    assert pos == len(data) and data.endswith(b"IEND\xaeB`\x82")


def test_png_refuses_what_it_cannot_encode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        encode_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(OutputError, match=r"bad\.png"):
        write_png(tmp_path / "bad.png", np.zeros((0, 4), np.uint8))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- write_segmentation

CLASSES = ("non-tumor", "tumor")
ALL_FILES = {"mask.png", "overlay.png", "errors.png", "tumor.geojson", "tiles.csv",
             "locations.png"}  # fmt: skip


@pytest.fixture(scope="module")
def segmented() -> tuple[SegmentResult, np.ndarray]:
    """A 700 x 900 px segmentation (a shifted truth as its mask, random probabilities) and the
    truth: the files of a slide without a model."""
    pixels, truth = he_like_image((700, 900), seed=5, nucleus_px=4.0)
    grid = TileGrid.from_stride(pixels.shape[:2], tile=64, stride=32)
    sifted = sift(measure_tiles(pixels, grid, SiftSpec()))
    p = np.random.default_rng(0).random((*grid.grid_shape, 1)).astype(np.float32)
    probs = np.concatenate([1 - p, p], axis=2)
    mask = np.roll(truth, 25, axis=1)
    result = SegmentResult(
        pixels, grid, sifted, probs, sifted.keep, CLASSES,
        assemble(grid, sifted.keep, probs, CLASSES), mask, "test", {},
    )  # fmt: skip
    return result, truth


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (None, ALL_FILES),
        ("all", ALL_FILES),
        ("mask", {"mask.png"}),
        ("geojson,tiles", {"tumor.geojson", "tiles.csv"}),
        (("Overlay", " errors ", "locations"), {"overlay.png", "errors.png", "locations.png"}),
        (OutputSpec(("mask", "geojson"), preview_px=None), {"mask.png", "tumor.geojson"}),
    ],
)
def test_outputs_pick_exactly_the_files_asked(
    segmented: tuple[SegmentResult, np.ndarray],
    tmp_path: Path,
    outputs: object,
    expected: set[str],
) -> None:
    result, truth = segmented
    written = write_segmentation(tmp_path, "s", result, truth, outputs=outputs)  # type: ignore[arg-type]
    assert set(_files(tmp_path)) == {f"s_{f}" for f in expected}
    assert [p.name for p in written.values()] == [
        f"s_{SUFFIXES[k]}" for k in OUTPUT_KINDS if SUFFIXES[k] in expected
    ]
    assert all(output_path(tmp_path, "s", k) == p for k, p in written.items())


def test_no_error_map_without_truth_and_stale_files_are_removed(
    segmented: tuple[SegmentResult, np.ndarray], tmp_path: Path
) -> None:
    result, truth = segmented
    write_segmentation(tmp_path, "s", result, truth)
    assert len(_files(tmp_path)) == 6
    # a rerun without truth and with fewer kinds leaves no file of the earlier run behind
    written = write_segmentation(tmp_path, "s", result, None, outputs="errors,overlay,mask")
    assert list(written) == ["mask", "overlay"]
    assert set(_files(tmp_path)) == {"s_mask.png", "s_overlay.png"}


def test_unknown_output_names_are_config_errors_listing_the_valid_ones(
    segmented: tuple[SegmentResult, np.ndarray], tmp_path: Path
) -> None:
    result, _ = segmented
    every = "mask, overlay, errors, geojson, tiles, locations, or all"
    with pytest.raises(ConfigError, match=rf"outputs='overlays,pdf': names from {every}"):
        write_segmentation(tmp_path, "s", result, outputs="mask,overlays,pdf")
    with pytest.raises(ConfigError, match="at least one kind"):
        OutputSpec.of(" , ")
    with pytest.raises(ConfigError, match="outputs"):
        OutputSpec.of([1, 2])  # type: ignore[list-item]
    for bad in (8, 0, True, 100.0):
        with pytest.raises(ConfigError, match="preview_px"):
            OutputSpec(preview_px=bad)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())  # refused before anything was written
    assert OutputSpec.of("tiles,mask,tiles") == OutputSpec(("mask", "tiles"))
    assert OutputSpec(preview_px=np.int64(300)).to_dict() == {  # type: ignore[arg-type]
        "kinds": list(OUTPUT_KINDS),
        "preview_px": 300,
    }


def test_parallel_writing_gives_the_same_bytes_as_serial(
    segmented: tuple[SegmentResult, np.ndarray], tmp_path: Path
) -> None:
    result, truth = segmented
    for threads in (1, 2, 6):
        write_segmentation(tmp_path / str(threads), "s", result, truth, threads=threads)
    serial = _files(tmp_path / "1")
    assert len(serial) == 6 and all(serial.values())
    assert _files(tmp_path / "2") == serial == _files(tmp_path / "6")
    # no temporary file is left behind (every file went through io.atomic)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_previews_have_the_documented_size(
    segmented: tuple[SegmentResult, np.ndarray], tmp_path: Path
) -> None:
    result, truth = segmented
    # the smallest whole factor: 6000 px by 3 to 2000, 15000 by 8 to 1875, 2001 by 2
    assert _preview_factor((4839, 6000, 3), PREVIEW_PX) == 3
    assert _preview_factor((15000, 9000), PREVIEW_PX) == 8
    assert _preview_factor((2001, 10), PREVIEW_PX) == 2
    assert _preview_factor((2000, 2000), PREVIEW_PX) == 1
    assert _preview_factor((4839, 6000), None) == 1
    sizes = {}
    for px in (PREVIEW_PX, 300, None):
        folder = tmp_path / str(px)
        write_segmentation(folder, "s", result, truth, outputs=OutputSpec(preview_px=px))
        for kind in PREVIEW_KINDS:
            data = (folder / f"s_{kind}.png").read_bytes()
            sizes[px, kind] = cv2.imdecode(np.frombuffer(data, np.uint8), 1).shape[:2]
        mask = cv2.imread(str(folder / "s_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask > 0, result.mask)  # the mask is always full size
    for kind in PREVIEW_KINDS:  # 700 x 900: under 2000 px it stays whole; 900 / 3 = 300
        assert sizes[PREVIEW_PX, kind] == sizes[None, kind] == (700, 900)
        assert sizes[300, kind] == (233, 300)
    # the 300-px locations picture: the 3 x 3 block means, the kept area at block centres
    shown = cv2.imread(str(tmp_path / "300" / "s_locations.png"))[..., ::-1]
    kept = result.grid.location_map(result.keep)[1:699:3, 1:900:3]
    small = cv2.resize(result.pixels[:699], (300, 233), interpolation=cv2.INTER_AREA)
    assert np.array_equal(shown, location_map_image(small, kept))


def test_the_location_map_dims_what_no_kept_tile_covers() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    kept = np.zeros((40, 50), bool)
    kept[5:20, 10:45] = True
    shown = location_map_image(pixels, kept, dim=0.25)
    assert np.array_equal(shown[kept], pixels[kept])
    assert np.array_equal(shown[~kept], (pixels[~kept] * 0.25).astype(np.uint8))


def test_the_report_finds_the_default_pictures_and_names_what_is_missing(
    segmented: tuple[SegmentResult, np.ndarray], tmp_path: Path
) -> None:
    from slidesift.report import build_report

    result, truth = segmented
    write_segmentation(tmp_path / "a", "a", result, truth)
    write_segmentation(tmp_path / "b", "b", result, None, outputs="mask,geojson,tiles")
    (tmp_path / "scores.csv").write_text("slide,status\na,ok\nb,ok\n", encoding="utf-8")
    page = " ".join(build_report(tmp_path).split())
    for caption in ("overlay", "error map", "tile locations"):
        assert f'alt="{caption} of a"' in page
        assert f'alt="{caption} of b"' not in page
    assert "No pictures found for this slide: segment and evaluate write them unless " in page
    assert "--outputs leaves overlay, errors and locations out" in page
    write_segmentation(tmp_path / "b", "b", result, None, outputs="overlay")
    page = " ".join(build_report(tmp_path).split())
    assert 'alt="overlay of b"' in page
    assert "No error map: this slide has no truth (or --outputs left errors out)" in page
    assert "unless --outputs leaves locations out" in page


def _reference_table(result: SegmentResult, scale: tuple[float, float]) -> str:
    """The tile table as csv.writer writes it cell by cell (the format tile_table_csv keeps)."""
    xy = result.grid.th_xy()
    st = result.sifted
    probs = result.probs.reshape(-1, len(result.classes))
    labels = np.where(result.keep.ravel(), np.argmax(probs, axis=1), 0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["t_row", "t_col", "th_x", "th_y", "l0_x", "l0_y", "background", "entropy",
                "keep_background", "keep_rails", "keep", *[f"p_{c}" for c in result.classes],
                "label"])  # fmt: skip
    kb, kr = st.keep_background.ravel(), st.keep_rails.ravel()
    for i in range(len(result.grid)):
        w.writerow(
            [*divmod(i, result.grid.n_cols), int(xy[i, 0]), int(xy[i, 1]),
             f"{xy[i, 0] * scale[0]:.1f}", f"{xy[i, 1] * scale[1]:.1f}",
             f"{st.stats.background.ravel()[i]:.6f}", f"{st.stats.entropy.ravel()[i]:.6f}",
             int(kb[i]), int(kr[i]), int(kb[i] and kr[i]), *[f"{v:.6f}" for v in probs[i]],
             result.classes[int(labels[i])]]
        )  # fmt: skip
    return buf.getvalue()


def test_the_tile_table_and_the_geojson_hold_the_result(
    segmented: tuple[SegmentResult, np.ndarray], tmp_path: Path
) -> None:
    result, truth = segmented
    odd = replace(result, classes=("non, tumor", 'tu"mor'))  # names csv must quote
    for r in (result, odd):
        assert tile_table_csv(r, (16.25, 15.5)) == _reference_table(r, (16.25, 15.5))
    written = write_segmentation(tmp_path, "s", result, truth, outputs="geojson,tiles")
    rows = list(csv.DictReader(written["tiles"].open(encoding="utf-8")))
    assert len(rows) == len(result.grid) and rows[-1]["keep"] in ("0", "1")
    polygons = parse_geojson(written["geojson"])
    assert np.array_equal(rasterize(polygons, (900, 700), (1.0, 1.0)) > 0, result.mask)
    assert mask_to_geojson(np.zeros((5, 5), bool), (1.0, 1.0))["features"] == []
