"""Segmentation: the dense/per-tile choice, ONNX caching, empty slides, the result's pieces.

Dense and ONNX parity with per-tile torch on every tile size and stride: test_dense_parity.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import discriminative_checkpoint
from slidesift.assemble import assemble
from slidesift.checkpoint import Checkpoint
from slidesift.inference import export_onnx, onnx_cache_dir
from slidesift.phantom import he_like_image
from slidesift.segment import NoTilesWarning, SegmentSpec, segment_pixels

pytestmark = pytest.mark.learn

T = 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """A discriminative T = 96 model (tile probabilities spread over [0.01, 0.99])."""
    return discriminative_checkpoint(T, tmp_path_factory.mktemp("model"), seed=5)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    pixels, _ = he_like_image((400, 560), seed=11, tumor_fraction=0.4)
    return pixels


def test_onnx_goes_to_the_cache_never_beside_the_checkpoint_and_is_rebuilt_when_damaged(
    checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIDESIFT_CACHE", str(tmp_path / "cache"))
    assert checkpoint.path is not None
    beside = sorted(checkpoint.path.parent.iterdir())
    path = export_onnx(checkpoint)
    assert path.parent == onnx_cache_dir(checkpoint) and path.name == "whole.onnx"
    assert path.is_relative_to(tmp_path / "cache" / "onnx")
    for part in ("maps", "head"):
        assert export_onnx(checkpoint, part=part).parent == path.parent
    assert sorted(checkpoint.path.parent.iterdir()) == beside  # nothing written beside it
    stamp = path.stat().st_mtime_ns
    assert export_onnx(checkpoint) == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(b"not onnx")
    assert export_onnx(checkpoint) == path
    assert path.stat().st_size > 1000


def test_segment_pixels_picks_dense_when_exact_and_says_so(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    dense = segment_pixels(image, checkpoint, SegmentSpec(stride=32))
    per_tile = segment_pixels(image, checkpoint, SegmentSpec(stride=30))
    assert dense.inference == "onnx dense" and per_tile.inference == "onnx per tile"
    rounded = segment_pixels(image, checkpoint, SegmentSpec(stride=30, round_stride=True))
    assert rounded.grid.stride == 32 and rounded.inference == "onnx dense"
    tiles = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="tiles"))
    np.testing.assert_allclose(dense.probs, tiles.probs, atol=1e-4)
    # the mask is the assembly of the probabilities of the kept tiles
    a = assemble(dense.grid, dense.keep, dense.probs, dense.classes)
    np.testing.assert_array_equal(dense.mask, a.mask)
    assert not dense.probs[~dense.classified][:, 1].any()
    assert set(dense.seconds) == {"sift", "classify", "assemble"}


def test_slide_without_surviving_tiles_gives_an_empty_mask_and_a_warning(
    checkpoint: Checkpoint,
) -> None:
    blank = np.full((300, 300, 3), 245, np.uint8)
    with pytest.warns(NoTilesWarning, match="no tile survived"):
        r = segment_pixels(blank, checkpoint, SegmentSpec(stride=32))
    assert not r.mask.any() and r.vote is None and not r.keep.any()


def test_remask_runs_the_no_rails_ablation_without_classifying_again(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    r = segment_pixels(image, checkpoint, SegmentSpec(stride=32), classify_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_rails = r.remask(SegmentSpec(stride=32, rails=False))
        with_rails = r.remask(SegmentSpec(stride=32))
    np.testing.assert_array_equal(with_rails, r.mask)
    assert no_rails.sum() >= with_rails.sum() or not r.sifted.keep_background.any()


def test_torch_and_onnx_agree_inside_segment(checkpoint: Checkpoint, image: np.ndarray) -> None:
    t = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="torch"))
    o = segment_pixels(image, checkpoint, SegmentSpec(stride=32, inference="tiles"))
    assert t.inference.startswith("torch")
    np.testing.assert_allclose(t.probs, o.probs, atol=1e-4)


def test_tile_larger_than_the_thumbnail_is_refused(checkpoint: Checkpoint) -> None:
    with pytest.raises(ValueError, match="shorter side"):
        segment_pixels(np.zeros((50, 300, 3), np.uint8), checkpoint)


def test_rails_that_admit_little_tissue_warn_that_the_slide_is_out_of_domain(
    checkpoint: Checkpoint, image: np.ndarray
) -> None:
    from slidesift.checkpoint import Checkpoint as Ck
    from slidesift.rails import Rails
    from slidesift.segment import OutOfDomainWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)  # wide rails: no warning
        wide = segment_pixels(image, checkpoint, SegmentSpec(stride=32))
    e = wide.sifted.stats.entropy[wide.sifted.keep_background]
    # rails around the top 10% of this slide's tissue entropies admit about 10% of its tiles
    narrow = Ck(checkpoint.path, {**checkpoint.meta, "rails": Rails(
        float(np.quantile(e, 0.9)), float(e.max())).to_dict()}, checkpoint.state)  # fmt: skip
    with pytest.warns(OutOfDomainWarning, match=r"admit only \d+% of this slide's"):
        r = segment_pixels(image, narrow, SegmentSpec(stride=32))
    assert 0 < r.keep.sum() < 0.2 * r.sifted.keep_background.sum()
    with warnings.catch_warnings():  # the no-rails ablation does not warn
        warnings.simplefilter("error", OutOfDomainWarning)
        segment_pixels(image, narrow, SegmentSpec(stride=32, rails=False))


def _with_scale(checkpoint: Checkpoint, um: float | None, l0: int | None) -> Checkpoint:
    scale = {"um_per_px": um, "l0_longest": l0, "slides_without_mpp": 0}
    return Checkpoint(checkpoint.path, {**checkpoint.meta, "training_scale": scale},
                      checkpoint.state)  # fmt: skip


def test_scale_advice_for_um_per_px_size_and_missing_mpp() -> None:
    from slidesift.io.slide import Thumb
    from slidesift.segment import scale_warnings

    state: dict[str, object] = {}
    ck = Checkpoint(None, {"training_scale": {"um_per_px": 2.0, "l0_longest": 4000}}, state)

    def thumb(mpp: tuple[float, float] | None, l0: int = 4000) -> Thumb:
        return Thumb(np.zeros((4, 4, 3), np.uint8), (l0, l0 // 2), (1.0, 1.0), 0, mpp, "s")

    assert scale_warnings(thumb((2.0, 2.0)), ck) == []
    assert scale_warnings(thumb((3.9, 3.9)), ck) == []  # 1.95x: inside the limit
    (coarse,) = scale_warnings(thumb((4.0, 4.0)), ck)
    assert "4 um/px" in coarse and "2 um/px" in coarse and "2.0x" in coarse and "smaller" in coarse
    (fine,) = scale_warnings(thumb((0.9, 0.9)), ck)
    assert "larger" in fine and "--mpp" in fine
    # with an MPP the level-0 size does not matter; without one, it is all there is
    assert scale_warnings(thumb((2.0, 2.0), l0=40000), ck) == []
    no_mpp = scale_warnings(thumb(None), ck)
    assert len(no_mpp) == 1 and "no MPP" in no_mpp[0] and "2 um/px" in no_mpp[0]
    no_mpp_big = scale_warnings(thumb(None, l0=9000), ck)
    assert len(no_mpp_big) == 2 and "9000 px" in no_mpp_big[1] and "2.2x" in no_mpp_big[1]
    # a checkpoint from before the scale was recorded gives no advice
    assert scale_warnings(thumb(None, l0=90000), Checkpoint(None, {}, state)) == []


def test_segment_warns_when_a_slide_is_read_at_another_scale(
    checkpoint: Checkpoint, image: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from slidesift.io.tiff import write_pyramidal_tiff
    from slidesift.segment import OutOfDomainWarning, segment

    folder = tmp_path_factory.mktemp("scale")
    with_mpp = write_pyramidal_tiff(folder / "a.tif", image, mpp=1.0)
    without = write_pyramidal_tiff(folder / "b.tif", image)
    longest = max(image.shape[:2])
    ck = Checkpoint(checkpoint.path, {**checkpoint.meta, "longest": longest, "mpp": None},
                    checkpoint.state)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        segment(with_mpp, _with_scale(ck, 1.0, longest), SegmentSpec(stride=32))
    with pytest.warns(OutOfDomainWarning, match=r"a\.tif: this slide is read at 1 um/px.*2\.5x"):
        segment(with_mpp, _with_scale(ck, 2.5, longest), SegmentSpec(stride=32))
    with pytest.warns(OutOfDomainWarning, match=r"b\.tif: the slide has no MPP"):
        segment(without, _with_scale(ck, 1.0, longest), SegmentSpec(stride=32))


def test_segment_cli_imports_no_torch_once_the_model_is_exported(
    checkpoint: Checkpoint, image: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Segmenting on the CPU is ONNX Runtime: a fresh process never imports torch (seconds)."""
    import json
    import subprocess
    import sys

    from slidesift.io.tiff import write_pyramidal_tiff

    folder = tmp_path_factory.mktemp("notorch")
    slide = write_pyramidal_tiff(folder / "s.tif", image)
    assert checkpoint.path is not None
    for part in ("maps", "head", "whole"):
        export_onnx(checkpoint, part=part)  # what a first run does (that one needs torch)
    code = (
        "import json, sys\n"
        "from slidesift.cli.main import main\n"
        f"rc = main(['segment', {str(checkpoint.path)!r}, {str(slide)!r}, '--out', "
        f"{str(folder / 'out')!r}, '--stride', '32'])\n"
        "print(json.dumps([rc, 'torch' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rc, torch_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 0, done.stderr
    assert not torch_loaded
    assert (folder / "out" / "s" / "s_mask.png").is_file()


class _StopBeforeReading(Exception):
    pass


@pytest.mark.parametrize("entry_point", ["segment", "evaluate_slide"])
def test_the_sift_kernels_start_loading_before_the_slide_is_read(
    checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entry_point: str
) -> None:
    """numba's first call costs about 0.5 s a process: ``segment`` and ``evaluate_slide``
    (what ``slidesift segment`` and the cohort run) start :func:`slidesift.sift.warm_up` for
    the checkpoint's sift before they read the slide, so the two overlap."""
    import importlib

    from slidesift.manifest import ManifestEntry

    # the modules (the package exports functions of the same names)
    segment, evaluate, sift = (importlib.import_module(f"slidesift.{name}")
                               for name in ("segment", "evaluate", "sift"))  # fmt: skip

    monkeypatch.setattr(sift, "_WARMED", {})
    seen: list[bool] = []

    def reader(*args: object, **kwargs: object) -> None:
        seen.append(checkpoint.sift in sift._WARMED)
        raise _StopBeforeReading

    slide = tmp_path / "s.png"
    if entry_point == "segment":
        monkeypatch.setattr(segment, "open_slide", reader)
        with pytest.raises(_StopBeforeReading):
            segment.segment(slide, checkpoint)
    else:
        monkeypatch.setattr(evaluate, "read_slide", reader)
        with pytest.raises(_StopBeforeReading):
            evaluate.evaluate_slide(ManifestEntry(slide), checkpoint)
    assert seen == [True]
