"""Per-tile classification with torch: the network itself, on the GPU where there is one.

Used where torch sees a GPU, and as the reference the ONNX paths are checked against. On CUDA
the network runs channels_last in bf16 (or fp16) autocast; ``compile=True`` adds
``torch.compile`` with every BatchNorm folded into the convolution before it (exact in eval
mode). Host-to-device copies go through pinned memory, so they overlap with the previous
batch's kernels.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import ConfigError, require

__all__ = ["TorchTiles", "fold_batchnorms"]

#: Precision of the forward pass: ``auto`` is bf16 on CUDA and fp32 elsewhere.
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def fold_batchnorms(model: Any) -> Any:
    """The network with BatchNorms 1-4 folded into the convolution after each.

    A block is ``Conv -> ReLU -> MaxPool -> BatchNorm``; in eval mode a BatchNorm is
    ``x * a + c`` per channel, and a valid (unpadded) convolution of that equals one with
    weights ``W * a`` and bias ``b + sum(W * c)``. BatchNorm 5 feeds the head and stays.
    Returns a new ``nn.Sequential(features, head)`` computing the same function (to float
    rounding), four BatchNorm passes shorter.

    Parameters
    ----------
    model
        A :class:`slidesift.model.LightweightCNN` in eval mode.
    """
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    scale = torch.ones(3)
    shift = torch.zeros(3)
    feats = list(model.features)
    for b in range(len(feats) // 4):
        conv, relu, pool, bn = feats[4 * b : 4 * b + 4]
        w, bias = conv.weight.detach(), conv.bias.detach()
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size)
        fused.weight = nn.Parameter(w * scale[None, :, None, None], requires_grad=False)
        fused.bias = nn.Parameter(
            bias + (w * shift[None, :, None, None]).sum(dim=(1, 2, 3)), requires_grad=False
        )
        layers += [fused, relu, pool]
        a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        c = (bn.bias - bn.running_mean * a).detach()
        if b == len(feats) // 4 - 1:
            layers.append(bn)  # the last BatchNorm feeds the head: kept as it is
        else:
            scale, shift = a, c
    return nn.Sequential(nn.Sequential(*layers), model.head).eval()


class TorchTiles:
    """Per-tile classification with torch.

    Parameters
    ----------
    checkpoint
        The model.
    device
        ``cpu`` or ``cuda`` (``cuda:N``).
    precision
        ``auto`` (bf16 on CUDA, fp32 on the CPU), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
    compile
        Fold the BatchNorms and run the network through ``torch.compile`` (first call slow).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "cpu",
        precision: Precision = "auto",
        compile: bool = False,
    ) -> None:
        require("torch", "learn", "torch inference")
        import torch

        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError("precision", precision, "'auto', 'fp32', 'bf16' or 'fp16'")
        cuda = str(device).startswith("cuda")
        if precision == "fp16" and not cuda:
            raise ConfigError("precision", precision, "fp16 on CUDA only; bf16 or fp32 here")
        self.device = device
        self.precision = ("bf16" if cuda else "fp32") if precision == "auto" else precision
        model = checkpoint.model()
        if compile:
            model = fold_batchnorms(model)
        model = model.to(device, memory_format=torch.channels_last)
        self.model: Any = torch.compile(model) if compile else model
        self.name = f"torch {device} {self.precision}" + (" compiled" if compile else "")
        self._pin = cuda

    def _autocast(self) -> Any:
        import contextlib

        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        kind = "cuda" if str(self.device).startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=dtype)

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``(B, T, T, 3)`` uint8 -> ``(B, C)`` float32 probabilities."""
        import torch

        from slidesift.model import probabilities, scale_input

        host = torch.from_numpy(np.ascontiguousarray(tiles))
        if self._pin:
            host = host.pin_memory()
        x = scale_input(host, self.device)
        with torch.no_grad(), self._autocast():
            p = probabilities(self.model(x))
        return np.asarray(p.float().cpu().numpy(), np.float32)
