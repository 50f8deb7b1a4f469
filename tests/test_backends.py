"""The int8 and bf16 dense backends and the probe that picks one (slidesift.backends, quantize).

The accuracy gates are about a model that has learned: the session's learned binary model
(conftest.learned) on its held-out phantom test slides. The probe's mechanics (cache, key,
gates, choice) are checked with injected backends on a small discriminative model, so that
they do not depend on timing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import Learned, discriminative_checkpoint
from slidesift import backends
from slidesift.backends import AGREEMENT_GATE, JACCARD_GATE, Probe, Verdict, probe
from slidesift.checkpoint import Checkpoint, load_checkpoint
from slidesift.inference import DenseOnnx
from slidesift.phantom import he_like_image
from slidesift.segment import Classifiers, SegmentSpec, segment_pixels
from slidesift.tiles import TileGrid

pytestmark = pytest.mark.learn

T = 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """A discriminative T = 96 model (tile probabilities spread over [0.01, 0.99])."""
    return discriminative_checkpoint(T, tmp_path_factory.mktemp("model"), seed=7)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


# --- the int8 backend ---------------------------------------------------------------------------


def _gate_figures(learned: Learned, kind: str, cache: Path) -> dict[str, Any]:
    """Segment the learned model's test slides with ``dense`` and ``kind``: label agreement and
    mean probability change (half the L1 distance: |p_tumor change| for two classes) on the
    kept tiles, pooled and per slide mask Jaccard."""
    from slidesift.evaluate import read_slide

    ck = load_checkpoint(learned.best)
    spec = SegmentSpec(round_stride=True)  # the default 80% overlap, on the dense grid
    ref = Classifiers(ck, cache_dir=cache)
    other = Classifiers(ck, cache_dir=cache)
    same = kept = 0
    change = 0.0
    masks: list[tuple[np.ndarray, np.ndarray]] = []
    for entry in learned.test_entries:
        thumb, _ = read_slide(entry, ck.downsample)
        pixels = np.asarray(thumb.pixels)
        a = segment_pixels(pixels, ck, spec, classifiers=ref)
        b = segment_pixels(pixels, ck, SegmentSpec(round_stride=True, inference=kind),  # type: ignore[arg-type]
                           classifiers=other)  # fmt: skip
        assert a.inference == "onnx dense" and b.inference.endswith(kind)
        same += int((a.probs[a.keep].argmax(1) == b.probs[a.keep].argmax(1)).sum())
        kept += int(a.keep.sum())
        change += float(np.abs(a.probs[a.keep] - b.probs[a.keep]).sum(axis=1).sum() / 2)
        masks.append((a.mask, b.mask))
    return {
        "agreement": same / kept,
        "mean_change": change / kept,
        "jaccard": backends.jaccard([m[1] for m in masks], [m[0] for m in masks]),
        "per_slide": [backends.jaccard([b], [a]) for a, b in masks],
        "kept": kept,
    }


@pytest.mark.slow
def test_int8_stays_near_fp32_on_the_learned_models_test_slides(
    learned: Learned, tmp_path: Path
) -> None:
    """int8 against fp32 on the held-out slides of a model that learns.

    The issue's gates (labels of >= 99.5% of the kept tiles, pooled mask Jaccard >= 0.99) are
    what the probe checks on its own thumbnails before ``auto`` uses int8 (tests of
    :func:`~slidesift.backends.probe` below). On held-out slides int8 is not always inside
    them: on an AMD EPYC the best epoch gave 99.7% / 0.996; on an Intel Xeon (AMX) the five
    epochs of the same run gave 98.8-99.9% / 0.982-0.998 (the best epoch 99.6% / 0.988, which
    the probe refuses). This floor catches a broken quantisation: without the balanced
    BatchNorm folding 12% of the labels change.
    """
    got = _gate_figures(learned, "int8", tmp_path)
    assert got["kept"] >= 1000
    assert got["agreement"] >= 0.985, got
    assert got["jaccard"] >= 0.975, got
    assert min(got["per_slide"]) >= 0.95, got


@pytest.mark.slow
def test_where_the_probe_lets_int8_through_the_held_out_slides_meet_the_gates(
    learned: Learned, tmp_path: Path
) -> None:
    """The probe's gates on its phantom thumbnails stand in for the user's slides: on every
    epoch of a run that learns, an int8 it accepts must hold the gates on the held-out slides
    too (within 0.003: they are other tiles). With two gate thumbnails the probe accepted an
    epoch whose held-out labels changed by 1.2% (Jaccard 0.982).

    Whether any epoch passes is the model's luck, not the probe's: the same run trained on 2
    threads gave probe figures of 98.7-99.6% / 0.958-0.990 (all just refused), on 1 thread
    some epochs passed. So each verdict must follow its own figures, and those figures must
    show int8 measured against fp32 (near it), not something else."""
    from slidesift.backends import _default_factories

    int8_only = {"int8": _default_factories()["int8"]}
    verdicts = []
    for path in sorted(learned.run.glob("epoch_*.safetensors")):
        ck = load_checkpoint(path)
        verdict = probe(ck, cache_dir=tmp_path, candidates=int8_only).verdicts["int8"]
        held_out = _gate_figures(dataclasses.replace(learned, best=path), "int8", tmp_path)
        verdicts.append((path.name, verdict, held_out["agreement"], held_out["jaccard"]))
        gates_met = verdict.agreement >= AGREEMENT_GATE and verdict.jaccard >= JACCARD_GATE
        assert verdict.passed == gates_met, verdicts
        assert verdict.agreement >= 0.98 and verdict.jaccard >= 0.94, verdicts
        if verdict.passed:
            assert held_out["agreement"] >= AGREEMENT_GATE - 0.003, verdicts
            assert held_out["jaccard"] >= JACCARD_GATE - 0.003, verdicts


@pytest.mark.slow
def test_the_first_layer_bias_correction_brings_int8_closer_to_fp32(
    learned: Learned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ablation of :func:`slidesift.quantize._correct_first_bias` on every epoch of the learned
    model, held-out slides. Measured on an AMD EPYC (AVX2), 1468 kept tiles an epoch, with /
    without the correction, on the model trained with HED jitter (1 thread): label agreement
    99.3-99.9% / 98.0-99.5% (better on 5 of 5 epochs), mean probability change 0.0029 /
    0.0090 (better on 5 of 5), pooled Jaccard 0.964-0.998 / 0.944-0.990; four epochs pass the
    gates with it, none without. On the earlier model without jitter: 99.5-99.7% / 98.2-99.6%,
    0.0058 / 0.0104, four epochs against one."""
    from slidesift import quantize

    runs = sorted(learned.run.glob("epoch_*.safetensors"))

    def pooled(tag: str) -> tuple[float, float]:
        figures = [
            _gate_figures(dataclasses.replace(learned, best=path), "int8", tmp_path / tag)
            for path in runs
        ]
        return (float(np.mean([f["agreement"] for f in figures])),
                float(np.mean([f["mean_change"] for f in figures])))  # fmt: skip

    with_agreement, with_change = pooled("corrected")
    monkeypatch.setattr(quantize, "_correct_first_bias", lambda *args: None)
    without_agreement, without_change = pooled("uncorrected")
    got = (with_agreement, with_change, without_agreement, without_change)
    assert with_agreement > without_agreement, got
    assert with_change < 0.8 * without_change, got


