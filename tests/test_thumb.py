"""``slidesift thumb``: the thumbnail to send holds what ``segment`` classifies, and says its scale.

Pixels of a PNG thumbnail are ``read_thumb``'s (and the model's normaliser's) bit for bit; its
um/px (slide MPP x downsample) survives in pHYs / JFIF and the slidesift record, and reading it
back gives a slide whose MPP is that um/px, so segmenting the PNG gives the slide's mask. A
record that is damaged, huge, compressed, not JSON or of another image size is ignored with a
warning: the image still opens, without MPP, and no command shows a traceback.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import discriminative_checkpoint
from slidesift.cli.main import cli, main
from slidesift.io.downsample import Downsample
from slidesift.io.slide import open_slide, read_thumb
from slidesift.io.thumb_meta import (
    ThumbMeta,
    ThumbMetaWarning,
    encode_thumb,
    read_thumb_meta,
)
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.phantom import he_like_image
from slidesift.thumbnail import BUDGET_BYTES, make_thumbnail, write_thumbnail
from test_help_examples import example_blocks, example_lines

T = 96


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (whitespace collapsed) of one command; never a traceback."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, " ".join(out.split()), " ".join(err.split())


def pixels_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def record_of(path: Path) -> dict[str, Any]:
    with Image.open(path) as im:
        text = im.info["slidesift"] if path.suffix == ".png" else im.info["comment"][10:]
    doc: dict[str, Any] = json.loads(text)
    return doc


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2400 x 1800 Aperio-flavoured pyramid at 0.5 um/px."""
    pixels, _ = he_like_image((1800, 2400), seed=11, nucleus_px=5.0)
    root = tmp_path_factory.mktemp("thumb")
    return write_pyramidal_tiff(root / "patient_42.svs", pixels, mpp=0.5, flavor="aperio")


