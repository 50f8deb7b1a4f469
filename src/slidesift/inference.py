"""Classify tiles with a checkpoint: ONNX Runtime on the CPU, torch on CUDA, per tile or dense.

Every classifier maps uint8 RGB tiles to class probabilities ``(B, C)`` (column 0 non-tumor).

- :class:`OnnxTiles`: the checkpoint exported to ONNX (uint8 NHWC tiles in, probabilities out,
  the scaling inside the graph), cached beside the checkpoint and checked against torch on
  random tiles (max abs difference <= 1e-4) when exported.
- :class:`TorchTiles`: the network itself (CUDA: bf16 autocast, channels_last).
- :class:`DenseOnnx`: shared feature maps. With a stride that is a multiple of 16, the first
  four conv+pool blocks of every tile are crops of the same blocks run once over a region of
  the thumbnail (valid convolutions; the 2x2 pooling grids stay aligned because every tile
  starts on a multiple of 16), so only the fifth block and the dense head run per tile. The
  outputs equal per-tile evaluation up to float summation order. Regions are blocks of tiles
  (bounded memory), and only blocks holding a kept tile are computed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import SlidesiftError

__all__ = [
    "DENSE_STEP",
    "DenseOnnx",
    "OnnxTiles",
    "TileClassifier",
    "TorchTiles",
    "dense_applies",
    "export_onnx",
]

#: Tiles must start on multiples of this for the dense path (four 2x2 poolings).
DENSE_STEP = 16
_PARITY_ATOL = 1e-4


class TileClassifier(Protocol):
    """Anything that classifies batches of tiles."""

    name: str

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``(B, T, T, 3)`` uint8 -> ``(B, C)`` float32 probabilities."""
        ...


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - part of the 'all' extra
        raise ImportError(
            "CPU inference needs the 'infer' extra: pip install 'slidesift[infer]'"
        ) from exc
    return onnxruntime


def _wrapped(checkpoint: Checkpoint, part: str) -> Any:
    """The network (or its trunk / tail) with uint8 NHWC input and probability output."""
    import torch

    from slidesift.model import probabilities

    net = checkpoint.model()
    for p in net.parameters():
        p.requires_grad_(False)

    class Wrapped(torch.nn.Module):
        def __init__(self, body: Any, images_in: bool, probs_out: bool) -> None:
            super().__init__()
            self.body, self.images_in, self.probs_out = body, images_in, probs_out

        def forward(self, x: Any) -> Any:
            if self.images_in:
                x = x.permute(0, 3, 1, 2).float() / 255.0
            y = self.body(x)
            return probabilities(y) if self.probs_out else y

    if part == "whole":
        return Wrapped(net, True, True).eval()
    if part == "trunk":
        return Wrapped(net.features[:16], True, False).eval()
    return Wrapped(torch.nn.Sequential(net.features[16:], net.head), False, True).eval()