def test_int8_graphs_go_to_the_cache_folder_and_are_reused(
    checkpoint: Checkpoint, cache: Path
) -> None:
    from slidesift.quantize import onnx_cache_dir, quantized

    maps, head = quantized(checkpoint, cache_dir=cache)
    folder = onnx_cache_dir(checkpoint, cache)
    assert maps.parent == head.parent == folder and folder.parent == cache / "onnx"
    assert checkpoint.path is not None
    assert not list(checkpoint.path.parent.glob("*int8*"))  # nothing beside the checkpoint
    stamps = (maps.stat().st_mtime_ns, head.stat().st_mtime_ns)
    assert quantized(checkpoint, cache_dir=cache) == (maps, head)
    assert (maps.stat().st_mtime_ns, head.stat().st_mtime_ns) == stamps
    maps.write_bytes(b"damaged")
    assert quantized(checkpoint, cache_dir=cache)[0] == maps and maps.stat().st_size > 1000


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_int8_and_bf16_follow_fp32_on_a_discriminative_model(
    checkpoint: Checkpoint, cache: Path, kind: str
) -> None:
    """A loose check on any model: the reduced-precision probabilities follow fp32's."""
    image, _ = he_like_image((T + 16 * 14, T + 16 * 17), seed=3, tumor_fraction=0.4)
    xy = TileGrid.from_stride(image.shape[:2], tile=T, stride=16).th_xy()
    out = {}
    for name in ("dense", kind):
        net = backends.build_backend(name, checkpoint, cache_dir=cache)
        p = np.zeros((len(xy), 2), np.float32)
        for idx, q in net.classify(image, xy, 16):
            p[idx] = q
        out[name] = p[:, 1]
    spread = float(out["dense"].max() - out["dense"].min())
    assert spread > 0.9
    # a random network amplifies rounding (measured: int8 0.06 mean, correlation 0.95; bf16
    # 0.02, 0.994); a wrong crop, BatchNorm or head decorrelates the outputs entirely
    assert float(np.abs(out[kind] - out["dense"]).mean()) <= 0.12 * spread
    assert float(np.corrcoef(out[kind], out["dense"])[0, 1]) >= 0.9


