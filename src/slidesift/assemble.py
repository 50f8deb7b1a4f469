"""From classified tiles to a tumor mask, then smoothing and shrinking (METHOD.md section 5).

Three assemblies, each O(tiles + pixels) through :meth:`TileGrid.coverage` (a 2-D difference
array), whatever the overlap:

- ``union``: pixels covered by at least one kept tile classified as tumor (any subtype);
- ``dominant``: the same, counting only tiles of the subtype with most tiles (the paper's
  multi-class masks);
- ``mean``: each pixel's mean tumor probability over all tiles covering it, sifted-out tiles
  counting 0; tumor where it is **strictly above** the threshold (0.5: a pixel at exactly 0.5
  is not tumor, as a tile at p = 0.5 is non-tumor by argmax). The paper's binary option.

Post-processing: morphological opening with a disk of diameter k px, and an isomorphic shrink of
each connected region about its centroid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.metrics import majority_vote
from slidesift.tiles import TileGrid

__all__ = [
    "Assembly",
    "AssemblyMode",
    "assemble",
    "default_mode",
    "shrink",
    "smooth",
    "tile_labels",
]

AssemblyMode = Literal["union", "dominant", "mean"]


def default_mode(n_classes: int) -> AssemblyMode:
    """METHOD.md's default: ``dominant`` subtype union for multi-class, ``mean`` for binary."""
    return "mean" if n_classes == 2 else "dominant"


def tile_labels(probs: NDArray[np.floating]) -> NDArray[np.int64]:
    """Class index of each tile: ``argmax`` over ``(..., C)`` probabilities (0 = non-tumor)."""
    return np.asarray(np.argmax(probs, axis=-1), dtype=np.int64)


@dataclass(frozen=True)
class Assembly:
    """A tumor mask and the tile votes behind it.

    Attributes
    ----------
    mask
        ``(H, W)`` bool on the thumbnail grid.
    counts
        Kept tiles per class name.
    dominant
        The subtype with most tiles (``None`` when no tile is tumor); for a binary model the
        tumor class.
    mode
        The assembly used.
    """

    mask: NDArray[np.bool_]
    counts: dict[str, int]
    dominant: str | None
    mode: AssemblyMode


def assemble(
    grid: TileGrid,
    keep: NDArray[np.bool_],
    probs: NDArray[np.floating],
    classes: Sequence[str],
    *,
    mode: AssemblyMode | None = None,
    threshold: float = 0.5,
) -> Assembly:
    """Build the tumor mask from per-tile decisions.

    Parameters
    ----------
    grid
        The tile grid over the thumbnail.
    keep
        ``(n_rows, n_cols)`` bool: tiles that passed the sifts (the others count as
        non-tumor).
    probs
        ``(n_rows, n_cols, C)`` class probabilities (anything where ``keep`` is False).
    classes
        ``C`` class names, index 0 non-tumor.
    mode
        ``union``, ``dominant`` or ``mean``; default :func:`default_mode`.
    threshold
        Mean-probability threshold of ``mean``.
    """
    k = np.asarray(keep, bool)
    p = np.asarray(probs, np.float64)
    if k.shape != grid.grid_shape or p.shape != (*grid.grid_shape, len(classes)):
        raise ConfigError(
            "probs", p.shape, f"(n_rows, n_cols, C) = {(*grid.grid_shape, len(classes))}"
        )
    mode = mode or default_mode(len(classes))
    if mode not in ("union", "dominant", "mean"):
        raise ConfigError("mode", mode, "'union', 'dominant' or 'mean'")
    labels = np.where(k, tile_labels(p), 0)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(classes) if i > 0}
    dominant = majority_vote(counts)
    # Decide on the block grid (coverage is constant on each block), then expand once.
    if mode == "mean":
        tumor_p = np.where(k, 1.0 - p[..., 0], 0.0)
        n_cover = grid.coverage_blocks(np.ones(grid.grid_shape))
        total = grid.coverage_blocks(tumor_p)
        blocks = (n_cover > 0) & (total > threshold * n_cover)
    elif mode == "union":
        blocks = grid.coverage_blocks(labels > 0) > 0.5
    else:
        chosen = labels == (list(classes).index(dominant) if dominant else -1)
        blocks = grid.coverage_blocks(chosen) > 0.5
    return Assembly(np.asarray(grid.expand(blocks), bool), counts, dominant, mode)


def smooth(mask: NDArray[np.bool_], kernel: int) -> NDArray[np.bool_]:
    """Morphological opening (erode, then dilate) with a disk of diameter ``kernel`` px.

    Removes features narrower than the disk and rounds corners; a region that contains the disk
    is kept. ``kernel`` 0 or 1 returns the mask unchanged (a copy).
    """
    if kernel < 0:
        raise ConfigError("kernel", kernel, "a diameter in px >= 0 (paper: 50, 100, 150)")
    m = np.asarray(mask, bool)
    if kernel <= 1:
        return m.copy()
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    opened = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, disk)
    return np.asarray(opened > 0)


def shrink(mask: NDArray[np.bool_], fraction: float) -> NDArray[np.bool_]:
    """Scale each connected region about its centroid by ``1 - fraction`` (isomorphic shrink).

    A pixel of the output is set when the point it maps back to, ``c + (p - c) / (1 -
    fraction)`` for its region's centroid ``c``, lies in that region (nearest neighbour).
    ``fraction`` 0 returns a copy; the paper tried 0.05 and 0.10.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("shrink", fraction, "a fraction in [0, 1), e.g. 0.05")
    m = np.asarray(mask, bool)
    if fraction == 0.0 or not m.any():
        return m.copy()
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(
        m.astype(np.uint8), connectivity=8
    )
    out = np.zeros_like(m)
    scale = 1.0 / (1.0 - fraction)
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        cx, cy = centroids[i]
        ys, xs = np.mgrid[y : y + h, x : x + w]
        src_x = np.rint(cx + (xs + 0.0 - cx) * scale).astype(np.int64)
        src_y = np.rint(cy + (ys + 0.0 - cy) * scale).astype(np.int64)
        inside = (src_x >= 0) & (src_x < m.shape[1]) & (src_y >= 0) & (src_y < m.shape[0])
        hit = np.zeros_like(inside)
        hit[inside] = labels[src_y[inside], src_x[inside]] == i
        out[y : y + h, x : x + w] |= hit
    return out
