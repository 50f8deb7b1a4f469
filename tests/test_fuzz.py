"""Hostile input: seeded fuzz samples of every reader, and one test per reader bug they found.

The samples use the benchmark's seeds, corruptions and child-process runner
(``benchmarks/_fuzz.py``): every case must end ``ok`` or in a ``SlidesiftError`` naming the
file, never in another exception, a hang or a dead process.
"""

from __future__ import annotations

import importlib
import json
import struct
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import REPO
from slidesift.errors import (
    AnnotationError,
    CheckpointError,
    ManifestError,
    RailsError,
    SlideReadError,
)
from slidesift.io import slide_probe
from slidesift.io.annotations import read_truth
from slidesift.io.limits import IMAGE_PIXELS_ENV
from slidesift.io.slide import Thumb, open_slide
from slidesift.manifest import read_manifest
from slidesift.rails import Rails

# Stays on sys.path: the runner's spawned children import _fuzz by name from it.
sys.path.insert(0, str(REPO / "benchmarks"))
fuzz: ModuleType = importlib.import_module("_fuzz")
mutate: ModuleType = importlib.import_module("_fuzz_mutate")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, fuzz.make_seeds(folder)


def _defects(results: list) -> list[str]:
    return [f"{r.case.kind}/{r.case.op} #{r.case.index}: {r.outcome}: {r.detail}"
            for r in results if r.outcome not in ("ok", "error")]  # fmt: skip


@pytest.mark.learn
def test_a_seeded_sample_of_20_cases_ends_ok_or_in_an_error_naming_the_file(seeds) -> None:
    folder, files = seeds
    cases = fuzz.make_cases(files, 20, seed=11)
    assert {c.kind for c in cases} == set(fuzz.KINDS)
    results = fuzz.run_cases(cases, folder, workers=2)
    assert _defects(results) == []
    assert {r.outcome for r in results} <= {"ok", "error"}
    for r in results:  # the file's own name, not the seed's, is in every message
        assert r.outcome == "ok" or r.case.name in r.detail


@pytest.mark.slow  # 10 s idle, 40 s loaded: 100 cases, 28 slides opened through the probe
@pytest.mark.learn
def test_a_seeded_sample_of_100_cases_ends_ok_or_in_an_error_naming_the_file(seeds) -> None:
    folder, files = seeds
    results = fuzz.run_cases(fuzz.make_cases(files, 100, seed=2024), folder, workers=2)
    assert _defects(results) == []
    assert sum(r.outcome == "error" for r in results) > 30  # the corruptions do bite


def test_the_cases_are_the_same_for_the_same_seed_and_cut_at_every_ifd(seeds) -> None:
    _, files = seeds
    one = fuzz.make_cases(files, 60, seed=3)
    assert [c.data for c in one] == [c.data for c in fuzz.make_cases(files, 60, seed=3)]
    assert [c.data for c in one] != [c.data for c in fuzz.make_cases(files, 60, seed=4)]
    svs = files["tiff"][0].read_bytes()
    lay = mutate.tiff_layout(svs)
    assert len(lay.ifds) >= 2 and len(lay.tiles) >= 4
    cuts = {len(c.data) for c in fuzz.make_cases(files, 400, seed=0) if c.op == "cut-ifd"}
    assert set(lay.ifds) <= cuts  # a cut at every IFD offset of the seed


def _crashing_svs(svs: Path, out: Path) -> Path:
    """The phantom with its smallest level's TileLength at 2**29: OpenSlide's GLib aborts."""
    data = bytearray(svs.read_bytes())
    lay = mutate.tiff_layout(bytes(data))
    at = next(a for a, tag, _, _ in lay.entries if tag == 323 and a > lay.ifds[-1])
    struct.pack_into("<I", data, at + 8, 2**29)
    out.write_bytes(bytes(data))
    return out


