"""What segmentation takes and gives: :class:`SegmentSpec` (the options) and
:class:`SegmentResult` (a segmented slide), shared by every model's segmentation path
(:mod:`slidesift.segment` for the lightweight CNN, :mod:`slidesift.unet_segment` for the U-Net
baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from slidesift.assemble import Assembly, AssemblyMode, assemble, shrink, smooth
from slidesift.errors import ConfigError
from slidesift.inference import DENSE_STEP
from slidesift.io.slide import Thumb
from slidesift.sift import SiftResult
from slidesift.tiles import TileGrid, stride_for_overlap

__all__ = ["DENSE_MODES", "InferenceMode", "SegmentResult", "SegmentSpec", "assemble_and_clean"]

InferenceMode = Literal["auto", "dense", "int8", "bf16", "torch-dense", "tiles", "torch"]
#: Modes that classify through shared feature maps (a stride that is a multiple of 16).
DENSE_MODES = ("dense", "int8", "bf16", "torch-dense")


@dataclass(frozen=True)
class SegmentSpec:
    """How a slide is segmented (defaults as METHOD.md section 5).

    Attributes
    ----------
    overlap, stride
        Tile overlap (paper: 0.8, stride 80 at T = 400), or an explicit stride.
    round_stride
        Round the stride to the nearest multiple of 16 so the dense path applies.
    mode
        Assembly; default ``dominant`` for multi-class models, ``mean`` for binary.
    threshold
        Mean-probability threshold: tumor where the mean is strictly above it.
    smooth
        Opening kernel diameter in thumbnail px (0 = none; paper: 50-150 at N = 6000).
    shrink
        Isomorphic shrink fraction (0 = none; paper tried 0.05 and 0.10).
    rails
        Sift by the checkpoint's rails (``False``: background only, the paper's ablation).
    inference
        ``auto`` (with a CUDA device, ``torch-dense`` where the dense path applies, else
        ``torch``; on the CPU, where the dense path applies, the dense backend the probe chose
        for this machine and checkpoint, see :mod:`slidesift.backends`, else ONNX Runtime per
        tile), ``dense`` (fp32 ONNX Runtime), ``int8`` (the int8 trunk and head,
        :mod:`slidesift.quantize`), ``bf16`` (the trunk in bfloat16 through torch on the CPU),
        ``torch-dense`` (the dense path in torch: bf16 on CUDA when present, else fp32 on the
        CPU, :func:`slidesift.torch_inference.torch_dense`), ``tiles`` (ONNX Runtime per tile)
        or ``torch`` (per tile, CUDA when present).
    batch
        Tiles per classifier call.
    """

    overlap: float = 0.8
    stride: int | None = None
    round_stride: bool = False
    mode: AssemblyMode | None = None
    threshold: float = 0.5
    smooth: int = 0
    shrink: float = 0.0
    rails: bool = True
    inference: InferenceMode = "auto"
    batch: int = 32

    def __post_init__(self) -> None:
        if self.stride is None:
            stride_for_overlap(400, self.overlap)  # checks the overlap's range
        elif isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ConfigError("stride", self.stride, "a positive number of px, or None")
        if self.mode is not None and self.mode not in get_args(AssemblyMode):
            raise ConfigError("mode", self.mode, f"one of {get_args(AssemblyMode)} or None")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("threshold", self.threshold, "a probability in [0, 1]")
        if isinstance(self.smooth, bool) or not isinstance(self.smooth, int) or self.smooth < 0:
            raise ConfigError("smooth", self.smooth, "an opening diameter in px >= 0 (0 = none)")
        if not 0.0 <= self.shrink < 1.0:
            raise ConfigError("shrink", self.shrink, "a fraction in [0, 1) (0 = none)")
        if self.inference not in get_args(InferenceMode):
            raise ConfigError("inference", self.inference, f"one of {get_args(InferenceMode)}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError("batch", self.batch, "a positive number of tiles per call")

    def stride_for(self, tile: int) -> int:
        """The stride to use for tile side ``tile``."""
        s = self.stride if self.stride is not None else stride_for_overlap(tile, self.overlap)
        if self.round_stride:
            s = max(DENSE_STEP, DENSE_STEP * round(s / DENSE_STEP))
        if s < 1:
            raise ConfigError("stride", s, "a positive number of px")
        return int(s)


@dataclass(frozen=True)
class SegmentResult:
    """A segmented slide.

    Attributes
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail (after stain normalisation, if any).
    grid
        The tile grid.
    sifted
        Background fractions, entropies and both sifts' decisions.
    probs
        ``(n_rows, n_cols, C)`` float32 class probabilities; tiles not classified hold
        ``[1, 0, ...]`` (non-tumor).
    classified
        ``(n_rows, n_cols)`` bool: tiles that went through the network.
    classes
        Class names (0 non-tumor).
    assembly
        The raw mask and the tile votes.
    mask
        ``(H, W)`` bool after smoothing and shrinking.
    inference
        Which classifier ran (``onnx dense``, ``onnx per tile``, ``torch cuda``, ...).
    seconds
        Seconds per stage: ``sift``, ``classify``, ``assemble`` (``read`` added by
        :func:`segment`).
    """

    pixels: NDArray[np.uint8] = field(repr=False)
    grid: TileGrid
    sifted: SiftResult = field(repr=False)
    probs: NDArray[np.float32] = field(repr=False)
    classified: NDArray[np.bool_] = field(repr=False)
    classes: tuple[str, ...]
    assembly: Assembly = field(repr=False)
    mask: NDArray[np.bool_] = field(repr=False)
    inference: str
    seconds: dict[str, float]
    thumb: Thumb | None = None

    @property
    def keep(self) -> NDArray[np.bool_]:
        """``(n_rows, n_cols)`` tiles that passed the sifts used."""
        return self.sifted.keep

    @property
    def vote(self) -> str | None:
        """The slide's class by majority vote of tile labels (dominant subtype)."""
        return self.assembly.dominant

    def remask(self, spec: SegmentSpec) -> NDArray[np.bool_]:
        """The mask under other assembly/post-processing options, without classifying again.

        ``spec.rails`` False uses every tile that passed the background sift (all must have
        been classified, see :func:`segment_pixels`'s ``classify_background``). Without a
        ``spec.mode`` the result's own assembly is kept (``union`` for the U-Net baseline).
        """
        keep = self.sifted.keep_background if not spec.rails else self.sifted.keep
        if not spec.rails and not self.classified[keep].all():
            raise ConfigError("rails", False, "a result classified with classify_background=True")
        spec = spec if spec.mode is not None else replace(spec, mode=self.assembly.mode)
        return assemble_and_clean(self.grid, keep, self.probs, self.classes, spec)[1]


def assemble_and_clean(
    grid: TileGrid,
    keep: NDArray[np.bool_],
    probs: NDArray[np.float32],
    classes: tuple[str, ...],
    spec: SegmentSpec,
) -> tuple[Assembly, NDArray[np.bool_]]:
    """Assemble the kept tiles, then smooth and shrink: the raw assembly and the final mask."""
    a = assemble(grid, keep, probs, classes, mode=spec.mode, threshold=spec.threshold)
    return a, shrink(smooth(a.mask, spec.smooth), spec.shrink)
