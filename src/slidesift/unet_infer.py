"""The U-Net/EfficientNet-B0 baseline as a tile classifier: pixel masks and the 70% tile rule.

The paper's baseline (METHOD.md section 7) predicts a mask tile for each image tile and counts a
tile as tumor, over its whole extent, when at least 70% of its pixels are predicted tumor.
:class:`UnetTiles` turns ``(B, T, T, 3)`` uint8 tiles (cut from the Otsu-thresholded thumbnail,
:func:`slidesift.otsu.otsu_image`) into that decision, in the shape every slidesift classifier
returns: ``(B, 2)`` probabilities ``[1 - d, d]`` with ``d`` the 0/1 decision, so the assembly,
the outputs and the scores treat it as any other model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import CheckpointError, require

__all__ = [
    "TILE_RULE",
    "UnetTiles",
    "decision_probabilities",
    "pixel_probabilities",
    "tile_decisions",
    "unet_from_checkpoint",
]

#: A tile counts as tumor when at least this share of its pixels is predicted tumor (paper).
TILE_RULE = 0.7
#: A pixel is predicted tumor when its sigmoid probability exceeds this.
PIXEL_THRESHOLD = 0.5


def tile_decisions(
    fractions: NDArray[np.floating[Any]], rule: float = TILE_RULE
) -> NDArray[np.bool_]:
    """``(B,)`` bool: tiles whose predicted tumor pixel share is at least ``rule``.

    Parameters
    ----------
    fractions
        ``(B,)`` share of each tile's ``T * T`` pixels predicted tumor, in ``[0, 1]``.
    rule
        The paper's 0.7.
    """
    return np.asarray(np.asarray(fractions) >= rule)


def pixel_probabilities(net: Any, tiles: NDArray[np.uint8], device: str) -> NDArray[np.float32]:
    """``(B, T, T, 3)`` uint8 Otsu tiles -> ``(B, T, T)`` float32 tumor probability of each
    pixel, with ``net`` (a :class:`~slidesift.unet_model.UnetEffB0`, put in eval mode)."""
    import torch

    from slidesift.model import scale_input

    net.eval()
    x = scale_input(torch.from_numpy(np.ascontiguousarray(tiles)), device)
    with torch.no_grad():
        p = torch.sigmoid(net(x).float())[:, 0]
    return np.asarray(p.cpu().numpy(), np.float32)


def decision_probabilities(
    net: Any, tiles: NDArray[np.uint8], device: str, rule: float = TILE_RULE
) -> NDArray[np.float32]:
    """``(B, T, T, 3)`` uint8 Otsu tiles -> ``(B, 2)`` float32 ``[1 - d, d]``, ``d`` whether at
    least ``rule`` of the tile's pixels are predicted tumor (sigmoid above 0.5)."""
    share = (pixel_probabilities(net, tiles, device) > PIXEL_THRESHOLD).mean(axis=(1, 2))
    d = tile_decisions(share, rule).astype(np.float32)
    return np.stack([1.0 - d, d], axis=1)


def unet_from_checkpoint(checkpoint: Checkpoint) -> Any:
    """A :class:`slidesift.unet_model.UnetEffB0` with the checkpoint's weights, in eval mode.

    Raises
    ------
    CheckpointError
        The weights do not fit the network.
    """
    require("torch", "learn", "the U-Net/EfficientNet-B0 baseline")
    import torch

    from slidesift.unet_model import UnetEffB0

    net = UnetEffB0(n_out=1)
    state = {k: torch.as_tensor(v) for k, v in checkpoint.state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        where = checkpoint.path if checkpoint.path is not None else "<memory>"
        raise CheckpointError(where, f"weights do not fit the U-Net: {exc}") from exc
    return net.eval()


class UnetTiles:
    """Classify Otsu-thresholded tiles with a U-Net checkpoint by the 70% tile rule.

    Parameters
    ----------
    checkpoint
        A ``unet-effb0`` checkpoint.
    device
        ``cpu`` or ``cuda``.
    threads
        Cap on torch's intra-op threads (``None``: leave torch's setting).
    rule
        Tile rule (default :data:`TILE_RULE`, or the checkpoint's ``tile_rule``).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "cpu",
        threads: int | None = None,
        rule: float | None = None,
    ) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.device = device
        self.rule = float(rule if rule is not None else checkpoint.meta.get("tile_rule", TILE_RULE))
        self.net = unet_from_checkpoint(checkpoint).to(device)
        self.name = f"torch unet-effb0 {device}"

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``(B, T, T, 3)`` uint8 -> ``(B, 2)`` float32 ``[1 - d, d]``, ``d`` the tile rule."""
        return decision_probabilities(self.net, tiles, self.device, self.rule)