@pytest.fixture(scope="module")
def portrait(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 x 4000 at 0.5 um/px: at 1.68 um/px the recorded um/px alone would resample it."""
    pixels, _ = he_like_image((4000, 1000), seed=12, nucleus_px=5.0)
    root = tmp_path_factory.mktemp("portrait")
    return write_pyramidal_tiff(root / "tall.svs", pixels, mpp=0.5, flavor="aperio")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A binary model at N 1000, and the same weights at 1.7 um/px with a Reinhard normaliser."""
    from slidesift.checkpoint import load_checkpoint, read_safetensors, save_checkpoint
    from slidesift.stain import ReinhardNormalizer

    folder = tmp_path_factory.mktemp("models")
    at_n = discriminative_checkpoint(T, folder, seed=3)
    state, _ = read_safetensors(at_n.path, framework="torch")
    normalizer = ReinhardNormalizer(mean=(62.0, 24.0, -14.0), std=(17.0, 11.0, 9.0))
    meta = {
        **at_n.meta,
        "longest": None,
        "mpp": 1.7,
        "normalization": normalizer.to_dict(),
    }
    at_mpp = load_checkpoint(save_checkpoint(folder / "epoch_007.safetensors", state, meta))
    return {"n": at_n, "mpp": at_mpp}


# --- pixels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [{"longest": 1000}, {"mpp": 1.7}, {"longest": 5000}])
def test_png_pixels_are_read_thumbs(capsys, slide: Path, tmp_path: Path, target) -> None:
    out = tmp_path / "case.png"
    flag = ["-N", str(target["longest"])] if "longest" in target else ["--mpp", str(target["mpp"])]
    code, text, err = run(capsys, "thumb", slide, *flag, "--out", out)
    assert code == 0, err
    with open_slide(slide) as s:
        expected = read_thumb(s, **target)
    assert np.array_equal(pixels_of(out), expected.pixels)
    assert f"{expected.size[0]} x {expected.size[1]} px" in text


def test_png_pixels_of_a_real_svs(capsys, cmu1_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmu1.png"
    code, _, err = run(capsys, "thumb", cmu1_svs, "--mpp", "2", "--out", out)
    assert code == 0, err
    with open_slide(cmu1_svs) as s:
        expected = read_thumb(s, mpp=2.0)
    assert np.array_equal(pixels_of(out), expected.pixels)
    rec = record_of(out)
    assert rec["um_per_px"] == pytest.approx(list(expected.mpp), rel=1e-12)
    assert rec["level0"] == [2220, 2967]
    with open_slide(out) as back:
        assert back.mpp == pytest.approx(expected.mpp, rel=1e-12)


# --- metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_record_round_trip_and_resolution(capsys, slide: Path, tmp_path: Path, suffix) -> None:
    out = tmp_path / f"folder_of_patient_names/case{suffix}"
    out.parent.mkdir()
    code, text, err = run(capsys, "thumb", slide, "--mpp", "1.7", "--out", out)
    assert code == 0, err
    with open_slide(slide) as s:
        th = read_thumb(s, mpp=1.7)
    meta = read_thumb_meta(out, "png" if suffix == ".png" else "jpeg", th.size)
    assert meta is not None
    # um/px is the slide's MPP times the downsample, per axis
    w, h = th.size
    assert meta.um_per_px == pytest.approx((0.5 * 2400 / w, 0.5 * 1800 / h), rel=1e-12)
    assert meta.downsample == pytest.approx((2400 / w, 1800 / h), rel=1e-12)
    assert meta.level0 == (2400, 1800)
    assert meta.asked == Downsample(mpp=1.7)
    assert meta.slide == "patient_42.svs"  # the name, not the path
    assert str(slide.parent) not in out.read_bytes().decode("latin-1")
    assert meta.normalizer is None and meta.model is None
    # the resolution any viewer reads
    with Image.open(out) as im:
        if suffix == ".png":
            per_m = struct.unpack(">IIB", _png_chunk(out.read_bytes(), b"pHYs"))
            assert per_m == (round(1e6 / meta.um_per_px[0]), round(1e6 / meta.um_per_px[1]), 1)
        else:
            assert im.info["jfif_unit"] == 1  # dots per inch
            assert im.info["jfif_density"] == tuple(round(25400 / u) for u in meta.um_per_px)
    # opened as a slide: its MPP is the recorded um/px; info shows the record
    with open_slide(out) as back:
        assert back.mpp == meta.um_per_px
        assert back.thumb_meta == meta
    code, text, _ = run(capsys, "info", out)
    assert code == 0
    assert "slidesift thumbnail of patient_42.svs" in text
    assert "level 0 2400 x 1800 px" in text and "read at 1.7 um/px" in text
    assert f"MPP: {meta.um_per_px[0]:.4g}" in text


def _png_chunk(data: bytes, ctype: bytes) -> bytes:
    at = 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == ctype:
            return data[at + 8 : at + 8 + length]
        at += 12 + length
    raise AssertionError(f"no {ctype!r} chunk")


def test_jfif_density_falls_back_to_dots_per_cm(tmp_path: Path) -> None:
    """0.3 um/px: 84,667 dots per inch overflow JFIF's 16 bits; 33,333 dots per cm fit."""
    meta = ThumbMeta((8, 8), (8, 8), (1.0, 1.0), (0.3, 0.3), Downsample(longest=8))
    path = tmp_path / "fine.jpg"
    path.write_bytes(encode_thumb(np.full((8, 8, 3), 200, np.uint8), meta, "jpeg"))
    with Image.open(path) as im:
        assert im.info["jfif_unit"] == 2
        assert im.info["jfif_density"] == (33333, 33333)
    assert read_thumb_meta(path, "jpeg", (8, 8)) == meta


def test_name_can_be_withheld(capsys, slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "[bold]anon[red].jpg"  # a name rich would take for markup
    code, text, _ = run(capsys, "thumb", slide, "-N", "400", "--name", "", "--out", out)
    assert code == 0 and "[bold]anon[red].jpg" in text
    assert record_of(out)["slide"] is None
    assert b"patient_42" not in out.read_bytes()
    code, text, _ = run(capsys, "info", out)
    assert code == 0 and "(name withheld)" in text


# --- segmenting the thumbnail --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["n", "mpp"])
def test_segment_of_png_equals_segment_of_slide(
    capsys, slide: Path, tmp_path: Path, models, which
) -> None:
    from slidesift.segment import SegmentSpec, segment
    from slidesift.stain import key_of

    ck = models[which]
    out = tmp_path / "case.png"
    code, text, err = run(capsys, "thumb", slide, "--model", ck.path, "--out", out)
    assert code == 0, err
    rec = record_of(out)
    assert rec["asked"] == ck.downsample.to_dict()
    assert rec["model"] == {"name": ck.path.name, "digest": _digest(ck.path)}
    with open_slide(slide) as s:
        raw = read_thumb(s, **ck.downsample.to_dict()).pixels
    if ck.normalizer is not None:  # the model's normaliser is applied once, and recorded
        assert rec["normalizer"] == {"method": "reinhard", "key": key_of(ck.normalizer)}
        assert np.array_equal(pixels_of(out), ck.normalizer.apply(raw))
        assert "stain-normalised (reinhard)" in text
    else:
        assert rec["normalizer"] is None
        assert np.array_equal(pixels_of(out), raw)
    spec = SegmentSpec(stride=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=Warning)  # no "normalised for another model"
        from_slide = segment(slide, ck, spec)
        from_png = segment(out, ck, spec)
    assert from_png.thumb is not None and from_png.thumb.level == 0
    assert from_png.thumb.size == from_slide.pixels.shape[1::-1]
    assert np.array_equal(from_png.pixels, from_slide.pixels)  # what the network saw
    assert np.array_equal(from_png.keep, from_slide.keep)
    assert np.array_equal(from_png.probs, from_slide.probs)
    assert np.array_equal(from_png.mask, from_slide.mask)
    assert from_slide.mask.any() and not from_slide.mask.all()


def _digest(path: Path) -> str:
    from slidesift.cache import file_digest

    return file_digest(path)


def test_segment_command_on_the_png(capsys, slide: Path, tmp_path: Path, models) -> None:
    """``slidesift segment MODEL case.png`` writes the mask ``segment MODEL slide`` writes."""
    ck = models["mpp"]
    png = tmp_path / "case.png"
    assert run(capsys, "thumb", slide, "--model", ck.path, "--out", png)[0] == 0
    masks = []
    for target, name in ((slide, "patient_42"), (png, "case")):
        folder = tmp_path / f"seg_{name}"
        code, _, err = run(
            capsys, "segment", ck.path, target, "--stride", "32", "--outputs", "mask",
            "--out", folder,
        )  # fmt: skip
        assert code == 0, err
        (mask,) = folder.glob(f"{name}/*mask*.png")
        masks.append(pixels_of(mask))
    assert np.array_equal(masks[0], masks[1])


def test_a_thumbnail_read_at_its_own_mpp_is_not_resampled(portrait: Path, tmp_path: Path) -> None:
    """298 px wide: the recorded 1.6779 um/px alone would make it 298 x 1188, not 298 x 1190."""
    out = tmp_path / "tall.png"
    write_thumbnail(out, make_thumbnail(portrait, downsample=Downsample(mpp=1.68)))
    with open_slide(portrait) as s:
        expected = read_thumb(s, mpp=1.68)
    with open_slide(out) as back:
        again = read_thumb(back, mpp=1.68)
        assert again.size == expected.size
        assert np.array_equal(again.pixels, expected.pixels)
        # another target is read from the recorded um/px, as from any slide
        half = read_thumb(back, mpp=3.36)
    assert half.size == pytest.approx((expected.size[0] / 2, expected.size[1] / 2), abs=1)


def test_pixels_normalised_for_another_model_say_so(slide: Path, tmp_path: Path, models) -> None:
    from slidesift.segment import segment

    out = tmp_path / "norm.png"
    write_thumbnail(out, make_thumbnail(slide, checkpoint=models["mpp"]))
    with pytest.warns(Warning, match="normalised for another model"):
        segment(out, models["n"])


def test_lower_quality_is_smaller_and_a_full_disk_leaves_the_old_file(
    capsys, slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faults import DiskFull

    sizes = {}
    for q in ("50", "90"):
        out = tmp_path / f"q{q}.jpg"
        assert run(capsys, "thumb", slide, "-N", "1200", "--quality", q, "--out", out)[0] == 0
        sizes[q] = out.stat().st_size
    assert sizes["50"] < 0.7 * sizes["90"]
    before = (tmp_path / "q90.jpg").read_bytes()
    monkeypatch.setattr("os.fsync", DiskFull(0))
    code, _, err = run(capsys, "thumb", slide, "-N", "600", "--out", tmp_path / "q90.jpg")
    assert code == 8 and "disk is full" in err
    assert (tmp_path / "q90.jpg").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_thumb_cache_keeps_the_normaliser_key(slide: Path, tmp_path: Path, models) -> None:
    """``select`` and training read thumbnails through the cache: a normalised one stays so."""
    from slidesift.cache import ThumbCache

    out = tmp_path / "norm.png"
    write_thumbnail(out, make_thumbnail(slide, checkpoint=models["mpp"]))
    cache = ThumbCache(tmp_path / "cache")

    def read() -> Any:
        with open_slide(out) as s:
            return read_thumb(s, mpp=1.7)

    first, _ = cache.thumb(out, read, mpp=1.7)
    again, _ = cache.thumb(out, lambda: pytest.fail("not cached"), mpp=1.7)
    assert first.normalized is not None and again.normalized == first.normalized


# --- size budget ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_6000_px_phantom_slide_jpeg_budget(capsys, tmp_path: Path) -> None:
    """A 6000-px phantom slide: its 3000-px JPEG is under 3 MB (1.2 MB); its 6000-px one (the
    slide itself: 5.9 MB at quality 90, 3.6 MB at 60) is over, and the command says so and what
    to do."""
    from slidesift.phantom.cohort import CohortSpec, make_cohort

    make_cohort(CohortSpec(count=1, longest=(6000, 6000), seed=7, artifacts=0.0), tmp_path / "c")
    (svs,) = (tmp_path / "c" / "slides").glob("*.svs")
    small = tmp_path / "case.jpg"
    start = time.perf_counter()
    code, text, err = run(capsys, "thumb", svs, "-N", "3000", "--out", small)
    seconds = time.perf_counter() - start
    assert code == 0, err
    size = small.stat().st_size
    print(f"3000 px JPEG q90: {size / 1e6:.2f} MB in {seconds:.1f} s")
    assert size < BUDGET_BYTES
    assert f"{size / 1e6:.2f} MB JPEG" in text and "warning" not in text
    big = tmp_path / "full.jpg"
    code, text, _ = run(capsys, "thumb", svs, "-N", "6000", "--out", big)
    print(f"6000 px JPEG q90: {big.stat().st_size / 1e6:.2f} MB")
    assert code == 0
    assert big.stat().st_size > BUDGET_BYTES
    assert "over the 3 MB a telemedicine link takes" in text and "--quality" in text
    png = tmp_path / "full.png"
    code, text, _ = run(capsys, "thumb", svs, "-N", "6000", "--out", png)
    assert code == 0 and "write a JPEG instead" in text
    low = tmp_path / "low.jpg"
    code, text, _ = run(capsys, "thumb", svs, "-N", "6000", "--quality", "60", "--out", low)
    print(f"6000 px JPEG q60: {low.stat().st_size / 1e6:.2f} MB")
    assert code == 0 and "needs fewer px" in text


# --- damaged or hostile records ------------------------------------------------------------------


def _png_with_chunk(tmp_path: Path, ctype: bytes, data: bytes, name: str = "x.png") -> Path:
    """A 64 x 48 PNG with one extra chunk before IDAT."""
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 230, np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    chunk = struct.pack(">I", len(data)) + ctype + data
    chunk += struct.pack(">I", zlib.crc32(ctype + data))
    path = tmp_path / name
    path.write_bytes(png[:33] + chunk + png[33:])  # after the signature and IHDR
    return path


def _jpeg_with_comment(tmp_path: Path, payload: bytes, name: str = "x.jpg") -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 230, np.uint8)).save(buf, "JPEG")
    jpg = buf.getvalue()
    path = tmp_path / name
    path.write_bytes(
        jpg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpg[2:]
    )
    return path


def _record(**change: Any) -> bytes:
    meta = ThumbMeta((64, 48), (640, 480), (10.0, 10.0), (5.0, 5.0), Downsample(longest=64))
    doc = json.loads(meta.to_json())
    doc.update(change)
    return json.dumps(doc).encode()


def _itxt(text: bytes) -> bytes:
    return b"slidesift\x00\x00\x00\x00\x00" + text


BAD_RECORDS = {
    "not JSON": (b"{not json", "not JSON"),
    "a list": (b"[1, 2]", "not a JSON mapping"),
    "NaN": (_record(um_per_px=[float("nan"), 5.0]), "not JSON"),
    "deep": (b"[" * 1500 + b"]" * 1500, "not JSON"),
    "other format": (_record(format="other/9"), "format"),
    "string size": (_record(size="64x48"), "'size'"),
    "bool size": (_record(size=[True, 48]), "'size'"),
    "negative um": (_record(um_per_px=[-5.0, 5.0]), "'um_per_px'"),
    "no target": (_record(asked={"longest": None}), "'asked'"),
    "long name": (_record(slide="x" * 300), "'slide'"),
    "other size": (_record(size=[128, 96]), "resized or cropped"),
    "huge": (_record(slide=None, pad="x" * 100_000), "over the 4,096"),
    "latin-1": (b"\xff\xfe{", "not JSON"),
    "huge integer": (_record(um_per_px=[10**400, 5.0]), "'um_per_px'"),
    "normaliser without key": (_record(normalizer={"method": "reinhard"}), "method or key"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_bad_record_is_ignored_with_a_warning(capsys, tmp_path: Path, case: str, kind) -> None:
    raw, why = BAD_RECORDS[case]
    if kind == "png":
        path = _png_with_chunk(tmp_path, b"iTXt", _itxt(raw))
    elif len(raw) + 12 > 0xFFFF:
        pytest.skip("a JPEG comment holds at most 65,533 bytes")
    else:
        path = _jpeg_with_comment(tmp_path, b"slidesift:" + raw)
    with pytest.warns(ThumbMetaWarning, match=why), open_slide(path) as s:
        assert s.mpp is None and s.thumb_meta is None
        assert s.dimensions == (64, 48)
    code, text, err = run(capsys, "info", path)
    assert code == 0
    assert "MPP: none" in text and "record is ignored" in err


def test_a_jpeg_comment_too_long_for_a_record(tmp_path: Path) -> None:
    path = _jpeg_with_comment(tmp_path, b"slidesift:" + b" " * 60_000)
    with pytest.warns(ThumbMetaWarning, match="over the 4,096"):
        assert read_thumb_meta(path, "jpeg", (64, 48)) is None


@pytest.mark.parametrize(
    ("ctype", "data", "why"),
    [
        (b"zTXt", b"slidesift\x00\x00" + zlib.compress(_record()), "compressed"),
        (b"iTXt", b"slidesift\x00\x01\x00\x00\x00" + zlib.compress(_record()), "compressed"),
        (b"iTXt", b"slidesift\x00\x00\x00" + _record(), "malformed"),
    ],
)
def test_compressed_or_malformed_png_text(tmp_path: Path, ctype, data, why) -> None:
    path = _png_with_chunk(tmp_path, ctype, data)
    with pytest.warns(ThumbMetaWarning, match=why):
        assert read_thumb_meta(path, "png", (64, 48)) is None


def test_damaged_png_chunk_and_a_huge_claimed_length(tmp_path: Path) -> None:
    path = _png_with_chunk(tmp_path, b"iTXt", _itxt(_record()))
    data = bytearray(path.read_bytes())
    data[60] ^= 0x20  # a byte of the record: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.warns(ThumbMetaWarning, match="CRC"):
        assert read_thumb_meta(path, "png", (64, 48)) is None
    # a chunk that claims 2 GB is not read (the pixel reader refuses the file itself)
    huge = bytearray(_png_with_chunk(tmp_path, b"iTXt", _itxt(_record()), "h.png").read_bytes())
    huge[33:37] = struct.pack(">I", 2**31 - 1)
    (tmp_path / "h.png").write_bytes(bytes(huge))
    with pytest.warns(ThumbMetaWarning, match="over the 4,096"):
        assert read_thumb_meta(tmp_path / "h.png", "png", (64, 48)) is None


def test_good_records_in_text_and_itxt_are_read(tmp_path: Path) -> None:
    for ctype, data in ((b"tEXt", b"slidesift\x00" + _record()), (b"iTXt", _itxt(_record()))):
        path = _png_with_chunk(tmp_path, ctype, data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_slide(path) as s:
                assert s.mpp == (5.0, 5.0)
    path = _jpeg_with_comment(tmp_path, b"slidesift:" + _record())
    with open_slide(path) as s:
        assert s.mpp == (5.0, 5.0)


def test_plain_images_have_no_record_and_no_warning(tmp_path: Path) -> None:
    for name in ("plain.png", "plain.jpg"):
        Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(tmp_path / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_slide(tmp_path / name) as s:
                assert s.thumb_meta is None and s.mpp is None
    other = _jpeg_with_comment(tmp_path, b"made with an editor", "c.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_thumb_meta(other, "jpeg", (64, 48)) is None


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600), png=st.booleans())
def test_any_record_bytes_open_or_warn(tmp_path: Path, data: bytes, png: bool) -> None:
    if png:
        path = _png_with_chunk(tmp_path, b"iTXt", _itxt(data), "f.png")
    else:
        path = _jpeg_with_comment(tmp_path, b"slidesift:" + data, "f.jpg")
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        meta = read_thumb_meta(path, "png" if png else "jpeg", (64, 48))
    assert meta is None
    assert all(issubclass(w.category, ThumbMetaWarning) for w in heard)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.integers(min_value=10**308, max_value=10**320)  # over a float's range
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = ["format", "size", "level0", "downsample", "um_per_px", "asked", "slide", "normalizer",
          "model", "slidesift"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@example(changes={"um_per_px": [10**400, 5.0]})
@example(changes={"downsample": [1.0, -(10**400)], "size": [10**400, 1]})
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=3))
def test_records_with_any_field_values_parse_or_are_refused(changes: dict[str, Any]) -> None:
    """Each field replaced by any JSON value (a 320-digit integer too): a record or ``_Bad``."""
    raw = _record(**changes)
    try:
        meta = ThumbMeta.from_json(raw)
    except ValueError as exc:
        assert type(exc).__name__ == "_Bad"
    else:
        assert ThumbMeta.from_json(meta.to_json().encode()) == meta


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["-N", "500", "--out", "{tmp}/case.gif"], 2, "a .jpg/.jpeg"),
        (["-N", "500", "--out", "{tmp}/case"], 2, "a .jpg/.jpeg"),
        (["-N", "500", "--mpp", "2", "--out", "{tmp}/case.jpg"], 2, "not -N and --mpp"),
        (["--out", "{tmp}/case.jpg"], 2, "give one of -N/--longest, --mpp or --model"),
        (["-N", "500", "--quality", "80", "--out", "{tmp}/case.png"], 2, "--quality is for JPEG"),
        (["-N", "500", "--quality", "99", "--out", "{tmp}/case.jpg"], 2, "1<=x<=95"),
        (["--model", "{slide}", "--out", "{tmp}/case.jpg"], 6, "not a slidesift checkpoint"),
    ],
)
def test_command_line_mistakes(capsys, slide: Path, tmp_path: Path, args, code, says) -> None:
    filled = [a.format(tmp=tmp_path, slide=slide) for a in args]
    got, out, err = run(capsys, "thumb", slide, *filled)
    assert got == code
    assert says in out + err
    assert not list(tmp_path.iterdir())  # nothing written


def test_unreadable_slide_and_mpp_without_metadata(capsys, tmp_path: Path) -> None:
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 100)
    code, _, err = run(capsys, "thumb", broken, "-N", "500", "--out", tmp_path / "a.jpg")
    assert code == 3 and "cannot read slide" in err and "broken.svs" in err
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((50, 60, 3), 200, np.uint8)).save(plain)
    code, _, err = run(capsys, "thumb", plain, "--mpp", "4", "--out", tmp_path / "b.jpg")
    assert code == 2 and "no MPP metadata" in err
    assert not (tmp_path / "a.jpg").exists() and not (tmp_path / "b.jpg").exists()


def test_help_examples_run_as_written(capsys, slide: Path, tmp_path: Path, models, monkeypatch):
    """The --help examples, run in a folder laid out as their caption says."""
    (tmp_path / "cohort" / "slides").mkdir(parents=True)
    shutil.copy(slide, tmp_path / "cohort" / "slides" / "paip_006.svs")
    (tmp_path / "run").mkdir()
    shutil.copy(models["n"].path, tmp_path / "run" / "epoch_005.safetensors")
    monkeypatch.chdir(tmp_path)
    blocks = example_blocks(cli.commands["thumb"].help or "")
    examples = [line for block in blocks for line in example_lines(block)]
    assert len(examples) == 3
    for line in examples:
        args = shlex.split(line)[1:]
        code, text, err = run(capsys, *args)
        assert code == 0, f"{line}: {err}"
        out = Path(args[args.index("--out") + 1])
        with open_slide(out) as s:
            assert s.thumb_meta is not None and s.mpp is not None
        assert "wrote" in text
