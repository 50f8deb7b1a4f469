"""The conv trunk in int8: ONNX Runtime static quantisation, calibrated on phantom thumbnails.

The dense path's conv trunk (blocks 1-4, conv 5 and its ReLU) is quantised with
:func:`onnxruntime.quantization.quantize_static`: QDQ format, weights int8 per output channel,
activations uint8 per tensor (MinMax ranges), the form ONNX Runtime's x86 kernels (AVX-512
VNNI where the CPU has it) run as ``QLinearConv``. Weights use 7 bits (``reduce_range``:
[-64, 64]): without VNNI (AVX2 only, e.g. an AMD EPYC Zen 2/3) those kernels add pairs of
u8 x s8 products in 16 bits with saturation, which 255 x 127 x 2 overflows; with 8-bit weights
the trunk's tumor probabilities there were off by 0.36 on average. The graphs travel in
bundles to any CPU, so one recipe must be safe on all of them. The trunk is rebuilt for int8 first:

- BatchNorms folded so that activations arrive normalised (:mod:`slidesift.balanced`). Folded
  as the fp32 ``maps`` graph is (each BatchNorm into the next convolution), a learned model's
  channels differ 50-fold in scale, and int8 changes the label of 12% of its held-out kept
  tiles (mean probability change 0.12); balanced, of 0.3% (mean change 0.003). Evening out
  the remaining per-channel ranges on the calibration images as well (cross-layer
  equalisation, square root of the spread) helped before the bias correction below and hurts
  after it (0.5% of labels), so it is not done;
- four input channels (RGB and a fourth one whose weights are zero; the runner fills it with
  :func:`cv2.cvtColor`): ONNX Runtime's int8 convolution is about 2.5x faster on 4 input
  channels than on 3;
- the uint8 pixels feed the first ``DequantizeLinear`` directly (its range is pinned to
  [0, 255]: scale 1, zero point 0, exact), without a float cast and re-quantisation;
- the first convolution's bias corrected for the mean error of its int8 weights on tissue
  pixels (:func:`_correct_first_bias`): its weights are the largest int8 error left. Ablated
  on the five epochs of two learned test models (held-out slides, AMD EPYC; trained without
  and with HED jitter): label agreement with fp32 99.5-99.7% and 99.3-99.9% with it,
  98.2-99.6% and 98.0-99.5% without; mean probability change 0.006 and 0.003 against 0.010
  and 0.009; four epochs of each pass the gates with it, one and none without
  (tests/test_backends.py).

On the learned test model (tests/test_backends.py) the int8 labels agree with fp32 on 99.7% of
the held-out kept tiles and the masks have a pooled Jaccard index of 0.996: inside the gates.
What remains is mostly the first convolution's int8 weights (27 per channel on raw pixels);
keeping that layer in float32 halves the error but also the speed-up, as its full-resolution
pass dominates.

The head (BatchNorm 5 and the three dense layers, run per tile on the pooled conv-5 features)
is quantised dynamically: int8 weights per output channel, inputs quantised per batch at run
time, no calibration; about 2x faster than float32 and no measurable change in the outputs.

Calibration data. Activation ranges need pixels; a checkpoint holds no training tiles, and the
slide being segmented must not decide its own quantisation (results would depend on which
slide came first). The ranges come from :data:`CALIBRATION_SEEDS`: phantom PAIP- and
CAMELYON-like thumbnails (:mod:`slidesift.phantom`, textures drawn at the model's training
scale from the checkpoint's ``training_scale``, 3 um/px without it, with pen marks, folds and
blur), rendered deterministically, so one checkpoint always gives the same int8 graph. They
are H&E-like, not the training slides: the accuracy gates of :mod:`slidesift.backends`
(checked on other phantom thumbnails) decide whether the int8 trunk may be used, and
``inference="dense"`` stays the fp32 reference. A user's own calibration set is not supported
yet.

Cache. Derived files go under the cache folder (:func:`slidesift.cache.default_cache_dir`),
never beside the checkpoint, keyed by the checkpoint's digest::

    onnx/<digest>/maps-rgbx.onnx          balanced fp32 trunk, 4-channel input (the source)
    onnx/<digest>/head-balanced.onnx      the fp32 head that goes with it (the source)
    onnx/<digest>/maps-rgbx.int8.onnx     the quantised trunk
    onnx/<digest>/head.int8.onnx          the quantised head
    onnx/<digest>/calibration-maps.json   the activation ranges (ONNX Runtime's format)

A quantised file is reused while its metadata carry the checkpoint's digest and :data:`RECIPE`;
files are written atomically, so processes that quantise at once (a cohort's workers) at worst
repeat the work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.balanced import export_balanced, rgbx
from slidesift.checkpoint import Checkpoint
from slidesift.errors import CheckpointError, require
from slidesift.inference import DenseOnnx, _ort, _session, onnx_metadata
from slidesift.onnx_cache import checkpoint_digest as _digest
from slidesift.onnx_cache import onnx_cache_dir, provide_graph

__all__ = [
    "CALIBRATION_SEEDS",
    "RECIPE",
    "calibration_thumbnails",
    "int8_dense",
    "model_um_per_px",
    "onnx_cache_dir",
    "phantom_thumbnails",
    "quantized",
]

#: Changes whenever the int8 graph or its calibration would come out differently.
RECIPE = "int8-balanced-rgbx-minmax-biascorr-dynamic-head-w7/2"
#: Seeds of the phantom calibration thumbnails (PAIP-like and CAMELYON-like in turn).
CALIBRATION_SEEDS = (9101, 9102, 9103, 9104)
#: um per thumbnail px of the phantoms when the checkpoint does not record its training scale
#: (the paper's 6000-px PAIP2020 thumbnails are about 3 um/px).
DEFAULT_UM_PER_PX = 3.0
#: Region side of the int8 dense path: uint8 activations take a quarter of float32's memory,
#: so twice the fp32 path's side holds as much; fewer, larger regions recompute less of their
#: 62-px margins (about 10% faster on a 6000-px thumbnail than 1600).
INT8_BLOCK_PX = 3200
#: Pixels darker than this (mean of R, G, B) are tissue for :func:`_tissue_mean`.
_TISSUE_GREY = 200
_META_RECIPE = "slidesift_recipe"


def model_um_per_px(checkpoint: Checkpoint) -> float:
    """The training slides' median um per thumbnail px, else :data:`DEFAULT_UM_PER_PX`."""
    scale = checkpoint.meta.get("training_scale") or {}
    um = scale.get("um_per_px")
    return float(um) if um else DEFAULT_UM_PER_PX