def test_dense_modes_need_a_stride_of_16(checkpoint: Checkpoint) -> None:
    from slidesift.errors import ConfigError

    image, _ = he_like_image((200, 240), seed=1)
    for mode in ("int8", "bf16"):
        with pytest.raises(ConfigError, match="multiple of 16"):
            segment_pixels(image, checkpoint, SegmentSpec(stride=30, inference=mode))  # type: ignore[arg-type]


# --- the probe ----------------------------------------------------------------------------------


class _Memo:
    """A dense classifier that answers from its first run's outputs (so it is fast), with its
    tumor probability replaced by ``1 - p`` when ``bad``."""

    def __init__(self, inner: DenseOnnx, name: str, bad: bool) -> None:
        self.inner, self.name, self.bad = inner, name, bad
        self.seen: dict[tuple[int, bytes], list[tuple[Any, Any]]] = {}

    def classify(self, pixels: np.ndarray, th_xy: np.ndarray, stride: int) -> Iterator[Any]:
        key = (id(pixels), th_xy.tobytes())
        if key not in self.seen:
            self.seen[key] = list(self.inner.classify(pixels, th_xy, stride))
        for idx, p in self.seen[key]:
            yield idx, (p[:, ::-1].copy() if self.bad else p)


def _memo(name: str, bad: bool) -> Any:
    return lambda ck, threads, cache: _Memo(DenseOnnx(ck, threads=threads), name, bad)


