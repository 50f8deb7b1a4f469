"""DICOM whole-slide images through wsidicom: pixels against pydicom's frames, layouts, faults.

The reference for a real slide is its frames as pydicom parses them, decoded one by one and
placed by hand where they belong; synthetic slides are written here with pydicom, so the reader
is exercised without the shared data too.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("wsidicom")

import imagecodecs  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate, generate_frames  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    VLWholeSlideMicroscopyImageStorage,
    generate_uid,
)

from slidesift.cli.info import describe  # noqa: E402
from slidesift.cli.main import main  # noqa: E402
from slidesift.errors import MissingExtraError, SlideReadError  # noqa: E402
from slidesift.io.resample import area_resample  # noqa: E402
from slidesift.io.slide import open_slide, read_thumb  # noqa: E402
from slidesift.phantom import he_like_image  # noqa: E402


def _dcmread(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real slide's over-long UIDs and names
        return pydicom.dcmread(path)


def _mosaic(frames: list[np.ndarray], rows: int, cols: int, size: tuple[int, int]) -> np.ndarray:
    """Frames stored column-major (frame k at grid row k % rows, column k // rows), cropped."""
    th, tw = frames[0].shape[:2]
    out = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for k, frame in enumerate(frames):
        r, c = k % rows, k // rows
        out[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = frame
    return out[: size[1], : size[0]]


@pytest.fixture(scope="module")
def real(dicom_wsi: Path) -> dict[str, np.ndarray]:
    """The real slide's level 0 by hand: pydicom's frames, decoded two ways, placed."""
    ds = _dcmread(dicom_wsi)
    size = (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))
    rows, cols = -(-size[1] // ds.Rows), -(-size[0] // ds.Columns)
    n = int(ds.NumberOfFrames)
    assert (rows, cols, n) == (6, 7, 42)
    encoded = list(generate_frames(ds.PixelData, number_of_frames=n))
    with warnings.catch_warnings():
        # pydicom warns the frames are JFIF (YCbCr) though labelled RGB, and decodes as YCbCr
        warnings.simplefilter("ignore")
        by_pydicom = list(ds.pixel_array)
    return {
        # the decoder wsidicom uses (libjpeg-turbo through imagecodecs), JFIF -> YCbCr -> RGB
        "imagecodecs": _mosaic([imagecodecs.jpeg8_decode(f) for f in encoded], rows, cols, size),
        # pydicom's own decoding (its Pillow plugin)
        "pydicom": _mosaic(by_pydicom, rows, cols, size),
    }


def test_real_dicom_level0_is_its_frames_in_column_major_order(dicom_wsi, real) -> None:
    with open_slide(dicom_wsi) as slide:
        assert slide.format == "dicom" and slide.reader_for(0) == "wsidicom"
        assert slide.dimensions == (3236, 2638) and slide.level_count == 1
        assert slide.mpp is None  # the file has no pixel spacing; the placeholder never leaks
        level0 = slide.read_region(0, (0, 0), slide.dimensions)
        # a region straddling the right edge: the part outside reads white
        edge = slide.read_region(0, (3200, 2600), (100, 100))
    assert np.array_equal(level0, real["imagecodecs"])
    assert np.array_equal(edge[:38, :36], real["imagecodecs"][2600:, 3200:])
    assert (edge[38:] == 255).all() and (edge[:, 36:] == 255).all()
    # Pillow's libjpeg-turbo build rounds a few IDCT outputs the other way: 105 of 25.6 M
    # channel values differ, by 1 (measured); anything more would be a real fault.
    diff = np.abs(level0.astype(np.int16) - real["pydicom"])
    assert diff.max() <= 1 and np.count_nonzero(diff) < 500


def test_real_dicom_thumbnail_is_the_area_resampled_frames(dicom_wsi, real) -> None:
    with open_slide(dicom_wsi) as slide:
        thumb = read_thumb(slide, longest=800)
    assert thumb.reader == "wsidicom" and thumb.size == (800, 652) and thumb.mpp is None
    ref = real["imagecodecs"]
    expected = area_resample(lambda y0, y1: ref[y0:y1], (3236, 2638), thumb.size)
    assert np.array_equal(thumb.pixels, expected)


# --- synthetic slides written with pydicom -------------------------------------------------


def _tissue(h: int, w: int) -> np.ndarray:
    return he_like_image((h, w), seed=3, nucleus_px=2.0)[0]


def write_wsi(
    path: Path,
    image: np.ndarray,
    tile: tuple[int, int],
    *,
    order: str = "row",
    legacy: bool = False,
    jpeg: bool = False,
    spacing_mm: tuple[float, float] = (0.0005, 0.00025),
    series: tuple[str, str, str] | None = None,
) -> list[bytes]:
    """Write ``image`` as a VL WSI instance of ``tile = (w, h)`` frames; return the frames.

    ``legacy`` leaves out ImageType, DimensionOrganizationType, spacing and imaged volume, as
    early converters did; ``spacing_mm`` is ``(row, column)`` spacing as DICOM orders it.
    """
    h, w = image.shape[:2]
    tw, th = tile
    rows, cols = -(-h // th), -(-w // tw)
    padded = np.zeros((rows * th, cols * tw, 3), np.uint8)
    padded[:h, :w] = image
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    if order == "column":
        cells = [(r, c) for c in range(cols) for r in range(rows)]
    pixels = [padded[r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r, c in cells]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = VLWholeSlideMicroscopyImageStorage, uid, "SM"
    study, serie, frame_of_reference = series or (generate_uid(), generate_uid(), generate_uid())
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, serie
    ds.FrameOfReferenceUID = frame_of_reference
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422" if jpeg else "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = th, tw, len(pixels)
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = h, w
    if not legacy:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.DimensionOrganizationType = "TILED_FULL"
        measures = Dataset()
        measures.PixelSpacing = list(spacing_mm)
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = w * spacing_mm[1], h * spacing_mm[0]
    if jpeg:
        frames = [imagecodecs.jpeg8_encode(p, level=90) for p in pixels]
        ds.PixelData = encapsulate(frames)
    else:
        frames = [p.tobytes() for p in pixels]
        ds.PixelData = b"".join(frames)
    ds.save_as(path, enforce_file_format=True)
    return frames


def test_synthetic_tiled_full_round_trips_with_its_spacing(tmp_path: Path) -> None:
    image = _tissue(150, 230)
    write_wsi(tmp_path / "s.dcm", image, (64, 48))
    with open_slide(tmp_path / "s.dcm") as slide:
        assert slide.mpp == pytest.approx((0.25, 0.5))  # x from the column spacing
        assert slide.dimensions == (230, 150) and slide.reader_for(0) == "wsidicom"
        assert np.array_equal(slide.read_region(0, (0, 0), (230, 150)), image)
        assert np.array_equal(slide.read_region(0, (37, 21), (90, 70)), image[21:91, 37:127])
        thumb = read_thumb(slide, longest=115)
    assert thumb.reader == "wsidicom" and thumb.mpp == pytest.approx((0.5, 1.0))
    expected = area_resample(lambda y0, y1: image[y0:y1], (230, 150), thumb.size)
    assert np.array_equal(thumb.pixels, expected)


@pytest.mark.parametrize("order", ["row", "column"])
def test_early_style_instance_is_placed_by_its_seams(tmp_path: Path, order: str) -> None:
    image = _tissue(200, 300)
    write_wsi(tmp_path / "old.dcm", image, (64, 64), order=order, legacy=True)
    with open_slide(tmp_path / "old.dcm") as slide:
        assert slide.mpp is None and slide.reader_for(0) == "wsidicom"
        assert np.array_equal(slide.read_region(0, (0, 0), slide.dimensions), image)


def test_jpeg_folder_with_two_levels(tmp_path: Path) -> None:
    folder = tmp_path / "slide"
    folder.mkdir()
    image = _tissue(256, 384)
    half = image.reshape(128, 2, 192, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    uids = (generate_uid(), generate_uid(), generate_uid())
    frames0 = write_wsi(folder / "l0.dcm", image, (128, 128), jpeg=True, series=uids)
    write_wsi(folder / "l1.dcm", half, (128, 128), jpeg=True, series=uids,
              spacing_mm=(0.001, 0.0005))  # fmt: skip
    with open_slide(folder) as slide:
        assert slide.level_dimensions == ((384, 256), (192, 128))
        assert slide.level_downsamples == (1.0, 2.0)
        top_left = slide.read_region(0, (0, 0), (128, 128))
        assert read_thumb(slide, longest=150).level == 1
    assert np.array_equal(top_left, imagecodecs.jpeg8_decode(frames0[0]))


def test_damaged_and_foreign_dicom_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.dcm"
    write_wsi(good, _tissue(100, 100), (50, 50), jpeg=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 900])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(data[:132] + b"\x07" * 500)
    ct = tmp_path / "ct.dcm"
    write_wsi(ct, _tissue(64, 64), (64, 64))
    ds = _dcmread(ct)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.save_as(ct, enforce_file_format=True)
    for path, words in ((cut, "truncated"), (garbage, "corrupt"), (ct, "CT image")):
        with pytest.raises(SlideReadError) as err, open_slide(path) as slide:
            read_thumb(slide, longest=50)
        assert path.name in str(err.value) and words in str(err.value), str(err.value)


def test_truncated_real_dicom_is_a_clear_error(dicom_wsi: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(dicom_wsi.read_bytes()[:800_000])
    with pytest.raises(SlideReadError, match=r"cut\.dcm") as err:
        open_slide(cut)
    assert "hint:" in str(err.value)


def test_without_the_extra_a_dicom_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    write_wsi(tmp_path / "s.dcm", _tissue(64, 64), (64, 64))
    monkeypatch.setitem(sys.modules, "wsidicom", None)  # import fails as when not installed
    with pytest.raises(MissingExtraError, match=r"slidesift\[dicom\]"):
        open_slide(tmp_path / "s.dcm")


def test_info_doctor_and_sift_on_a_dicom(tmp_path: Path, capsys) -> None:
    slide = tmp_path / "scan.dcm"
    write_wsi(slide, _tissue(512, 640), (128, 128), jpeg=True)
    assert main(["info", str(slide)]) == 0
    out = capsys.readouterr().out
    assert "dicom" in out and "640 x 512" in out and "wsidicom" in out
    assert main(["doctor", str(slide)]) == 0
    out = capsys.readouterr().out
    assert "opened by wsidicom" in out and "slide scan.dcm" in out
    with open_slide(slide) as opened:
        assert "wsidicom" in describe(opened)
    out_dir = tmp_path / "out"
    code = main(["sift", str(slide), "-N", "320", "-T", "32", "--out", str(out_dir)])
    assert code == 0, capsys.readouterr().err
    assert (out_dir / "scan_tiles.csv").exists() and (out_dir / "scan_summary.json").exists()


def test_a_folder_of_one_instance_opens_as_that_file(dicom_wsi, real, tmp_path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(dicom_wsi, folder / dicom_wsi.name)
    with open_slide(folder) as slide:
        assert slide.path == folder and slide.reader_for(0) == "wsidicom"
        assert np.array_equal(slide.read_region(0, (0, 0), slide.dimensions), real["imagecodecs"])