def _digest(checkpoint: Checkpoint) -> str:
    if checkpoint.path is not None and checkpoint.path.exists():
        return hashlib.blake2b(checkpoint.path.read_bytes(), digest_size=16).hexdigest()
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(checkpoint.state):
        h.update(k.encode())
        h.update(checkpoint.state[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _export(module: Any, example: Any, path: Path, dynamic: dict[str, dict[int, str]],
            digest: str) -> None:  # fmt: skip
    import onnx
    import torch

    from slidesift.io.atomic import atomic_write

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(tmp), input_names=["x"], output_names=["y"],
                dynamic_axes=dynamic, opset_version=17, dynamo=False,
            )  # fmt: skip
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = "slidesift_checkpoint", digest
        onnx.save(model, str(tmp))

    atomic_write(path, write)


def _session(path: Path, threads: int | None) -> Any:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _cached(path: Path, digest: str) -> bool:
    if not path.exists():
        return False
    try:
        meta = _session(path, 1).get_modelmeta().custom_metadata_map
    except Exception:
        return False
    return bool(meta.get("slidesift_checkpoint") == digest)


def export_onnx(
    checkpoint: Checkpoint, *, part: str = "whole", folder: str | os.PathLike[str] | None = None
) -> Path:
    """Export (or reuse) the checkpoint's ONNX graph beside it, checked against torch.

    Parameters
    ----------
    checkpoint
        The model.
    part
        ``whole`` (tiles -> probabilities), ``trunk`` (image -> block-4 features, any size) or
        ``tail`` (block-4 features -> probabilities).
    folder
        Where to write; default beside the checkpoint (a temporary folder when it has no
        path). The file is reused while it carries the checkpoint's digest.

    Raises
    ------
    SlidesiftError
        ONNX Runtime's outputs differ from torch's by more than 1e-4.
    """
    import torch

    from slidesift.model import FILTERS

    digest = _digest(checkpoint)
    if folder is not None:
        base = Path(folder)
    elif checkpoint.path is not None:
        base = checkpoint.path.parent
    else:
        base = Path(tempfile.gettempdir()) / "slidesift-onnx"
    base.mkdir(parents=True, exist_ok=True)
    stem = checkpoint.path.stem if checkpoint.path is not None else f"model-{digest[:12]}"
    path = base / (f"{stem}.onnx" if part == "whole" else f"{stem}.{part}.onnx")
    if _cached(path, digest):
        return path
    t = checkpoint.tile
    module = _wrapped(checkpoint, part)
    g = torch.Generator().manual_seed(0)
    if part == "tail":
        side = _side_after(t, 4)
        example: Any = torch.rand(4, FILTERS[3], side, side, generator=g) * 3
        dynamic = {"x": {0: "batch"}, "y": {0: "batch"}}
    else:
        h = t if part == "whole" else t + 2 * DENSE_STEP
        example = torch.randint(0, 256, (2, h, h + DENSE_STEP, 3), dtype=torch.uint8, generator=g)
        if part == "whole":
            example = example[:, :t, :t]
        dynamic = {"x": {0: "batch", 1: "h", 2: "w"}, "y": {0: "batch", 2: "h", 3: "w"}}
        if part == "whole":
            dynamic = {"x": {0: "batch"}, "y": {0: "batch"}}
    _export(module, example, path, dynamic, digest)
    with torch.no_grad():
        expected = module(example).numpy()
    got = _session(path, None).run(None, {"x": example.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > _PARITY_ATOL:
        path.unlink(missing_ok=True)
        raise SlidesiftError(
            f"the ONNX export of {stem} differs from torch by {diff:.2e} (> {_PARITY_ATOL})"
        )
    return path


def _side_after(tile: int, blocks: int) -> int:
    side = tile
    for _ in range(blocks):
        side = (side - 2) // 2
    return side


class OnnxTiles:
    """Per-tile classification with ONNX Runtime (CPU)."""

    name = "onnx per tile"

    def __init__(self, checkpoint: Checkpoint, *, threads: int | None = None) -> None:
        self.session = _session(export_onnx(checkpoint), threads)

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = self.session.run(None, {"x": np.ascontiguousarray(tiles)})[0]
        return out


class TorchTiles:
    """Per-tile classification with torch (CUDA: bf16 autocast, channels_last)."""

    def __init__(self, checkpoint: Checkpoint, *, device: str = "cpu") -> None:
        import torch

        self.device = device
        self.name = f"torch {device}"
        self.model = checkpoint.model().to(device, memory_format=torch.channels_last)

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        import contextlib

        import torch

        from slidesift.model import probabilities

        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        ctx: Any = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device == "cuda"
            else contextlib.nullcontext()
        )
        with torch.no_grad(), ctx:
            p = probabilities(self.model(x))
        return np.asarray(p.float().cpu().numpy(), np.float32)


def dense_applies(stride: int) -> bool:
    """Whether the dense path is exact for this stride (a multiple of 16)."""
    return stride % DENSE_STEP == 0


class DenseOnnx:
    """Dense classification of a grid's kept tiles through shared feature maps (ONNX Runtime).

    Parameters
    ----------
    checkpoint
        The model.
    block_px
        Largest side of the image region run through the trunk at once (memory bound:
        32 x block_px^2 float32 for the first block's activations).
    threads
        ONNX Runtime intra-op threads.
    """

    name = "onnx dense"

    def __init__(
        self, checkpoint: Checkpoint, *, block_px: int = 1280, threads: int | None = None
    ) -> None:
        self.tile = checkpoint.tile
        self.side = _side_after(self.tile, 4)
        self.block_px = max(block_px, self.tile)
        self.trunk = _session(export_onnx(checkpoint, part="trunk"), threads)
        self.tail = _session(export_onnx(checkpoint, part="tail"), threads)

    def classify(
        self,
        pixels: NDArray[np.uint8],
        th_xy: NDArray[np.int64],
        stride: int,
        *,
        batch: int = 64,
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Probabilities of the tiles at ``th_xy`` (all on a grid of ``stride`` from 0, 0).

        Yields ``(indices into th_xy, (n, C) probabilities)`` block by block.
        """
        if not dense_applies(stride):
            raise SlidesiftError(
                f"dense inference needs a stride that is a multiple of 16, not {stride}"
            )
        t, s = self.tile, stride
        per_block = max(1, (self.block_px - t) // s + 1)  # tiles per block side
        cols = th_xy[:, 0] // s
        rows = th_xy[:, 1] // s
        block_of = (rows // per_block) * (int(cols.max()) // per_block + 1) + cols // per_block
        for b in np.unique(block_of):
            idx = np.flatnonzero(block_of == b)
            r0, c0 = int(rows[idx].min()), int(cols[idx].min())
            r1, c1 = int(rows[idx].max()), int(cols[idx].max())
            y0, x0 = r0 * s, c0 * s
            region = np.ascontiguousarray(pixels[y0 : r1 * s + t, x0 : c1 * s + t])[None]
            feats = self.trunk.run(None, {"x": region})[0][0]
            fy = (th_xy[idx, 1] - y0) // DENSE_STEP
            fx = (th_xy[idx, 0] - x0) // DENSE_STEP
            for j in range(0, idx.size, batch):
                crops = np.stack(
                    [
                        feats[:, a : a + self.side, c : c + self.side]
                        for a, c in zip(fy[j : j + batch], fx[j : j + batch], strict=True)
                    ]
                )
                yield idx[j : j + batch], self.tail.run(None, {"x": crops})[0]


def classify_tiles(
    classifier: TileClassifier,
    pixels: NDArray[np.uint8],
    th_xy: NDArray[np.int64],
    tile: int,
    *,
    batch: int = 32,
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
    """Cut and classify tiles in batches: yields ``(indices, (n, C) probabilities)``.

    Memory holds one batch of tiles, whatever the number of tiles.
    """
    buf = np.empty((batch, tile, tile, 3), np.uint8)
    for j in range(0, len(th_xy), batch):
        part = th_xy[j : j + batch]
        for k, (x, y) in enumerate(part):
            buf[k] = pixels[y : y + tile, x : x + tile]
        yield np.arange(j, j + len(part)), classifier(buf[: len(part)])
