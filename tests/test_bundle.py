"""Model bundles (``slidesift export CKPT --out model.slidesift``): one file that segments as its
checkpoint does, places its graphs in the cache, and refuses damage with a clear error."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import discriminative_checkpoint
from slidesift.bundle import FP32_GRAPHS, INT8_GRAPHS, load_bundle, write_bundle
from slidesift.checkpoint import load_checkpoint
from slidesift.cli.main import main
from slidesift.errors import CheckpointError
from slidesift.inference import onnx_cache_dir
from slidesift.phantom import he_like_image
from slidesift.segment import Classifiers, SegmentSpec, segment_pixels

pytestmark = pytest.mark.learn
TILE = 96


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint, its bundle (int8 included) and a bundle without int8."""
    root = tmp_path_factory.mktemp("bundle")
    ck = discriminative_checkpoint(TILE, root, seed=3)
    assert ck.path is not None
    cache = root / "export-cache"
    return {
        "checkpoint": ck.path,
        "bundle": write_bundle(ck, root / "model.slidesift", cache_dir=cache),
        "fp32": write_bundle(ck, root / "fp32.slidesift", int8=False, cache_dir=cache),
        "root": root,
    }


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder for this test (``SLIDESIFT_CACHE``)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLIDESIFT_CACHE", str(cache))
    return cache


def thumbnail(seed: int = 5) -> np.ndarray:
    pixels, _ = he_like_image((6 * TILE, 8 * TILE), seed=seed, tumor_fraction=0.4)
    return pixels


@pytest.mark.parametrize("inference", ["dense", "int8", "tiles"])
def test_a_bundle_segments_exactly_as_its_checkpoint(made, fresh_cache, inference) -> None:
    """Same probabilities, bit for bit, in every ONNX mode: the bundle carries the very graphs
    the checkpoint's runs build, and its graphs are keyed by the checkpoint's digest."""
    spec = SegmentSpec(inference=inference, round_stride=True)  # type: ignore[arg-type]
    pixels = thumbnail()
    ck = load_checkpoint(made["checkpoint"])
    bundle = load_checkpoint(made["bundle"])
    want = segment_pixels(pixels, ck, spec, classifiers=Classifiers(ck, cache_dir=fresh_cache))
    got = segment_pixels(pixels, bundle, spec)
    assert got.classified.sum() > 10
    assert np.array_equal(got.probs, want.probs)
    assert np.array_equal(got.mask, want.mask)
    assert got.inference == want.inference


def test_its_graphs_land_in_the_cache_and_nothing_beside_the_bundle(made, fresh_cache) -> None:
    """A read-only model folder works: the graphs go to <cache>/onnx/<source digest>/."""
    folder = made["root"] / "readonly"
    folder.mkdir(exist_ok=True)
    copy = folder / "model.slidesift"
    copy.write_bytes(made["bundle"].read_bytes())
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        bundle = load_checkpoint(copy)
        result = segment_pixels(thumbnail(), bundle, SegmentSpec(inference="int8", stride=48))
        assert result.classified.any()
        assert sorted(p.name for p in folder.iterdir()) == ["model.slidesift"]
    finally:
        folder.chmod(stat.S_IRWXU)
    source = load_checkpoint(made["checkpoint"])
    placed = onnx_cache_dir(source, fresh_cache)  # the checkpoint's own digest
    assert set(INT8_GRAPHS) <= {p.name for p in placed.iterdir()}
    assert bundle.source_digest == placed.name
    assert (placed / INT8_GRAPHS[0]).read_bytes() == bundle.graphs[INT8_GRAPHS[0]]


def test_the_bundle_carries_the_method_and_the_source(made) -> None:
    ck, bundle = load_checkpoint(made["checkpoint"]), load_bundle(made["bundle"])
    assert bundle.is_bundle and not ck.is_bundle
    assert (bundle.tile, bundle.classes, bundle.epoch) == (ck.tile, ck.classes, ck.epoch)
    assert bundle.rails == ck.rails and bundle.sift == ck.sift
    assert bundle.downsample == ck.downsample
    source = bundle.meta["bundle_source"]
    assert source["name"] == made["checkpoint"].name and source["epoch"] == ck.epoch
    assert set(bundle.graphs) == set(FP32_GRAPHS + INT8_GRAPHS)
    assert set(load_bundle(made["fp32"]).graphs) == set(FP32_GRAPHS)


