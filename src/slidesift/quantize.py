"""The conv trunk in int8: ONNX Runtime static quantisation, calibrated on phantom thumbnails.

The dense path's conv trunk (blocks 1-4, conv 5 and its ReLU) is quantised with
:func:`onnxruntime.quantization.quantize_static`: QDQ format, weights int8 per output channel,
activations uint8 per tensor (MinMax ranges), the form ONNX Runtime's x86 kernels (AVX-512
VNNI where the CPU has it) run as ``QLinearConv``. The trunk is rebuilt for int8 first:

- BatchNorms folded so that activations arrive normalised (:func:`_balanced`) and their
  per-channel ranges evened out on the calibration images (:func:`_spread`). Folded as the
  fp32 ``maps`` graph is (each BatchNorm into the next convolution), a learned model's
  channels differ 50-fold in scale and int8 moves 12% of the test tiles' probabilities by more
  than 0.5 on average; balanced, the mean change is under 0.01;
- four input channels (RGB and a fourth one whose weights are zero; the runner fills it with
  :func:`cv2.cvtColor`): ONNX Runtime's int8 convolution is about 2.5x faster on 4 input
  channels than on 3;
- the uint8 pixels feed the first ``DequantizeLinear`` directly (its range is pinned to
  [0, 255]: scale 1, zero point 0, exact), without a float cast and re-quantisation.

The head (BatchNorm 5 and the three dense layers, run per tile on the pooled conv-5 features)
is quantised dynamically: int8 weights per output channel, inputs quantised per batch at run
time, no calibration; about 2x faster than float32 and no measurable change in the outputs.

Calibration data. Activation ranges need pixels; a checkpoint holds no training tiles, and the
slide being segmented must not decide its own quantisation (results would depend on which
slide came first). The ranges come from :data:`CALIBRATION_SEEDS`: phantom PAIP- and
CAMELYON-like thumbnails (:mod:`slidesift.phantom`, textures drawn at the model's training
scale from the checkpoint's ``training_scale``, 3 um/px without it), rendered
deterministically, so one checkpoint always gives the same int8 graph. They are H&E-like,
not the training slides: the accuracy gates of :mod:`slidesift.backends` decide whether the
int8 trunk may be used, and ``inference="dense"`` stays the fp32 reference.

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.cache import default_cache_dir
from slidesift.checkpoint import Checkpoint
from slidesift.errors import CheckpointError, require
from slidesift.inference import DenseOnnx, _digest, _export, _session

__all__ = [
    "CALIBRATION_SEEDS",
    "RECIPE",
    "calibration_thumbnails",
    "int8_dense",
    "model_um_per_px",
    "onnx_cache_dir",
    "quantized",
]

#: Changes whenever the int8 graph or its calibration would come out differently.
RECIPE = "int8-balanced-spread-rgbx-minmax-dynamic-head/1"
#: Seeds of the phantom calibration thumbnails (PAIP-like and CAMELYON-like in turn).
CALIBRATION_SEEDS = (9101, 9102, 9103, 9104)
#: um per thumbnail px of the phantoms when the checkpoint does not record its training scale
#: (the paper's 6000-px PAIP2020 thumbnails are about 3 um/px).
DEFAULT_UM_PER_PX = 3.0
#: Largest factor :func:`_spread` gives a channel.
_SPREAD_LIMIT = 100.0
#: Largest difference of the balanced fp32 trunk and head from the network's probabilities.
_PARITY_ATOL = 1e-4
_META_RECIPE = "slidesift_recipe"


def onnx_cache_dir(checkpoint: Checkpoint, root: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/onnx/<checkpoint digest>``: where derived graphs of ``checkpoint`` live."""
    base = Path(root) if root is not None else default_cache_dir()
    return base / "onnx" / _digest(checkpoint)


def model_um_per_px(checkpoint: Checkpoint) -> float:
    """The training slides' median um per thumbnail px, else :data:`DEFAULT_UM_PER_PX`."""
    scale = checkpoint.meta.get("training_scale") or {}
    um = scale.get("um_per_px")
    return float(um) if um else DEFAULT_UM_PER_PX


def calibration_thumbnails(
    checkpoint: Checkpoint, seeds: tuple[int, ...] = CALIBRATION_SEEDS
) -> list[NDArray[np.uint8]]:
    """Phantom thumbnails at the model's scale, one per seed (deterministic).

    Each is ``(max(3 T, 768), max(4 T, 1024))`` px: PAIP-like (glandular tumor) and
    CAMELYON-like (solid) slides in turn, with the phantom's usual artifacts (pen, folds,
    blur) at probability 0.3.

    Returns
    -------
    list of numpy.ndarray
        ``(H, W, 3)`` uint8 RGB images.
    """
    from slidesift.phantom import plan_slide, render_image

    t = checkpoint.tile
    shape = (max(3 * t, 768), max(4 * t, 1024))
    um = model_um_per_px(checkpoint)
    out = []
    for k, seed in enumerate(seeds):
        paip = k % 2 == 0
        layout = plan_slide(
            shape, seed=seed, mpp=um, regime="paip" if paip else "camelyon",
            subtype="glandular" if paip else "solid", artifacts=0.3,
        )  # fmt: skip
        out.append(np.ascontiguousarray(render_image(layout)))
    return out


