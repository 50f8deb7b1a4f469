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

from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError

__all__ = [
    "FILTERS",
    "LightweightCNN",
    "feature_side",
    "parameter_count",
    "probabilities",
    "to_input",
]

#: Filters of the five convolution blocks.
FILTERS: tuple[int, ...] = (32, 64, 96, 96, 64)


def feature_side(tile: int) -> int:
    """Side of the last block's feature map for a ``tile`` x ``tile`` input.

    Each block is a valid 3x3 convolution (side - 2) then a 2x2 max-pool (floor of half).

    Raises
    ------
    ConfigError
        The tile is too small to leave a 1 x 1 feature map after five blocks (T < 94).
    """
    side = int(tile)
    for _ in FILTERS:
        side = (side - 2) // 2
        if side < 1:
            break
    if side < 1:
        raise ConfigError("tile", tile, "at least 94 px: five 3x3-conv + 2x2-pool blocks")
    return side


def parameter_count(tile: int, n_outputs: int = 1) -> int:
    """The architecture's trainable parameter count, by arithmetic (no torch needed).

    Convolutions ``9 * c_in * c_out + c_out``; BatchNorm ``2 * c``; dense layers
    ``n_in * n_out + n_out`` for ``flat -> T -> T/2 -> n_outputs``.
    """
    total, c_in = 0, 3
    for c_out in FILTERS:
        total += 9 * c_in * c_out + c_out + 2 * c_out
        c_in = c_out
    flat = c_in * feature_side(tile) ** 2
    hidden = (int(tile), int(tile) // 2)
    for n_in, n_out in ((flat, hidden[0]), (hidden[0], hidden[1]), (hidden[1], n_outputs)):
        total += n_in * n_out + n_out
    return total


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the learn extra is part of `all`
        raise ImportError(
            "training and torch inference need the 'learn' extra: pip install 'slidesift[learn]'"
        ) from exc
    return torch


def _build(tile: int, n_outputs: int) -> Any:
    torch = _torch()
    nn = torch.nn
    side = feature_side(tile)
    if n_outputs < 1:
        raise ConfigError("n_outputs", n_outputs, "1 (binary) or the number of classes (>= 3)")

    class LightweightCNN(nn.Module):  # type: ignore[misc, name-defined]
        """See the module docstring; build with :func:`slidesift.model.LightweightCNN`."""

        def __init__(self) -> None:
            super().__init__()
            blocks: list[Any] = []
            c_in = 3
            for c_out in FILTERS:
                blocks += [
                    nn.Conv2d(c_in, c_out, kernel_size=3),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                    nn.BatchNorm2d(c_out),
                ]
                c_in = c_out
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
                nn.Linear(tile // 2, n_outputs),
            )
            self.tile = int(tile)
            self.n_outputs = int(n_outputs)

        def forward(self, x: Any) -> Any:
            """``(B, 3, T, T)`` float in [0, 1] -> ``(B, n_outputs)`` logits."""
            return self.head(self.features(x))

    return LightweightCNN()


def LightweightCNN(tile: int = 400, n_classes: int = 2) -> Any:
    """Build the network for ``tile`` x ``tile`` RGB tiles.

    Parameters
    ----------
    tile
        Tile side T in px (>= 94); also the width of the first dense layer (T) and the second
        (T // 2), as in the paper.
    n_classes
        2 for binary (one sigmoid output), or the number of classes including non-tumor (>= 3,
        softmax outputs).

    Returns
    -------
    torch.nn.Module
        Returns ``(B, 1)`` logits (binary) or ``(B, n_classes)`` logits.
    """
    if n_classes < 2:
        raise ConfigError("n_classes", n_classes, "2 (binary) or more (non-tumor + subtypes)")
    return _build(int(tile), 1 if n_classes == 2 else int(n_classes))


def to_input(tiles: NDArray[np.uint8]) -> Any:
    """``(B, T, T, 3)`` uint8 tiles -> ``(B, 3, T, T)`` float32 tensor in [0, 1]."""
    torch = _torch()
    t = torch.from_numpy(np.ascontiguousarray(tiles))
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def probabilities(logits: Any) -> Any:
    """Class probabilities ``(B, n_classes)`` from logits of either output kind.

    Binary logits ``(B, 1)`` give ``[1 - p, p]`` with ``p = sigmoid``; multi-class logits give
    their softmax. Column 0 is always non-tumor.
    """
    torch = _torch()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)