def test_a_slide_that_aborts_openslide_is_an_error_for_that_slide_not_a_dead_process(
    seeds, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, files = seeds
    bad = _crashing_svs(files["tiff"][0], folder / "abort.svs")
    case = fuzz.Case(0, "tiff", "abort.svs", "tile-length", raw=bad.read_bytes())
    # By default the tile-size limit refuses the 2**29-px tiles before OpenSlide decodes one ...
    (limited,) = fuzz.run_cases([case], folder, workers=1)
    assert limited.outcome == "error" and "claims tiles of" in limited.detail, limited.detail
    # ... and with the limit raised by a user who trusts the file, the probe child takes the
    # abort: an error for that slide, not a dead process.
    monkeypatch.setenv(IMAGE_PIXELS_ENV, str(2**62))
    (result,) = fuzz.run_cases([case], folder, workers=1)
    assert result.outcome == "error", result.detail
    assert "crashed (signal 6, SIGABRT)" in result.detail and case.name in result.detail


def test_the_probe_passes_a_good_slide_once_per_process_and_can_be_turned_off(
    seeds, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, files = seeds
    svs = files["tiff"][0]
    monkeypatch.setattr(slide_probe, "_passed", set())
    with open_slide(svs, probe=True) as slide:
        assert slide.format == "aperio"
    assert len(slide_probe._passed) == 1  # remembered: the next open starts no child
    monkeypatch.setattr(slide_probe, "_passed", set())
    monkeypatch.setenv(IMAGE_PIXELS_ENV, str(2**62))  # past the tile-size limit, to OpenSlide
    bad = _crashing_svs(svs, folder / "abort2.svs")
    monkeypatch.setenv(slide_probe.PROBE_ENV, "0")
    assert not slide_probe.probe_wanted(None) and slide_probe.probe_wanted(True)
    with pytest.raises(SlideReadError, match="crashed"):
        open_slide(bad, probe=True)
    assert slide_probe._passed == set()


def test_a_probe_past_its_time_limit_is_an_error_naming_the_slide(seeds) -> None:
    _, files = seeds
    with pytest.raises(SlideReadError, match=r"did not finish a sample read") as err:
        slide_probe.probe_slide(files["tiff"][1], timeout_s=0.01)
    assert files["tiff"][1].name in str(err.value)
    # a timeout may be a busy machine, not a corrupt file: the advice says how to skip the check
    assert "too busy" in str(err.value) and "SLIDESIFT_SLIDE_PROBE=0" in str(err.value)


def _thumb() -> Thumb:
    return Thumb(np.zeros((192, 256, 3), np.uint8), (1024, 768), (4.0, 4.0), 0, None, "x")


def test_coordinates_near_1e308_rasterize_without_writing_out_of_bounds(seeds) -> None:
    folder, files = seeds
    xml = files["asap"][0].read_bytes().replace(b'X="200.0000"', b'X="1e308"', 1)
    assert b"1e308" in xml
    case = fuzz.Case(1, "asap", "lesions.xml", "number", raw=xml)
    (result,) = fuzz.run_cases([case], folder, workers=1)  # a segfault here before the fix
    assert result.outcome == "ok", result.detail


def test_asap_values_that_are_not_finite_are_an_annotation_error(tmp_path: Path, seeds) -> None:
    _, files = seeds
    text = files["asap"][0].read_text().replace('Order="0"', 'Order="1e999"', 1)
    bad = tmp_path / "inf.xml"
    bad.write_text(text)
    with pytest.raises(AnnotationError, match="non-finite value") as err:
        read_truth(bad, _thumb())
    assert "inf.xml" in str(err.value)


def test_geojson_deep_nesting_huge_numbers_and_odd_properties(tmp_path: Path, seeds) -> None:
    _, files = seeds
    doc = json.loads(files["geojson"][0].read_text())
    deep = tmp_path / "deep.geojson"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_truth(deep, _thumb())
    digits = tmp_path / "digits.geojson"
    digits.write_text(json.dumps(doc).replace("100.0", "9" * 5000, 1))
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_truth(digits, _thumb())
    huge = tmp_path / "huge.geojson"
    huge.write_text(json.dumps(doc).replace("100.0", str(10**400), 1))
    with pytest.raises(AnnotationError, match="not a list of rings"):
        read_truth(huge, _thumb())
    doc["features"][0]["properties"] = 7  # not a mapping: no class name, still a polygon
    odd = tmp_path / "odd.geojson"
    odd.write_text(json.dumps(doc))
    assert read_truth(odd, _thumb()).any()


def test_rails_deep_nesting_and_huge_numbers_are_rails_errors(tmp_path: Path) -> None:
    for name, text in [("deep.json", "[" * 100000 + "]" * 100000),
                       ("digits.json", '{"lo": ' + "9" * 5000 + ', "hi": 1}'),
                       ("huge.json", '{"lo": 1, "hi": 1' + "0" * 400 + "}")]:  # fmt: skip
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(RailsError) as err:
            Rails.load(path)
        assert name in str(err.value)


def _resave(src: Path, dst: Path, edit) -> Path:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    h = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    return dst


@pytest.mark.learn
def test_damaged_safetensors_headers_and_metadata_are_checkpoint_errors(
    tmp_path: Path, seeds
) -> None:
    from slidesift.checkpoint import load_checkpoint

    _, files = seeds
    ckpt = files["checkpoint"][0]
    assert load_checkpoint(ckpt).tile == 96

    def offsets(h):
        h["head.2.weight"]["data_offsets"] = [0]

    def infinite(h):  # JSON's Infinity: int() of it raised a bare OverflowError
        h["head.2.weight"]["data_offsets"] = [0, float("inf")]

    def meta_of(**change):
        def edit(h):
            doc = json.loads(h["__metadata__"]["slidesift"])
            doc.update(change)
            h["__metadata__"]["slidesift"] = json.dumps(doc)

        return edit

    def deep(h):
        h["__metadata__"]["slidesift"] = "[" * 100000

    def not_a_dict(h):
        h["__metadata__"] = [1]

    for name, edit, says in [
        ("offsets", offsets, "data_offsets"),
        ("infinite", infinite, "data_offsets"),
        ("tile", meta_of(tile="1e3"), "metadata is damaged"),
        ("classes", meta_of(classes=3.0), "metadata is damaged"),
        ("rails", meta_of(rails={"lo": "x", "hi": 1}), "metadata is damaged"),
        ("mismatch", meta_of(tile=400), "weights are for T=96"),
        ("deep", deep, "not valid JSON"),
        ("notdict", not_a_dict, "not a readable safetensors file"),
    ]:
        bad = _resave(ckpt, tmp_path / f"{name}.safetensors", edit)
        with pytest.raises(CheckpointError, match=says) as err:
            load_checkpoint(bad)
        assert bad.name in str(err.value)


def test_manifest_paths_with_a_nul_or_past_the_name_limit_are_listed_problems(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.svs").write_bytes(b"x")
    long = "/".join(["d" * 200] * 30) + ".svs"
    csv = tmp_path / "m.csv"
    csv.write_text(f"slide,annotation\na.svs,\nb\0.svs,\n{long},\nc.svs,{'x' * 300}.xml\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(csv)
    lines = [line for line, _ in err.value.problems]
    assert lines == [3, 4, 5] and "m.csv" in str(err.value)
    assert all("not a usable file path" in msg for _, msg in err.value.problems)


def test_rows_whose_crossings_all_lie_far_outside_the_window_paint_nothing() -> None:
    from slidesift.io.polygons import Polygon, rasterize

    far = np.array([[1e300, 10.0], [2e300, 10.0], [2e300, 30.0], [1e300, 30.0]])
    near = np.array([[4.0, 40.0], [9.0, 40.0], [9.0, 44.0], [4.0, 44.0]])
    out = rasterize([Polygon((far, near), 1)], (64, 48), (1.0, 1.0))
    expected = np.zeros((48, 64), np.uint8)
    expected[40:44, 4:9] = 1  # centres (4.5 .. 8.5, 40.5 .. 43.5)
    np.testing.assert_array_equal(out, expected)
    wedge = np.array([[-1e300, 10.0], [10.0, 10.0], [1e300, 20.0], [10.0, 30.0], [-1e300, 30.0]])
    for origin in [(0, 0), (5, 0)]:  # x0 > 0: an int64 from -1e300 minus x0 wrapped round
        out = rasterize([Polygon((wedge,), 1)], (64, 48), (1.0, 1.0), origin=origin)
        assert out[11:29].all() and not out[:10].any() and not out[31:].any()  # whole rows


@pytest.mark.slow  # the session's learned model (shared), then two slides in this process
@pytest.mark.learn
def test_a_slide_that_aborts_openslide_is_a_failed_row_of_an_in_process_cohort(
    learned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slidesift.cohort import run_cohort
    from slidesift.manifest import ManifestEntry
    from slidesift.segment import SegmentSpec

    monkeypatch.setenv(slide_probe.PROBE_ENV, "1")  # as users run it
    monkeypatch.setenv(IMAGE_PIXELS_ENV, str(2**62))  # past the tile-size limit, to OpenSlide
    good = read_manifest(learned.manifest).split("test")[0]
    bad = _crashing_svs(good.slide, tmp_path / "aborts.svs")
    entries = [good, ManifestEntry(bad, None, good.label, "test")]
    result = run_cohort(learned.best, entries, SegmentSpec(stride=32), out=tmp_path / "out",
                        scheduler="sync")  # fmt: skip
    assert [r.status for r in result.rows] == ["ok", "failed"]
    (failed,) = result.failures
    assert failed.error_type == "SlideReadError" and "aborts.svs" in failed.error
    assert "crashed (signal 6, SIGABRT)" in failed.error


def test_only_a_slidesift_error_naming_the_file_counts_as_a_proper_error(tmp_path: Path) -> None:
    path = tmp_path / "case00001_x.json"
    assert fuzz.classify(RailsError(path, "bad"), path)[0] == "error"
    assert fuzz.classify(RailsError(tmp_path / "other.json", "bad"), path)[0] == "bad-error"
    assert fuzz.classify(ValueError(f"{path} is bad"), path)[0] == "bad-error"
    assert fuzz.classify(RecursionError("deep"), path)[0] == "bad-error"