def test_probe_rejects_a_fast_backend_that_fails_a_gate_and_takes_a_fast_one_that_passes(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    got = probe(checkpoint, cache_dir=tmp_path,
                candidates={"bad": _memo("bad", True), "good": _memo("good", False)})  # fmt: skip
    bad, good, dense = got.verdicts["bad"], got.verdicts["good"], got.verdicts["dense"]
    assert bad.tiles_per_s > dense.tiles_per_s and not bad.passed
    assert bad.agreement < 0.5 and bad.jaccard < JACCARD_GATE
    assert good.passed and good.agreement == 1.0 and good.jaccard == 1.0
    assert got.choice == "good" and got.tiles >= 50


def test_probe_rejects_a_slow_or_broken_backend(checkpoint: Checkpoint, tmp_path: Path) -> None:
    def broken(ck: Checkpoint, threads: int | None, cache: Path | None) -> DenseOnnx:
        raise RuntimeError("no such kernel here")

    got = probe(checkpoint, cache_dir=tmp_path,
                candidates={"broken": broken, "same": lambda ck, t, c: DenseOnnx(ck)})  # fmt: skip
    assert not got.verdicts["broken"].passed and "no such kernel" in got.verdicts["broken"].note
    assert got.verdicts["same"].passed  # as accurate, but not 5% faster: not chosen
    assert got.choice in ("dense", "same")


def test_probe_is_cached_per_machine_key_and_checkpoint(
    checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def counted(name: str) -> Any:
        def make(ck: Checkpoint, threads: int | None, cache: Path | None) -> Any:
            calls.append(name)
            return _Memo(DenseOnnx(ck, threads=threads), name, False)

        return make

    candidates = {"good": counted("good")}
    first = probe(checkpoint, cache_dir=tmp_path, candidates=candidates)
    assert not first.cached and first.path.exists() and first.path.parent == tmp_path / "probe"
    assert calls == ["good"]
    again = probe(checkpoint, cache_dir=tmp_path, candidates=candidates)
    assert again.cached and again.choice == first.choice and calls == ["good"]
    assert again.verdicts == first.verdicts
    # another machine (CPU model), or other threads: probed again, in a file of its own
    real = backends.machine_key
    other = {**real(None), "cpu": "other CPU"}
    monkeypatch.setattr(backends, "machine_key", lambda threads=None: {**other, "threads": threads})
    moved = probe(checkpoint, cache_dir=tmp_path, candidates=candidates)
    assert not moved.cached and moved.path != first.path and calls == ["good", "good"]
    monkeypatch.setattr(backends, "machine_key", real)
    assert probe(checkpoint, cache_dir=tmp_path, candidates=candidates).cached
    # a cache file whose key does not match (edited, or written by other versions) is not used
    doc = first.path.read_text(encoding="utf-8")
    first.path.write_text(doc.replace('"onnxruntime": "', '"onnxruntime": "0.'), encoding="utf-8")
    assert not probe(checkpoint, cache_dir=tmp_path, candidates=candidates).cached
    assert calls == ["good"] * 3
    assert (
        probe(checkpoint, threads=1, cache_dir=tmp_path, candidates=candidates).key["threads"] == 1
    )


def test_auto_uses_the_probes_choice_on_the_cpu(
    checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    seg = importlib.import_module(
        "slidesift.segment"
    )  # the package exports a function of that name
    asked: list[int | None] = []

    def fake(ck: Checkpoint, *, threads: int | None = None, cache_dir: Any = None) -> Probe:
        asked.append(threads)
        verdict = Verdict("int8", 1.0, 1.0, 1.0, True)
        return Probe("int8", {"int8": verdict}, {}, "x", tmp_path / "p.json", False, 1)

    monkeypatch.setattr(seg, "probe", fake)
    monkeypatch.setattr(seg, "_cuda_available", lambda: False)
    image, _ = he_like_image((300, 360), seed=11, tumor_fraction=0.4)
    classifiers = Classifiers(checkpoint, threads=2, probe=True, cache_dir=tmp_path)
    r = segment_pixels(image, checkpoint, SegmentSpec(stride=32), classifiers=classifiers)
    assert r.inference == "onnx dense int8" and asked == [2]
    segment_pixels(image, checkpoint, SegmentSpec(stride=32), classifiers=classifiers)
    assert asked == [2]  # asked once per Classifiers
    # per tile where the dense path does not apply; fp32 dense when probing is off
    assert segment_pixels(image, checkpoint, SegmentSpec(stride=30),
                          classifiers=classifiers).inference == "onnx per tile"  # fmt: skip
    off = Classifiers(checkpoint, probe=False)
    assert segment_pixels(image, checkpoint, SegmentSpec(stride=32),
                          classifiers=off).inference == "onnx dense"  # fmt: skip
    assert asked == [2]


@pytest.mark.slow
def test_the_real_probe_on_the_learned_model(learned: Learned, tmp_path: Path) -> None:
    """int8 and bf16 run, are measured and gated; the choice passed its gates."""
    ck = load_checkpoint(learned.best)
    got = probe(ck, cache_dir=tmp_path)
    assert set(got.verdicts) == {"dense", "int8", "bf16"}
    for v in got.verdicts.values():
        assert v.tiles_per_s > 0 and 0.9 <= v.agreement <= 1.0 and 0.5 <= v.jaccard <= 1.0, v
    assert got.verdicts[got.choice].passed and got.verdicts["dense"].passed
    assert (tmp_path / "onnx").is_dir()  # the int8 graphs went to the cache folder


def test_int8_weights_are_7_bit_so_no_cpu_saturates(checkpoint: Checkpoint, cache: Path) -> None:
    """ONNX Runtime's u8 x s8 kernels on x86 without VNNI (AVX2: an AMD EPYC of this VM) add
    pairs of products in 16 bits with saturation: 255 * 127 * 2 overflows, 255 * 64 * 2 does
    not. With full 8-bit weights the int8 trunk's probabilities there were off by 0.36 on
    average (fp32 spread 1.0); the graphs travel in bundles to any CPU, so every weight of both
    int8 graphs must lie in [-64, 64]."""
    import onnx
    from onnx import numpy_helper

    from slidesift.quantize import quantized

    for path in quantized(checkpoint, cache_dir=cache):
        weights = [
            numpy_helper.to_array(t)
            for t in onnx.load(str(path)).graph.initializer
            if t.data_type == onnx.TensorProto.INT8
        ]
        assert weights, f"{path.name} holds no int8 weights"
        low = min(int(w.min()) for w in weights)
        high = max(int(w.max()) for w in weights)
        assert low >= -64 and high <= 64, (path.name, low, high)
        assert high >= 60 or low <= -60  # the 7-bit range is used, not left empty


def test_quantising_leaves_the_root_logger_as_it_was(checkpoint: Checkpoint, tmp_path) -> None:
    """ONNX Runtime's quantisation calls ``logging.warning``, which installs a root handler
    when there is none: left installed, the demo then printed every INFO line of Dask's
    scheduler and workers. Run in a fresh process (pytest's own handlers hide it here)."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from slidesift.checkpoint import load_checkpoint\n"
        "from slidesift.quantize import quantized\n"
        "quantized(load_checkpoint(sys.argv[1]), cache_dir=sys.argv[2])\n"
        "print(len(logging.getLogger().handlers), logging.getLogger().level)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(checkpoint.path), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", str(logging.WARNING)]
