"""The lightweight CNN of the paper (METHOD.md section 4), for any tile side T.

Five blocks of ``Conv2d 3x3 (valid) -> ReLU -> MaxPool 2x2 -> BatchNorm`` with 32, 64, 96, 96 and
64 filters, then ``Dropout 0.2 -> Flatten -> Dense T -> ReLU -> Dropout 0.2 -> Dense T/2 -> ReLU
-> Dropout 0.3 -> output``. The output is one logit (binary: tumor vs non-tumor; sigmoid and
binary cross-entropy) or C logits (classes non-tumor, subtype 1, ...; softmax and categorical
cross-entropy). The network returns logits; :func:`probabilities` applies the output activation.

Input: ``(B, 3, T, T)`` float32 RGB scaled to ``[0, 1]`` (:func:`to_input` converts uint8 tiles).
At T = 400 it has 2,854,689 parameters (binary) and about 3.15 GFLOP per tile.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, require

require("torch", "learn", "the lightweight CNN (training and torch inference)")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from slidesift.architecture import FILTERS, feature_side  # noqa: E402

__all__ = ["LightweightCNN", "autocast", "probabilities", "scale_input", "to_input"]


class LightweightCNN(nn.Module):
    """The paper's network for ``tile`` x ``tile`` RGB tiles (see the module docstring).

    Parameters
    ----------
    tile
        Tile side T in px (>= 94); also the width of the first dense layer (T) and the second
        (T // 2), as in the paper.
    n_classes
        2 for binary (one sigmoid output), or the number of classes including non-tumor (>= 3,
        softmax outputs).

    Attributes
    ----------
    features
        The five ``Conv2d 3x3 -> ReLU -> MaxPool 2x2 -> BatchNorm`` blocks (20 modules).
    head
        Dropout, flatten and the three dense layers.
    tile, n_outputs
        T, and 1 (binary) or ``n_classes``.
    """

    def __init__(self, tile: int = 400, n_classes: int = 2) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError("n_classes", n_classes, "2 (binary) or more (non-tumor + subtypes)")
        tile = int(tile)
        side = feature_side(tile)
        blocks: list[nn.Module] = []
        c_in = 3
        for c_out in FILTERS:
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=3),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(c_out),
            ]
            c_in = c_out
        self.tile = tile
        self.n_outputs = 1 if n_classes == 2 else int(n_classes)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Linear(c_in * side * side, tile),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(tile, tile // 2),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(tile // 2, self.n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, T)`` float in [0, 1] -> ``(B, n_outputs)`` logits."""
        out: torch.Tensor = self.head(self.features(x))
        return out


def scale_input(tiles_u8: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(B, T, T, 3)`` uint8 tensor -> ``(B, 3, T, T)`` float32 in [0, 1] on ``device``.

    The one place tiles become network input. The result is a permuted view of NHWC memory,
    so it is already channels_last (the layout the CPU and GPU kernels prefer).
    """
    return tiles_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def to_input(tiles: NDArray[np.uint8]) -> torch.Tensor:
    """``(B, T, T, 3)`` uint8 array -> ``(B, 3, T, T)`` float32 tensor in [0, 1] (CPU)."""
    return scale_input(torch.from_numpy(np.ascontiguousarray(tiles)))


def autocast(device: str) -> Any:
    """The precision context for ``device``: bf16 autocast on CUDA, plain fp32 elsewhere."""
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, n_classes)`` from logits of either output kind.

    Binary logits ``(B, 1)`` give ``[1 - p, p]`` with ``p = sigmoid``; multi-class logits give
    their softmax. Column 0 is always non-tumor.
    """
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)