def _balanced(checkpoint: Checkpoint, spread: Sequence[Any] | None = None) -> tuple[Any, Any]:
    """The network as a trunk and a head whose activations int8 can hold.

    A BatchNorm after ReLU and pooling is ``a x + c`` per channel. Its gain ``|a|`` moves into
    the convolution before (``relu(|a| z) = |a| relu(z)`` and max-pooling commutes with a
    positive gain), its sign and shift into the convolution after (as ``_folded_maps`` does
    with the whole BatchNorm). Folding all of ``a`` forward leaves every channel at its own
    scale (a checkpoint's block-1 gains span 7 to 316): one uint8 range per tensor then
    crushes the small channels that the BatchNorm amplifies. Balanced, each channel arrives
    normalised. Exact in real arithmetic.

    Returns
    -------
    tuple
        ``trunk``: ``(B, H, W, 4)`` uint8 (RGB and a channel whose weights are zero) ->
        ``(B, 64, H5, W5)`` conv-5 maps times ``|a5|``; ``head``: pooled such maps
        ``(B, 64, S, S)`` -> ``(B, C)`` probabilities.
    """
    import torch

    from slidesift.model import probabilities

    net = checkpoint.model()
    features = net.features
    layers: list[Any] = []
    scale: Any = torch.full((3,), 1.0 / 255.0)
    shift: Any = torch.zeros(3)
    for b in range(5):
        conv, bn = features[4 * b], features[4 * b + 3]
        a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        w, bias = conv.weight.detach(), conv.bias.detach()
        bias = bias + (w * shift[None, :, None, None]).sum(dim=(1, 2, 3))
        w = w * scale[None, :, None, None]
        gain = a.abs() * (spread[b] if spread is not None else 1.0)
        w, bias = w * gain[:, None, None, None], bias * gain
        if b == 0:  # the fourth input channel: weights zero
            w = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
        fused = torch.nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size)
        fused.weight = torch.nn.Parameter(w, requires_grad=False)
        fused.bias = torch.nn.Parameter(bias, requires_grad=False)
        layers += [fused, torch.nn.ReLU()] + ([features[4 * b + 2]] if b < 4 else [])
        scale = torch.where(a < 0, -1.0, 1.0) / (spread[b] if spread is not None else 1.0)
        shift = (bn.bias - bn.running_mean * a).detach()
    body = torch.nn.Sequential(*layers).eval()
    sign, offset, dense = scale[None, :, None, None], shift[None, :, None, None], net.head.eval()

    class Trunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: Any) -> Any:
            return self.body(x.permute(0, 3, 1, 2).float())

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = dense

        def forward(self, x: Any) -> Any:
            return probabilities(self.dense(x * sign + offset))

    return Trunk().eval(), Head().eval()