def phantom_thumbnails(
    checkpoint: Checkpoint,
    seeds: tuple[int, ...],
    shape: tuple[int, int],
    *,
    artifacts: float,
    finer: int = 1,
) -> list[NDArray[np.uint8]]:
    """Phantom thumbnails at the model's scale, one per seed (deterministic).

    PAIP-like (glandular tumor) and CAMELYON-like (solid) slides in turn, at the model's um
    per px (:func:`model_um_per_px`).

    Parameters
    ----------
    shape
        ``(H, W)`` of each thumbnail.
    artifacts
        Probability of each phantom artifact (pen, folds, blur, ...).
    finer
        Render this many times finer and area-average down, as a slide is read at N. Rendered
        at the model's scale directly (1), textures alias: sharper extremes (good for
        calibration ranges), but a learned model hesitates on 13% of the tiles (4% at 3).

    Returns
    -------
    list of numpy.ndarray
        ``(H, W, 3)`` uint8 RGB images.
    """
    import cv2

    from slidesift.phantom import plan_slide, render_image

    um = model_um_per_px(checkpoint) / finer
    out = []
    for k, seed in enumerate(seeds):
        paip = k % 2 == 0
        layout = plan_slide(
            (shape[0] * finer, shape[1] * finer), seed=seed, mpp=um,
            regime="paip" if paip else "camelyon", subtype="glandular" if paip else "solid",
            artifacts=artifacts,
        )  # fmt: skip
        image = render_image(layout)
        if finer > 1:
            image = np.asarray(cv2.resize(image, shape[::-1], interpolation=cv2.INTER_AREA))
        out.append(np.ascontiguousarray(image, np.uint8))
    return out


