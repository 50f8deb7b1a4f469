"""Classification with torch: the network itself, on the GPU where there is one.

- :class:`TorchTiles`: per tile. Used where torch sees a GPU and the stride does not allow the
  dense path, and as the reference the ONNX paths are checked against. On CUDA the network
  runs channels_last in bf16 (or fp16) autocast; ``compile=True`` adds ``torch.compile`` with
  every BatchNorm folded into the convolution before it (exact in eval mode).
- :func:`torch_dense`: the dense path of :class:`slidesift.inference.DenseOnnx` with its conv
  trunk (:class:`TorchMaps`, over 99% of the arithmetic) and its head (:class:`TorchHead`) run
  by torch on ``cpu`` or ``cuda``; the 2x2 pooling of the conv-5 maps and the gathering of each
  tile's features stay on the host. On CUDA the trunk runs in bf16 (pixels 0-255 are exact in
  bf16; the 1/255 scaling is folded into conv 1) and the head in float32.

Host-to-device copies go through pinned memory on CUDA, so they overlap with earlier kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import ConfigError, require

if TYPE_CHECKING:
    from slidesift.inference import DenseOnnx

__all__ = ["TorchHead", "TorchMaps", "TorchTiles", "fold_batchnorms", "torch_dense"]

#: The short name of each torch dtype a forward pass may run in.
_PRECISION_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
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

        cuda, dtype = _device_dtype(device, precision)
        self.device = device
        self.precision = _PRECISION_NAMES[str(dtype).removeprefix("torch.")]
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


def _device_dtype(device: str, precision: Precision) -> tuple[bool, Any]:
    """Whether ``device`` is CUDA, and the torch dtype ``precision`` means there."""
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError("precision", precision, "'auto', 'fp32', 'bf16' or 'fp16'")
    cuda = str(device).startswith("cuda")
    if precision == "fp16" and not cuda:
        raise ConfigError("precision", precision, "fp16 on CUDA only; bf16 or fp32 here")
    chosen = ("bf16" if cuda else "fp32") if precision == "auto" else precision
    return cuda, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[chosen]


class TorchMaps:
    """The conv trunk of the dense path (blocks 1-4, conv 5 and its ReLU; BatchNorms and the
    1/255 scaling folded into the convolutions) run by torch.

    A :data:`slidesift.inference.MapsRunner`: ``(1, H, W, 3)`` uint8 image ->
    ``(1, C5, H5, W5)`` float32 conv-5 maps, the image's pixel frame divided by 16.

    Parameters
    ----------
    checkpoint
        The model.
    device
        ``cpu`` or ``cuda`` (``cuda:N``).
    precision
        ``auto`` (bf16 on CUDA, fp32 on the CPU), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        bf16 on the CPU goes through oneDNN (AVX-512 BF16 or AMX where the CPU has them;
        emulated, and slow, where it does not).
    threads
        torch intra-op threads (process-wide); ``None`` leaves torch's setting.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "cpu",
        precision: Precision = "auto",
        threads: int | None = None,
    ) -> None:
        require("torch", "learn", "torch dense inference")
        import torch

        from slidesift.inference import _folded_maps

        cuda, self.dtype = _device_dtype(device, precision)
        if threads:
            torch.set_num_threads(threads)
        net = _folded_maps(checkpoint.model().features).to(device, self.dtype)
        self.module = net.to(memory_format=torch.channels_last).eval()
        self.device, self._pin = device, cuda

    def __call__(self, x: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``(1, H, W, 3)`` uint8 -> ``(1, C5, H5, W5)`` float32 conv-5 maps."""
        import torch

        host = torch.from_numpy(np.ascontiguousarray(x))
        if self._pin:
            host = host.pin_memory()
        pixels = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        with torch.no_grad():
            y = self.module(pixels.to(self.dtype).contiguous(memory_format=torch.channels_last))
        return np.ascontiguousarray(y.float().cpu().numpy())


class TorchHead:
    """BatchNorm 5 and the dense head run by torch in float32: ``(B, C5, S, S)`` pooled conv-5
    features -> ``(B, C)`` probabilities (column 0 non-tumor).

    Parameters
    ----------
    checkpoint
        The model.
    device
        ``cpu`` or ``cuda`` (``cuda:N``).
    """

    def __init__(self, checkpoint: Checkpoint, *, device: str = "cpu") -> None:
        require("torch", "learn", "torch dense inference")
        import torch

        from slidesift.inference import _MAPS_END

        net = checkpoint.model()
        self.module = torch.nn.Sequential(net.features[_MAPS_END + 1 :], net.head).to(device)
        self.module.eval()
        self.device, self._pin = device, str(device).startswith("cuda")

    def __call__(self, feats: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(B, C5, S, S)`` float32 -> ``(B, C)`` float32 probabilities."""
        import torch

        from slidesift.model import probabilities

        host = torch.from_numpy(np.ascontiguousarray(feats))
        if self._pin:
            host = host.pin_memory()
        with torch.no_grad():
            p = probabilities(self.module(host.to(self.device, non_blocking=True)))
        return np.asarray(p.cpu().numpy(), np.float32)


def torch_dense(
    checkpoint: Checkpoint,
    *,
    device: str = "cpu",
    precision: Precision = "auto",
    threads: int | None = None,
) -> DenseOnnx:
    """The dense classifier with its trunk and head run by torch on ``device``.

    Same interface and outputs as :class:`slidesift.inference.DenseOnnx` (fp32 equals it to
    float summation order); needs no ONNX Runtime. ``name`` is ``torch dense <device>
    <precision>``.

    Parameters
    ----------
    checkpoint
        The model (not a bundle: it holds no torch weights).
    device, precision, threads
        As :class:`TorchMaps`.
    """
    from slidesift.inference import DenseOnnx

    maps = TorchMaps(checkpoint, device=device, precision=precision, threads=threads)
    name = f"torch dense {device} {_PRECISION_NAMES[str(maps.dtype).removeprefix('torch.')]}"
    head = TorchHead(checkpoint, device=device)
    return DenseOnnx(checkpoint, maps=maps, head=head, name=name)