def _rgbx(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``(H, W, 3)`` -> ``(H, W, 4)`` uint8 (fourth channel 255; its weights are zero)."""
    import cv2

    return np.asarray(cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2RGBA), np.uint8)


def _spread(checkpoint: Checkpoint, images: list[NDArray[np.uint8]]) -> list[Any]:
    """Per-channel factors that even out the balanced trunk's activation ranges.

    Channel ``k`` of block ``b`` whose largest activation over the calibration images is
    ``m_k`` (``M`` the largest of the block) is scaled by ``sqrt(M / m_k)`` (at most 100; 1 for
    a channel never active): half way, in logarithms, between leaving the activations' spread
    to the one per-tensor uint8 range and moving it all into the next convolution's weights,
    whose int8 steps are per output channel over all of its inputs (the usual compromise of
    cross-layer equalisation). On a learned model this halves the int8 error of blocks 2-5.

    Parameters
    ----------
    images
        ``(1, H, W, 4)`` uint8 calibration images.

    Returns
    -------
    list
        Five torch tensors ``(C_b,)``, for :func:`_balanced`.
    """
    import torch

    trunk, _ = _balanced(checkpoint)
    relus = [m for m in trunk.body if isinstance(m, torch.nn.ReLU)]
    peaks: list[Any] = [torch.zeros(0)] * len(relus)

    def keep(b: int) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            m = output.detach().amax(dim=(0, 2, 3))
            peaks[b] = m if peaks[b].numel() == 0 else torch.maximum(peaks[b], m)

        return hook

    hooks = [r.register_forward_hook(keep(b)) for b, r in enumerate(relus)]
    try:
        with torch.no_grad():
            for image in images:
                trunk(torch.from_numpy(image))
    finally:
        for h in hooks:
            h.remove()
    return [
        torch.where(m > 0, (m.max() / m.clamp_min(1e-12)).sqrt(), torch.ones_like(m)).clamp(
            max=_SPREAD_LIMIT
        )
        for m in peaks
    ]


def _export_balanced(
    checkpoint: Checkpoint, folder: Path, digest: str, spread: Sequence[Any] | None = None
) -> tuple[Path, Path]:
    """Export the balanced fp32 trunk and head; check that together they are the network.

    Raises
    ------
    CheckpointError
        Trunk, pooling and head through ONNX Runtime differ from the network's probabilities
        on random tiles by more than 1e-4.
    """
    import torch

    trunk, head = _balanced(checkpoint, spread)
    t = checkpoint.tile
    g = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (2, t, t, 3), dtype=torch.uint8, generator=g)
    rgbx = torch.from_numpy(np.stack([_rgbx(x) for x in tiles.numpy()]))
    paths = (folder / "maps-rgbx.onnx", folder / "head-balanced.onnx")
    with torch.no_grad():
        pooled = torch.nn.functional.max_pool2d(trunk(rgbx), 2)
        expected = checkpoint.model()(tiles.permute(0, 3, 1, 2).float() / 255.0)
    _export(trunk, rgbx, paths[0], {"x": {0: "b", 1: "h", 2: "w"}, "y": {0: "b", 2: "h", 3: "w"}},
            digest)  # fmt: skip
    _export(head, pooled, paths[1], {"x": {0: "b"}, "y": {0: "b"}}, digest)
    maps = _session(paths[0], None).run(None, {"x": rgbx.numpy()})[0]
    probs = _session(paths[1], None).run(None, {"x": _pool(maps)})[0]
    from slidesift.model import probabilities

    diff = float(np.abs(probs - probabilities(expected).numpy()).max())
    if diff > _PARITY_ATOL:
        for path in paths:
            path.unlink(missing_ok=True)
        raise CheckpointError(
            paths[0], f"the balanced trunk and head differ from the network by {diff:.2e}",
            "report this as a bug; segment with inference='dense' meanwhile",
        )  # fmt: skip
    return paths


def _pool(maps: NDArray[np.float32]) -> NDArray[np.float32]:
    """2x2 max-pooling (floor) of ``(B, C, H, W)``."""
    h, w = maps.shape[2] // 2 * 2, maps.shape[3] // 2 * 2
    b, c = maps.shape[:2]
    view = maps[:, :, :h, :w].reshape(b, c, h // 2, 2, w // 2, 2)
    return np.ascontiguousarray(view.max(axis=(3, 5)), np.float32)


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


def _has(path: Path, digest: str) -> bool:
    if not path.exists():
        return False
    try:
        meta = _session(path, 1).get_modelmeta().custom_metadata_map
    except Exception:
        return False
    return bool(meta.get("slidesift_checkpoint") == digest and meta.get(_META_RECIPE) == RECIPE)


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
        maps (times the BatchNorm-5 gains, see :func:`_balanced`); ``head.int8.onnx``: their
        2x2-pooled ``(B, 64, S, S)`` -> ``(B, C)`` float32 probabilities. Use them together.
    """
    require("torch", "learn", "quantising the model")
    require("onnx", "infer", "quantising the model")
    require("onnxruntime", "infer", "quantising the model")
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

    digest = _digest(checkpoint)
    folder = onnx_cache_dir(checkpoint, cache_dir)
    targets = (folder / "maps-rgbx.int8.onnx", folder / "head.int8.onnx")
    if all(_has(t, digest) for t in targets):
        return targets
    folder.mkdir(parents=True, exist_ok=True)
    images = [_rgbx(p)[None] for p in calibration_thumbnails(checkpoint)]
    source, head = _export_balanced(checkpoint, folder, digest, _spread(checkpoint, images))

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
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"TensorQuantOverrides": {cast_out: [pixel_range]}},
            calibration_cache_path=Path(tmp) / "calibration.json",
        )  # fmt: skip
        maps = onnx.load(str(raw))
        calibration = (Path(tmp) / "calibration.json").read_bytes()
        raw_head = Path(tmp) / "head.onnx"
        quantize_dynamic(str(head), str(raw_head), weight_type=QuantType.QInt8, per_channel=True)
        dense = onnx.load(str(raw_head))
    _feed_uint8(maps, cast_out)
    atomic_write_bytes(folder / "calibration-maps.json", calibration)
    return _save(maps, targets[0], digest), _save(dense, targets[1], digest)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantisation logs its advice to the root logger: silence it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


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
        out: NDArray[np.float32] = session.run(None, {"x": _rgbx(x[0])[None]})[0]
        return out

    return DenseOnnx(checkpoint, threads=threads, maps=maps, head=head_path, name="onnx dense int8")
