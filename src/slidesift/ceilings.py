"""What a score should be read against: the tile oracle, the sift ceiling, all tissue.

- **Tile oracle**: every kept tile labelled by its truth (tumor when at least half of its tissue
  is truth, :func:`slidesift.tile_truth.truth_fractions`), assembled the same way as the
  model's tiles. A perfect tile classifier on the same grid, sift and rails reaches this mask;
  a model far below it is limited by its classifier, a model near it by the grid and the sift.
- **Sift ceiling**: the share of truth pixels that kept tiles cover at all.
- **All tissue**: every tissue pixel (grey within the sift's limits) called tumor, the
  baseline a model must beat to be of any use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slidesift.assemble import AssemblyMode, assemble
from slidesift.errors import ConfigError
from slidesift.metrics import Scores, confusion, scores
from slidesift.sift import SiftSpec, to_gray
from slidesift.tile_truth import truth_fractions
from slidesift.tiles import TileGrid

__all__ = ["Ceilings", "all_tissue_mask", "ceilings", "sift_ceiling", "tile_oracle_mask"]


def all_tissue_mask(pixels: NDArray[np.uint8], spec: SiftSpec) -> NDArray[np.bool_]:
    """``(H, W)`` bool: pixels whose grey value lies within ``[gray_low, gray_high]``."""
    gray = to_gray(np.asarray(pixels))
    return np.asarray((gray >= spec.gray_low) & (gray <= spec.gray_high))


def tile_oracle_mask(
    pixels: NDArray[np.uint8],
    truth: NDArray[np.bool_],
    grid: TileGrid,
    keep: NDArray[np.bool_],
    spec: SiftSpec,
    *,
    mode: AssemblyMode = "mean",
    threshold: float = 0.5,
) -> NDArray[np.bool_]:
    """The mask a perfect tile classifier would give on this grid and sift.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail.
    truth
        ``(H, W)`` bool truth on the same grid.
    grid
        The segmentation's tile grid.
    keep
        ``(n_rows, n_cols)`` bool: the tiles the sift kept.
    spec
        Sift options (tissue pixels for the truth fraction).
    mode, threshold
        The assembly (a subtype model's ``dominant`` assembles like ``union`` here).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool.
    """
    if keep.shape != grid.grid_shape:
        raise ConfigError("keep", keep.shape, f"the grid's shape {grid.grid_shape}")
    tumor = truth_fractions(pixels, truth, grid, spec) >= 0.5
    probs = np.stack([~tumor, tumor], axis=-1).astype(np.float64)
    oracle_mode: AssemblyMode = "mean" if mode == "mean" else "union"
    a = assemble(grid, keep, probs, ("non-tumor", "tumor"), mode=oracle_mode, threshold=threshold)
    return a.mask


def sift_ceiling(grid: TileGrid, keep: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    """Share of truth pixels covered by at least one kept tile (NaN without truth)."""
    if truth.shape != grid.shape:
        raise ConfigError("truth", truth.shape, f"the grid's image shape {grid.shape}")
    covered = grid.location_map(keep)
    n = int(np.count_nonzero(truth))
    return float(np.count_nonzero(covered & truth) / n) if n else float("nan")


@dataclass(frozen=True)
class Ceilings:
    """One slide's reference points beside the model's scores.

    Attributes
    ----------
    oracle
        Scores of the tile-oracle mask (:func:`tile_oracle_mask`).
    all_tissue
        Scores of calling every tissue pixel tumor (:func:`all_tissue_mask`).
    sift_ceiling
        Share of truth pixels under a kept tile (:func:`sift_ceiling`).
    """

    oracle: Scores
    all_tissue: Scores
    sift_ceiling: float


def ceilings(
    pixels: NDArray[np.uint8],
    truth: NDArray[np.bool_],
    grid: TileGrid,
    keep: NDArray[np.bool_],
    spec: SiftSpec,
    *,
    mode: AssemblyMode = "mean",
    threshold: float = 0.5,
) -> Ceilings:
    """The oracle, all-tissue and sift-ceiling figures of one segmented slide.

    Parameters are those of :func:`tile_oracle_mask` (the segmentation's grid, kept tiles,
    sift options and assembly).
    """
    t = np.asarray(truth, bool)
    oracle = tile_oracle_mask(pixels, t, grid, keep, spec, mode=mode, threshold=threshold)
    return Ceilings(
        oracle=scores(confusion(oracle, t)),
        all_tissue=scores(confusion(all_tissue_mask(pixels, spec), t)),
        sift_ceiling=sift_ceiling(grid, keep, t),
    )
