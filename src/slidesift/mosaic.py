"""Mosaic slides from labelled real patches, with an exact tumor mask.

No openly licensed whole-slide tumor masks exist, but labelled patches do (CAMELYON16's
sample patches, CC0). A mosaic lays such patches edge to edge on a glass background, tumor
patches in one contiguous "lesion" and normal patches around it, so that the whole pipeline
(read, sift, rails, classify, assemble, score) runs on real pixels against a truth that is
exact: a pixel is tumor when it came from a tumor patch.

Layout of one mosaic, in cells of one patch side ``P``::

    +-----------------------------+   glass margin of P/2 on every side
    |  .  n  n  n  .              |   .  glass (empty cell)
    |  n  t  t  n  n              |   t  tumor patch (truth 1), nearest the lesion centre
    |  n  t  t  t  n              |   n  normal patch (truth 0), next nearest
    |  .  n  n  .  .              |
    +-----------------------------+

Each patch is placed with a random multiple of 90 degrees and a random flip (seeded), so two
mosaics of the same patches differ. Everything follows from the arguments and the seed.

Patch folders follow the CAMELYON16 sample layout: ``ROOT/tumor/*.png`` and
``ROOT/normal/*.png``, each named ``<source slide>_<x>_<y>.png``; the source slide is what a
benchmark holds out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, PatchFolderError

__all__ = ["Mosaic", "Patch", "build_mosaic", "read_patch_folder", "write_mosaic"]

#: The glass colour of the background (RGB), near a brightfield scanner's white.
GLASS_RGB = (243, 241, 245)
#: Half-width of the uniform noise added to the glass, in grey levels.
GLASS_NOISE = 3


@dataclass(frozen=True)
class Patch:
    """One labelled patch.

    Attributes
    ----------
    pixels
        ``(P, P, 3)`` uint8 RGB.
    tumor
        Whether every pixel of it is tumor (it lies inside a lesion annotation).
    source
        The slide it was cut from (``tumor_073``), the unit a benchmark holds out.
    name
        File stem, for messages.
    """

    pixels: NDArray[np.uint8]
    tumor: bool
    source: str
    name: str


@dataclass(frozen=True)
class Mosaic:
    """A mosaic slide and its truth.

    Attributes
    ----------
    rgb
        ``(H, W, 3)`` uint8, level 0.
    truth
        ``(H, W)`` uint8, 1 on pixels of tumor patches, 0 elsewhere (normal patches, glass).
    cells
        ``(rows, cols)`` int: index into the patch list of each cell, -1 for glass.
    """

    rgb: NDArray[np.uint8]
    truth: NDArray[np.uint8]
    cells: NDArray[np.int64]


def read_patch_folder(root: str | os.PathLike[str]) -> list[Patch]:
    """Read ``ROOT/tumor/*.png`` and ``ROOT/normal/*.png`` (sorted by name).

    Raises
    ------
    SlidesiftError
        When the folder holds no patch, a file does not decode, or patches differ in size.
    """
    from PIL import Image

    root = Path(root)
    patches: list[Patch] = []
    for label in ("tumor", "normal"):
        for path in sorted((root / label).glob("*.png")):
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except OSError as exc:
                raise PatchFolderError(path, f"not a readable PNG ({exc})") from exc
            parts = path.stem.split("_")
            source = "_".join(parts[:-2]) if len(parts) > 2 else path.stem
            patches.append(Patch(pixels, label == "tumor", source, path.stem))
    if not patches:
        raise PatchFolderError(
            root, "no patches", f"expected {root}/tumor/*.png and {root}/normal/*.png"
        )
    shapes = {p.pixels.shape for p in patches}
    if len(shapes) != 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
        raise PatchFolderError(root, f"patches must be square and of one size, found {shapes}")
    return patches


def _cell_order(rows: int, cols: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Flat cell indices by distance from a random centre near the middle (ties random)."""
    cy = (rows - 1) / 2 + rng.uniform(-0.5, 0.5)
    cx = (cols - 1) / 2 + rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[0:rows, 0:cols]
    distance = np.hypot(yy - cy, xx - cx).ravel() + rng.uniform(0, 0.3, rows * cols)
    return np.argsort(distance, kind="stable").astype(np.int64)


def build_mosaic(patches: Sequence[Patch], *, seed: int = 0, glass_share: float = 0.25) -> Mosaic:
    """Lay ``patches`` out as one slide (see the module docs).

    Parameters
    ----------
    patches
        Square patches of one size ``P``; tumor ones form the lesion.
    seed
        Seeds the lesion centre, the order of patches within a class, and their orientation.
    glass_share
        Share of the grid's cells left as glass (at least one cell is always left over when
        the patches do not fill a square).

    Returns
    -------
    Mosaic
        ``(H, W) = (P * rows + P, P * cols + P)``: the cells plus a glass margin of ``P / 2``.
    """
    if not patches:
        raise ConfigError("patches", 0, "at least one patch")
    if not 0 <= glass_share < 1:
        raise ConfigError("glass_share", glass_share, "in [0, 1)")
    rng = np.random.default_rng(seed)
    side = patches[0].pixels.shape[0]
    n = len(patches)
    cols = max(1, math.ceil(math.sqrt(n / (1 - glass_share))))
    rows = max(1, math.ceil(n / (1 - glass_share) / cols))
    while rows * cols < n:
        rows += 1
    tumor = [i for i, p in enumerate(patches) if p.tumor]
    normal = [i for i, p in enumerate(patches) if not p.tumor]
    placed = [tumor[k] for k in rng.permutation(len(tumor))]
    placed += [normal[k] for k in rng.permutation(len(normal))]
    flat = np.full(rows * cols, -1, np.int64)
    flat[_cell_order(rows, cols, rng)[:n]] = placed
    cells = flat.reshape(rows, cols)

    margin = side // 2
    h, w = rows * side + 2 * margin, cols * side + 2 * margin
    noise = rng.integers(-GLASS_NOISE, GLASS_NOISE + 1, size=(h, w, 1))
    rgb = np.clip(np.asarray(GLASS_RGB)[None, None] + noise, 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), np.uint8)
    for (r, c), index in np.ndenumerate(cells):
        if index < 0:
            continue
        patch = patches[int(index)]
        if patch.pixels.shape[:2] != (side, side):
            raise ConfigError("patches", patch.name, f"{side} x {side} px like the first")
        pixels = np.rot90(patch.pixels, int(rng.integers(4)))
        if rng.integers(2):
            pixels = pixels[:, ::-1]
        y, x = margin + r * side, margin + c * side
        rgb[y : y + side, x : x + side] = pixels
        truth[y : y + side, x : x + side] = patch.tumor
    return Mosaic(rgb, truth, cells)


def write_mosaic(
    mosaic: Mosaic, slide: str | os.PathLike[str], mask: str | os.PathLike[str], *, mpp: float
) -> tuple[Path, Path]:
    """Write a mosaic as a pyramidal TIFF slide (JPEG q 95) and its 0/1 mask (deflate).

    Parameters
    ----------
    mosaic
        What :func:`build_mosaic` returned.
    slide, mask
        Destinations (``.tif``; folders are created).
    mpp
        The patches' microns per pixel (recorded in the slide, as a scanner does).
    """
    from slidesift.io.tiff import write_pyramidal_tiff

    for folder in {Path(slide).parent, Path(mask).parent}:
        folder.mkdir(parents=True, exist_ok=True)
    slide_path = write_pyramidal_tiff(slide, mosaic.rgb, mpp=mpp, quality=95)
    mask_path = write_pyramidal_tiff(
        mask, mosaic.truth, mpp=mpp, compression="deflate", nearest=True
    )
    return slide_path, mask_path