def test_what_needs_the_weights_says_so(made, fresh_cache) -> None:
    bundle = load_checkpoint(made["bundle"])
    with pytest.raises(CheckpointError, match="not the network's weights"):
        bundle.model()
    for mode in ("torch", "torch-dense", "bf16"):
        with pytest.raises(CheckpointError, match="checkpoint it was exported from"):
            segment_pixels(thumbnail(), bundle, SegmentSpec(inference=mode, stride=48))  # type: ignore[arg-type]


def test_a_bundle_without_int8_refuses_int8_and_auto_runs_fp32(made, fresh_cache) -> None:
    bundle = load_checkpoint(made["fp32"])
    with pytest.raises(CheckpointError, match="no int8 graphs"):
        segment_pixels(thumbnail(), bundle, SegmentSpec(inference="int8", stride=48))
    classifiers = Classifiers(bundle, probe=True, cache_dir=fresh_cache)
    result = segment_pixels(thumbnail(), bundle, SegmentSpec(stride=48), classifiers=classifiers)
    assert result.inference == "onnx dense"


def _rezip(src: Path, dst: Path, edit) -> Path:
    """Copy the bundle ``src`` to ``dst`` with ``edit(name, bytes) -> bytes | None`` applied."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def _manifest_edit(change):
    def edit(name: str, data: bytes) -> bytes:
        if name != "bundle.json":
            return data
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()

    return edit


DAMAGE = {
    "truncated": None,
    "no bundle.json": lambda n, d: None if n == "bundle.json" else d,
    "no whole graph": lambda n, d: None if n == "onnx/whole.onnx" else d,
    "a graph edited": lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n == "onnx/maps.onnx" else d,
    "bundle.json not JSON": lambda n, d: b"{not json" if n == "bundle.json" else d,
    "unknown format": _manifest_edit(lambda doc: doc.update(format="slidesift-bundle/99")),
    "a graph of another name": _manifest_edit(
        lambda doc: doc["graphs"].update({"../../evil.onnx": {"sha256": "0"}})
    ),
    "damaged metadata": _manifest_edit(lambda doc: doc["meta"].update(tile="lots")),
    "no source digest": _manifest_edit(lambda doc: doc["source"].pop("digest")),
}
EXPECT = {
    "truncated": "not a readable zip",
    "no bundle.json": "no bundle.json",
    "no whole graph": "lacks onnx/whole.onnx",
    "a graph edited": "differs from bundle.json's sha256",
    "bundle.json not JSON": "not valid JSON",
    "unknown format": "unknown bundle format",
    "a graph of another name": "unknown",
    "damaged metadata": "metadata is damaged",
    "no source digest": "lacks graphs, source or meta",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_bundle_is_refused_naming_the_file(made, tmp_path, capsys, damage) -> None:
    bad = tmp_path / "bad.slidesift"
    edit = DAMAGE[damage]
    if edit is None:
        bad.write_bytes(made["bundle"].read_bytes()[:-5000])
    else:
        _rezip(made["bundle"], bad, edit)
    with pytest.raises(CheckpointError, match=EXPECT[damage]) as caught:
        load_checkpoint(bad)
    assert "bad.slidesift" in str(caught.value)
    assert not list(tmp_path.glob("*.onnx"))  # nothing extracted beside it
    slide = tmp_path / "case.png"
    slide.write_bytes(b"\x89PNG\r\n\x1a\n")  # never read: the model is refused first
    code = main(["segment", str(bad), str(slide), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 6 and "Traceback" not in err


def test_a_member_claiming_more_than_the_limit_is_refused_before_reading(
    made, tmp_path, monkeypatch
) -> None:
    """A zip bomb: the stated size is checked against SLIDESIFT_MAX_CHECKPOINT_MB first."""
    bomb = tmp_path / "bomb.slidesift"
    zeros = bytes(3 * 2**20)
    _rezip(made["bundle"], bomb, lambda n, d: zeros if n == "onnx/whole.onnx" else d)
    assert bomb.stat().st_size < 2 * 2**20  # under the limit: 3 MB of zeros deflate to kB
    monkeypatch.setenv("SLIDESIFT_MAX_CHECKPOINT_MB", "2")
    with pytest.raises(CheckpointError, match=r"onnx/whole\.onnx claims 3,145,728 bytes"):
        load_checkpoint(bomb)


def test_export_cli_writes_a_bundle_that_reads_back(made, tmp_path, capsys) -> None:
    out = tmp_path / "m.slidesift"
    assert main(["export", str(made["checkpoint"]), "--out", str(out), "--no-int8"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "m.slidesift" in printed and "whole.onnx" in printed and "int8" not in printed
    assert set(load_bundle(out).graphs) == set(FP32_GRAPHS)
    assert not [p for p in tmp_path.iterdir() if p.name != "m.slidesift"]  # no temp file left
    assert main(["export", str(made["checkpoint"])]) == 2  # neither --out nor --web


def test_select_scores_a_folder_of_bundles(made, tmp_path, tiny_cohort) -> None:
    """``select`` takes a folder of bundles as it takes a run folder."""
    from slidesift.manifest import read_manifest
    from slidesift.select import select_epoch

    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "a.slidesift").write_bytes(made["bundle"].read_bytes())
    (folder / "b.slidesift").write_bytes(made["fp32"].read_bytes())
    entries = read_manifest(tiny_cohort).split("test")[:1]
    spec = SegmentSpec(inference="dense", round_stride=True)
    with pytest.warns(Warning):  # choosing on test slides
        sel = select_epoch(folder, entries, spec)
    assert [r.path.name for r in sel.epochs] == ["a.slidesift", "b.slidesift"]
    a, b = (r.figures["mean_jaccard"] for r in sel.epochs)
    assert a == b  # the same fp32 graphs
    assert os.path.basename(str(sel.best.path)).endswith(".slidesift")


def test_info_describes_a_bundle_and_a_checkpoint(made, capsys) -> None:
    assert main(["info", str(made["bundle"]), str(made["checkpoint"])]) == 0
    out = " ".join(capsys.readouterr().out.split())
    digest = load_bundle(made["bundle"]).source_digest
    assert f"model.slidesift: slidesift model bundle, epoch 1 tile T = {TILE} px" in out
    assert f"exported from {made['checkpoint'].name} (digest {digest})" in out
    assert "maps-rgbx.int8.onnx" in out
    assert f"{made['checkpoint'].name}: slidesift checkpoint, epoch 1" in out
    assert out.count("classes: non-tumor, tumor") == 2


def test_the_web_page_of_a_bundle_is_its_checkpoints(made, tmp_path, monkeypatch, capsys) -> None:
    """``export model.slidesift --web page`` ships the very graphs and model.json that the
    checkpoint's page does (the runtime from ``make web-runtime``)."""
    from slidesift.web import export_web
    from slidesift.web.runtime import WebRuntimeError, find_runtime

    try:
        runtime = find_runtime(None).source
    except WebRuntimeError:
        pytest.skip("no onnxruntime-web here: `make web-runtime` fetches it")
    monkeypatch.setenv("SLIDESIFT_CACHE", str(tmp_path / "cache"))  # the bundle's graphs alone
    page = export_web(load_checkpoint(made["checkpoint"]), tmp_path / "a", runtime=runtime)
    args = ["export", str(made["bundle"]), "--web", str(tmp_path / "b"), "--runtime", str(runtime)]
    assert main(args) == 0
    assert "python3 -m http.server" in " ".join(capsys.readouterr().out.split())
    graphs = sorted(p.name for p in page.glob("*.onnx"))
    assert graphs
    for name in graphs:
        assert (tmp_path / "b" / name).read_bytes() == (page / name).read_bytes(), name
    want, got = (json.loads((d / "model.json").read_text()) for d in (page, tmp_path / "b"))
    assert got["model"].pop("name") == f"model.slidesift (from {made['checkpoint'].name})"
    want["model"].pop("name")
    assert got == want  # digest, epoch, T, stride, sift, rails, classes, scale


def test_the_export_help_examples_run_as_written(made, tmp_path, monkeypatch, capsys) -> None:
    """Both forms of ``slidesift export --help``, run in a folder laid out as they say."""
    import shlex

    from slidesift.cli.main import cli
    from slidesift.web.runtime import WebRuntimeError, find_runtime
    from test_help_examples import example_blocks, example_lines

    try:
        find_runtime(None)
    except WebRuntimeError:
        pytest.skip("no onnxruntime-web here: `make web-runtime` fetches it")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "epoch_005.safetensors").write_bytes(made["checkpoint"].read_bytes())
    monkeypatch.chdir(tmp_path)
    (block,) = example_blocks(cli.commands["export"].help or "")
    lines = example_lines(block)
    assert len(lines) == 2
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    assert load_bundle(tmp_path / "model.slidesift").meta["bundle_source"]["name"] == (
        "epoch_005.safetensors"
    )
    assert (tmp_path / "page" / "index.html").is_file()
    assert (tmp_path / "page" / "model.json").is_file()
