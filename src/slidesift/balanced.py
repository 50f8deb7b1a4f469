"""The network rebuilt for int8: BatchNorms folded so that every activation arrives normalised.

:func:`balanced_network` gives a trunk and a head that equal the network (in real arithmetic)
but whose channels share one scale, so that one uint8 range per tensor fits them all;
:func:`export_balanced` writes both to ONNX and checks them against the network. The int8
graphs themselves are made in :mod:`slidesift.quantize`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import CheckpointError
from slidesift.inference import _export, _session

__all__ = ["balanced_network", "export_balanced", "rgbx"]

#: Largest difference of the balanced fp32 trunk and head from the network's probabilities.
PARITY_ATOL = 1e-4


def balanced_network(checkpoint: Checkpoint) -> tuple[Any, Any]:
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
        gain = a.abs()  # into this convolution; the rest of a, a / gain, into the next
        w, bias = w * gain[:, None, None, None], bias * gain
        if b == 0:  # the fourth input channel: weights zero
            w = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
        fused = torch.nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size)
        fused.weight = torch.nn.Parameter(w, requires_grad=False)
        fused.bias = torch.nn.Parameter(bias, requires_grad=False)
        layers += [fused, torch.nn.ReLU()] + ([features[4 * b + 2]] if b < 4 else [])
        scale = torch.where(gain > 0, a / gain.clamp_min(1e-30), 1.0)
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


def rgbx(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``(H, W, 3)`` -> ``(H, W, 4)`` uint8 (fourth channel 255; its weights are zero)."""
    import cv2

    return np.asarray(cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2RGBA), np.uint8)


def export_balanced(checkpoint: Checkpoint, folder: Path, digest: str) -> tuple[Path, Path]:
    """Export the balanced fp32 trunk and head; check that together they are the network.

    They go to ``folder / "maps-rgbx.onnx"`` and ``folder / "head-balanced.onnx"``, stamped
    with ``digest``.

    Raises
    ------
    CheckpointError
        Trunk, pooling and head through ONNX Runtime differ from the network's probabilities
        on random tiles by more than 1e-4.
    """
    import torch

    trunk, head = balanced_network(checkpoint)
    t = checkpoint.tile
    g = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (2, t, t, 3), dtype=torch.uint8, generator=g)
    feed = torch.from_numpy(np.stack([rgbx(x) for x in tiles.numpy()]))
    paths = (folder / "maps-rgbx.onnx", folder / "head-balanced.onnx")
    with torch.no_grad():
        pooled = torch.nn.functional.max_pool2d(trunk(feed), 2)
        expected = checkpoint.model()(tiles.permute(0, 3, 1, 2).float() / 255.0)
    dynamic = {"x": {0: "b", 1: "h", 2: "w"}, "y": {0: "b", 2: "h", 3: "w"}}
    _export(trunk, feed, paths[0], dynamic, digest)
    _export(head, pooled, paths[1], {"x": {0: "b"}, "y": {0: "b"}}, digest)
    maps = _session(paths[0], None).run(None, {"x": feed.numpy()})[0]
    probs = _session(paths[1], None).run(None, {"x": _pool(maps)})[0]
    from slidesift.model import probabilities

    diff = float(np.abs(probs - probabilities(expected).numpy()).max())
    if diff > PARITY_ATOL:
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