def calibration_thumbnails(checkpoint: Checkpoint) -> list[NDArray[np.uint8]]:
    """The int8 calibration images: :func:`phantom_thumbnails` of :data:`CALIBRATION_SEEDS`,
    ``(max(3 T, 768), max(4 T, 1024))`` px, rendered directly at the model's scale and with
    the usual artifacts (probability 0.3), so that the MinMax ranges cover hard extremes: on
    the learned test model these ranges beat realistic (3x finer, artifact-free) renders."""
    t = checkpoint.tile
    shape = (max(3 * t, 768), max(4 * t, 1024))
    return phantom_thumbnails(checkpoint, CALIBRATION_SEEDS, shape, artifacts=0.3)


def _input_cast(model: Any) -> Any:
    """The ``Cast`` node that turns the (transposed) uint8 input into float."""
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] != model.graph.input[0].name:
            producer = [n for n in model.graph.node if node.input[0] in n.output]
            if producer and producer[0].input[0] == model.graph.input[0].name:
                return node
    raise CheckpointError(Path("maps-rgbx.onnx"), "the trunk graph has no input cast")


def _feed_uint8(model: Any, cast_out: str) -> None:
    """Drop ``Cast -> QuantizeLinear`` after the input: the uint8 pixels are the quantised
    tensor already (its scale is 1 and zero point 0, checked here)."""
    from onnx import numpy_helper

    nodes = list(model.graph.node)
    cast = next(n for n in nodes if n.op_type == "Cast" and n.output[0] == cast_out)
    quant = next(n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] == cast_out)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale, zero = inits[quant.input[1]], inits[quant.input[2]]
    if float(scale) != 1.0 or int(zero) != 0 or zero.dtype != np.uint8:
        raise CheckpointError(
            Path("maps-rgbx.int8.onnx"),
            f"the input's quantisation is scale {float(scale)}, zero point {int(zero)}, not 1, 0",
            "report this as a bug; segment with inference='dense' meanwhile",
        )
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == quant.output[0]:
                node.input[i] = cast.input[0]
    model.graph.node.remove(cast)
    model.graph.node.remove(quant)


def _tissue_mean(images: list[NDArray[np.uint8]]) -> NDArray[np.float64]:
    """Mean ``(4,)`` pixel of the calibration images' tissue (grey level under 200)."""
    pixels = np.concatenate([x.reshape(-1, 4)[::7] for x in images]).astype(np.float64)
    tissue = pixels[pixels[:, :3].mean(axis=1) < _TISSUE_GREY]
    out: NDArray[np.float64] = (tissue if len(tissue) else pixels).mean(axis=0)
    return out


