"""Segment a thumbnail with the U-Net/EfficientNet-B0 baseline, as the paper ran it.

    thumbnail --Otsu (one threshold for the slide)--> background black --TileGrid(T, 50%)-->
    tiles with tissue --U-Net--> pixel masks --70% rule--> tumor tiles --union--> mask
    --smooth, shrink--> mask

The paper's rule (METHOD.md section 7): a tile counts as tumor over its whole extent when at
least 70% of its pixels are predicted tumor; the mask is the union of those tiles. The grid's
overlap is the checkpoint's ``segment_overlap`` (0.5: a right or bottom margin narrower than
T/2 stays uncovered, as for every slidesift grid), or ``spec.stride`` when given;
``spec.overlap`` is the lightweight CNN's and does not apply. Tiles without any Otsu tissue
are non-tumor without running the network. The result is a
:class:`~slidesift.segment_types.SegmentResult` like the CNN's: its ``probs`` are the tile
decisions ``[1 - d, d]``, its sift has no rails (``keep_background``: tiles with tissue).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.checkpoint import Checkpoint
from slidesift.errors import ConfigError, NoTilesWarning
from slidesift.inference import classify_tiles
from slidesift.otsu import otsu_tissue
from slidesift.segment_types import SegmentResult, SegmentSpec, assemble_and_clean
from slidesift.sift import SiftResult, measure_tiles
from slidesift.tiles import TileGrid, stride_for_overlap

__all__ = ["DEFAULT_OVERLAP", "segment_unet", "tile_sums", "unet_stride"]

#: Overlap of the U-Net's segmentation grid when the checkpoint does not say.
DEFAULT_OVERLAP = 0.5


def unet_stride(checkpoint: Checkpoint, spec: SegmentSpec) -> int:
    """The grid's stride: ``spec.stride`` when given, else from the checkpoint's overlap."""
    if spec.stride is not None:
        return int(spec.stride)
    overlap = float(checkpoint.meta.get("segment_overlap", DEFAULT_OVERLAP))
    return stride_for_overlap(checkpoint.tile, overlap)


def tile_sums(values: NDArray[Any], grid: TileGrid) -> NDArray[np.int64]:
    """``(n_rows, n_cols)`` sum of ``values`` ``(H, W)`` (bool or int) under each tile."""
    ii = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.int64)
    ii[1:, 1:] = np.asarray(values, np.int64).cumsum(0).cumsum(1)
    xy = grid.th_xy()
    x, y, t = xy[:, 0], xy[:, 1], grid.tile
    sums = ii[y + t, x + t] - ii[y, x + t] - ii[y + t, x] + ii[y, x]
    return np.asarray(sums.reshape(grid.grid_shape), np.int64)


def segment_unet(
    pixels: NDArray[np.uint8], checkpoint: Checkpoint, spec: SegmentSpec, classifier: Any
) -> SegmentResult:
    """Segment a thumbnail read at the checkpoint's N (see the module docstring).

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail (stain-normalised when the model was).
    checkpoint
        A ``unet-effb0`` checkpoint.
    spec
        Segmentation options; ``mode`` defaults to ``union`` (the paper's), ``overlap`` is
        ignored (see the module docstring), ``inference`` must be ``auto`` or ``torch``.
    classifier
        ``(B, T, T, 3)`` uint8 Otsu tiles -> ``(B, 2)`` decisions
        (:class:`slidesift.unet_infer.UnetTiles`).
    """
    if spec.inference not in ("auto", "torch"):
        raise ConfigError(
            "inference", spec.inference,
            "'auto' or 'torch' for the U-Net baseline (ONNX backends take the lightweight CNN)",
        )  # fmt: skip
    t = checkpoint.tile
    if min(pixels.shape[:2]) < t:
        raise ConfigError(
            "tile", t, f"at most the thumbnail's shorter side ({min(pixels.shape[:2])} px)"
        )
    grid = TileGrid.from_stride(pixels.shape[:2], tile=t, stride=unet_stride(checkpoint, spec))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tissue = otsu_tissue(pixels)
    image = np.where(tissue[..., None], pixels, np.uint8(0)).astype(np.uint8)  # otsu_image
    has_tissue = tile_sums(tissue, grid) > 0
    stats = measure_tiles(pixels, grid, checkpoint.sift)  # for the tile table's columns
    sifted = SiftResult(stats, None, has_tissue, np.ones(grid.grid_shape, bool))
    seconds["sift"] = time.perf_counter() - start

    start = time.perf_counter()
    classes = checkpoint.classes
    probs = np.zeros((*grid.grid_shape, len(classes)), np.float32)
    probs[..., 0] = 1.0
    flat = np.flatnonzero(has_tissue.ravel())
    if flat.size == 0:
        warnings.warn(
            "no tile holds tissue (Otsu): the mask is empty; is this a slide without tissue?",
            NoTilesWarning,
            stacklevel=3,
        )
    else:
        flat_probs = probs.reshape(-1, len(classes))
        xy = grid.th_xy()[flat]
        for idx, p in classify_tiles(classifier, image, xy, t, batch=spec.batch):
            flat_probs[flat[idx]] = p
    seconds["classify"] = time.perf_counter() - start

    start = time.perf_counter()
    union = replace(spec, mode=spec.mode or "union")
    a, mask = assemble_and_clean(grid, has_tissue, probs, classes, union)
    seconds["assemble"] = time.perf_counter() - start
    return SegmentResult(
        pixels=pixels,
        grid=grid,
        sifted=sifted,
        probs=probs,
        classified=has_tissue,
        classes=classes,
        assembly=a,
        mask=mask,
        inference=str(getattr(classifier, "name", "torch unet-effb0")),
        seconds=seconds,
    )
