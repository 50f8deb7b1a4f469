"""The lightweight CNN's shape by arithmetic, without torch: filters, feature side, parameters.

The network itself is :class:`slidesift.model.LightweightCNN` (needs the ``learn`` extra); this
module lets checkpoints, dense inference and the docs reason about it without importing torch.
"""

from __future__ import annotations

from slidesift.errors import ConfigError

__all__ = ["FILTERS", "feature_side", "parameter_count"]

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
