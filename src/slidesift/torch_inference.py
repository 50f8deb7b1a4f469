"""Per-tile classification with torch: the network itself (CUDA: bf16 autocast, channels_last).

Used where torch sees a GPU, and as the reference the ONNX paths are checked against.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import require

__all__ = ["TorchTiles"]


class TorchTiles:
    """Per-tile classification with torch (CUDA: bf16 autocast, channels_last)."""

    def __init__(self, checkpoint: Checkpoint, *, device: str = "cpu") -> None:
        require("torch", "learn", "torch inference")
        import torch

        self.device = device
        self.name = f"torch {device}"
        self.model = checkpoint.model().to(device, memory_format=torch.channels_last)

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        import torch

        from slidesift.model import autocast, probabilities, scale_input

        x = scale_input(torch.from_numpy(np.ascontiguousarray(tiles)), self.device)
        with torch.no_grad(), autocast(self.device):
            p = probabilities(self.model(x))
        return np.asarray(p.float().cpu().numpy(), np.float32)