def _correct_first_bias(model: Any, source: Any, mean: NDArray[np.float64]) -> None:
    """Bias correction of the first convolution: add ``(w - w_int8) . mean`` to its bias.

    The first convolution's int8 weights cost most of the int8 error (its 27 weights per
    channel meet raw pixels; the rest of the trunk is far less sensitive). Its input is exact,
    so the mean error that the rounding of its weights adds to each channel on tissue pixels
    is known and is taken back out of the (int32) bias (Nagel et al. 2019, "Data-free
    quantization", bias correction).
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    w_dq, b_dq = dq[conv.input[1]], dq[conv.input[2]]
    q = numpy_helper.to_array(inits[w_dq.input[0]]).astype(np.float64)
    w_scale = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float64)
    first = next(n for n in source.graph.node if n.op_type == "Conv")
    src = {i.name: numpy_helper.to_array(i) for i in source.graph.initializer}
    w = src[first.input[1]].astype(np.float64)
    error = ((w - q * w_scale[:, None, None, None]).sum(axis=(2, 3)) * mean[None, :]).sum(axis=1)
    bias = inits[b_dq.input[0]]
    b_scale = numpy_helper.to_array(inits[b_dq.input[1]]).astype(np.float64)
    fixed = numpy_helper.to_array(bias).astype(np.float64) + np.round(error / b_scale)
    bias.CopyFrom(numpy_helper.from_array(fixed.astype(np.int32), bias.name))


def _has(path: Path, digest: str) -> bool:
    meta = onnx_metadata(path)
    return meta is not None and (
        meta.get("slidesift_checkpoint") == digest and meta.get(_META_RECIPE) == RECIPE
    )


def quantized(
    checkpoint: Checkpoint, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """The int8 trunk and head of ``checkpoint`` (built, calibrated and cached on first use).

    Parameters
    ----------
    checkpoint
        The model.
    cache_dir
        The cache folder; default :func:`slidesift.cache.default_cache_dir`. The graphs go
        to ``onnx/<checkpoint digest>/`` under it.

    Returns
    -------
    tuple of pathlib.Path
        ``maps-rgbx.int8.onnx``: ``(B, H, W, 4)`` uint8 -> ``(B, 64, H5, W5)`` float32 conv-5
        maps (times the BatchNorm-5 gains, see :mod:`slidesift.balanced`); ``head.int8.onnx``:
        their 2x2-pooled ``(B, 64, S, S)`` -> ``(B, C)`` float32 probabilities. Use them together.
    """
    digest = _digest(checkpoint)
    folder = onnx_cache_dir(checkpoint, cache_dir)
    targets = (folder / "maps-rgbx.int8.onnx", folder / "head.int8.onnx")
    for target in targets:  # a bundle's int8 graphs, if it has them
        provide_graph(checkpoint, target)
    if all(_has(t, digest) for t in targets):
        return targets
    if checkpoint.is_bundle:  # no weights to quantise
        raise CheckpointError(
            checkpoint.path or "<memory>",
            f"this model bundle has no int8 graphs of this slidesift's recipe ({RECIPE})",
            "use inference 'dense' (fp32), or export the bundle again from its checkpoint with "
            "this slidesift",
        )
    # not cached: build them (needs torch and onnx; a cached run never imports torch)
    require("torch", "learn", "quantising the model")
    require("onnx", "infer", "quantising the model")
    _ort("quantising the model")  # imported with its telemetry off
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from slidesift.io.atomic import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    images = [rgbx(p)[None] for p in calibration_thumbnails(checkpoint)]
    source, head = export_balanced(checkpoint, folder, digest)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feed = iter([{"x": x} for x in images])

        def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
            return next(self.feed, None)

    cast_out = _input_cast(onnx.load(str(source))).output[0]
    pixel_range = {"rmin": np.float32(0.0), "rmax": np.float32(255.0)}  # scale 1, zero point 0
    with _quiet(), tempfile.TemporaryDirectory(prefix="slidesift-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        raw = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
            extra_options={"TensorQuantOverrides": {cast_out: [pixel_range]}},
            calibration_cache_path=Path(tmp) / "calibration.json",
        )  # fmt: skip
        maps = onnx.load(str(raw))
        calibration = (Path(tmp) / "calibration.json").read_bytes()
        raw_head = Path(tmp) / "head.onnx"
        quantize_dynamic(str(head), str(raw_head), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True)  # fmt: skip
        dense = onnx.load(str(raw_head))
    _feed_uint8(maps, cast_out)
    _correct_first_bias(maps, onnx.load(str(source)), _tissue_mean(images))
    atomic_write_bytes(folder / "calibration-maps.json", calibration)
    return _save(maps, targets[0], digest), _save(dense, targets[1], digest)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantisation logs its advice to the root logger: silence it, and take
    back the handler its module-level ``logging.warning`` calls install (``basicConfig``):
    left there, it printed every INFO line of Dask's scheduler and workers afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


def _save(model: Any, target: Path, digest: str) -> Path:
    """Stamp the checkpoint's digest and :data:`RECIPE` into ``model``; write it atomically."""
    import onnx

    from slidesift.io.atomic import atomic_write

    del model.metadata_props[:]
    for key, value in (("slidesift_checkpoint", digest), (_META_RECIPE, RECIPE)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return atomic_write(target, lambda tmp: onnx.save(model, str(tmp)))


def int8_dense(
    checkpoint: Checkpoint,
    *,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DenseOnnx:
    """Dense classification with the int8 trunk and head (see :func:`quantized`).

    Parameters
    ----------
    checkpoint
        The model.
    threads
        ONNX Runtime intra-op threads.
    cache_dir
        See :func:`quantized`.
    """
    maps_path, head_path = quantized(checkpoint, cache_dir=cache_dir)
    session = _session(maps_path, threads)

    def maps(x: NDArray[np.uint8]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = session.run(None, {"x": rgbx(x[0])[None]})[0]
        return out

    return DenseOnnx(checkpoint, block_px=INT8_BLOCK_PX, threads=threads, maps=maps,
                     head=head_path, name="onnx dense int8")  # fmt: skip
