"""The U-Net baseline's training data: Otsu-thresholded image tiles and their mask tiles.

METHOD.md section 7: the baseline learns from "segmentation sets": image tiles of the
downsampled slides, thresholded with Otsu's method before tiling (:func:`slidesift.otsu.otsu_image`,
one threshold per slide), each paired with the same tile of the pathologist's mask. Tiles are
cut side by side (no overlap: the paper describes none, and an epoch then costs a quarter of a
half-overlap one; flips vary them between epochs), and a tile is used when at least
:data:`MIN_TISSUE` of its pixels are Otsu tissue (a tile of glass teaches the network nothing
but costs as much as one of tissue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import DatasetError
from slidesift.otsu import otsu_tissue
from slidesift.tiles import TileGrid, stride_for_overlap
from slidesift.tileset import SlideImage
from slidesift.unet_segment import tile_sums

__all__ = ["MIN_TISSUE", "TRAIN_OVERLAP", "SegTiles", "seg_tiles"]

#: Share of a tile's pixels that must be Otsu tissue for it to be a training tile.
MIN_TISSUE = 0.1
#: Overlap of the training tiles.
TRAIN_OVERLAP = 0.0


@dataclass(frozen=True)
class SegTiles:
    """Image and mask tiles of a cohort, as a table of positions over Otsu images.

    Attributes
    ----------
    tile
        Tile side T in px.
    images
        Per slide, the ``(H, W, 3)`` uint8 Otsu-thresholded thumbnail.
    masks
        Per slide, the ``(H, W)`` bool tumor mask on the same grid.
    slide
        ``(n,)`` int64 slide index of each tile.
    th_xy
        ``(n, 2)`` int64 top-left corner ``(th_x, th_y)`` of each tile, thumbnail px.
    tumor_fraction
        ``(n,)`` float64 share of each tile's pixels that are tumor.
    """

    tile: int
    images: list[NDArray[np.uint8]] = field(repr=False)
    masks: list[NDArray[np.bool_]] = field(repr=False)
    slide: NDArray[np.int64] = field(repr=False)
    th_xy: NDArray[np.int64] = field(repr=False)
    tumor_fraction: NDArray[np.float64] = field(repr=False)

    def __len__(self) -> int:
        return int(self.slide.size)

    def batch(
        self, items: Sequence[tuple[int, int, int, int]]
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """Tiles of ``(index, flip_h, flip_v, _)`` items: ``(B, T, T, 3)`` uint8 images and
        ``(B, T, T)`` uint8 masks (0/1), each pair flipped alike."""
        t = self.tile
        x_out = np.empty((len(items), t, t, 3), np.uint8)
        y_out = np.empty((len(items), t, t), np.uint8)
        for k, (i, flip_h, flip_v, _) in enumerate(items):
            s = int(self.slide[i])
            x, y = (int(v) for v in self.th_xy[i])
            img = self.images[s][y : y + t, x : x + t]
            msk = self.masks[s][y : y + t, x : x + t]
            if flip_h:
                img, msk = img[:, ::-1], msk[:, ::-1]
            if flip_v:
                img, msk = img[::-1], msk[::-1]
            x_out[k], y_out[k] = img, msk
        return x_out, y_out


def seg_tiles(
    slides: Sequence[SlideImage],
    tile: int,
    *,
    overlap: float = TRAIN_OVERLAP,
    min_tissue: float = MIN_TISSUE,
) -> SegTiles:
    """Cut the training tiles of ``slides`` (see the module docstring).

    Parameters
    ----------
    slides
        Thumbnails with their tumor masks (:func:`slidesift.prepare.prepare_slides`).
    tile
        Tile side T (a multiple of 32, the U-Net's total stride).
    overlap
        Overlap of neighbouring tiles.
    min_tissue
        Share of Otsu tissue a tile needs.

    Raises
    ------
    DatasetError
        No slide is as large as a tile, or no tile has enough tissue.
    """
    images, masks, parts = [], [], []
    stride = stride_for_overlap(tile, overlap)
    for i, s in enumerate(slides):
        pixels = np.asarray(s.pixels)
        tissue = otsu_tissue(pixels)
        images.append(np.where(tissue[..., None], pixels, np.uint8(0)).astype(np.uint8))
        masks.append(np.asarray(s.tumor, bool))
        if min(pixels.shape[:2]) < tile:
            continue
        grid = TileGrid.from_stride(pixels.shape[:2], tile=tile, stride=stride)
        area = float(tile * tile)
        enough = (tile_sums(tissue, grid) / area >= min_tissue).ravel()
        frac = (tile_sums(masks[-1], grid) / area).ravel()
        chosen = np.flatnonzero(enough)
        parts.append((np.full(chosen.size, i, np.int64), grid.th_xy()[chosen], frac[chosen]))
    if not parts or sum(p[0].size for p in parts) == 0:
        raise DatasetError(
            f"no training tile of {tile} px with at least {min_tissue:.0%} Otsu tissue in "
            f"{len(slides)} slides",
            "use a smaller tile (-T) or a larger downsample target (-N)",
        )
    return SegTiles(
        tile,
        images,
        masks,
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]).astype(np.int64),
        np.concatenate([p[2] for p in parts]).astype(np.float64),
    )
