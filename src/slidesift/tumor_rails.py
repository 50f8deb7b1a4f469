"""Rails from tumor images: measure the tumor tiles that survive the background sift, fit rails.

The tumor image is the thumbnail with everything outside the tumor mask set to black (METHOD.md
section 2), so tiles mostly outside tumor fall to the background sift; the rails are the min and
max entropy of the rest (:func:`slidesift.rails.fit_rails`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.rails import RailsAtSize, fit_rails
from slidesift.sift import SiftSpec, measure_tiles
from slidesift.tiles import TileGrid

__all__ = ["rails_spread", "tumor_tile_entropies"]


def tumor_tile_entropies(
    pixels: NDArray[np.uint8],
    tumor: NDArray[np.bool_],
    grid: TileGrid,
    spec: SiftSpec | None = None,
) -> NDArray[np.float64]:
    """Entropies of the tumor tiles of one image that survive the background sift.

    The tumor image is the thumbnail with everything outside the tumor mask set to black
    (METHOD.md section 2), so tiles mostly outside tumor fall to the background sift.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail.
    tumor
        ``(H, W)`` bool tumor mask on the same grid.
    grid
        Tile grid over ``(H, W)``.
    spec
        Sift options.

    Returns
    -------
    numpy.ndarray
        1-D float64 entropies of the kept tumor tiles.
    """
    if tumor.shape != pixels.shape[:2]:
        raise ConfigError("tumor", tumor.shape, f"a mask of the image's shape {pixels.shape[:2]}")
    tumor_image = np.where(tumor[..., None], pixels, np.uint8(0))
    stats = measure_tiles(tumor_image, grid, spec)
    return stats.entropy[stats.keep_background]


def rails_spread(
    images: Sequence[tuple[NDArray[np.uint8], NDArray[np.bool_]]],
    tile_sizes: Sequence[int],
    *,
    overlap: float = 0.5,
    spec: SiftSpec | None = None,
) -> list[RailsAtSize]:
    """Fit rails over a set of images at several tile sizes (paper Fig. 5).

    Parameters
    ----------
    images
        ``(pixels (H, W, 3) uint8, tumor (H, W) bool)`` pairs on thumbnail grids.
    tile_sizes
        Tile sides T to try; sizes larger than an image skip that image.
    overlap
        Overlap used to cut the tumor tiles.
    spec
        Sift options.

    Returns
    -------
    list of RailsAtSize
        One per tile size, in the given order; ``rails`` is ``None`` where no tile survived.
    """
    spec = spec or SiftSpec()
    rows: list[RailsAtSize] = []
    for t in tile_sizes:
        found: list[NDArray[np.float64]] = []
        for pixels, tumor in images:
            if t > min(pixels.shape[:2]):
                continue
            grid = TileGrid.from_overlap(pixels.shape[:2], tile=t, overlap=overlap)
            found.append(tumor_tile_entropies(pixels, tumor, grid, spec))
        values = np.concatenate(found) if found else np.empty(0)
        rails = fit_rails(values, entropy=spec.entropy, tile=t) if values.size else None
        rows.append(RailsAtSize(int(t), rails))
    return rows
