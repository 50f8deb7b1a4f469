"""Write pyramidal, tiled TIFFs that OpenSlide reads (phantom slides, masks, test fixtures)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.io.atomic import atomic_write

__all__ = ["pyramid_levels", "write_pyramidal_tiff"]


def pyramid_levels(
    pixels: NDArray[np.uint8],
    *,
    tile: int = 256,
    nearest: bool = False,
    min_size: int | None = None,
) -> list[NDArray[np.uint8]]:
    """Level 0 and its successive halvings until the longer side fits in one tile.

    Parameters
    ----------
    pixels
        ``(H, W)`` or ``(H, W, C)`` uint8 level 0.
    tile
        Stop once the longer side is at most this (default one TIFF tile).
    nearest
        Halve by taking every second pixel (label masks) instead of area averaging.
    min_size
        Stop once the longer side would drop below this; default ``tile``.

    Returns
    -------
    list of numpy.ndarray
        Level 0 first.
    """
    floor = tile if min_size is None else min_size
    levels = [pixels]
    while max(levels[-1].shape[:2]) > floor and min(levels[-1].shape[:2]) >= 2:
        prev = levels[-1]
        h, w = prev.shape[:2]
        if nearest:
            levels.append(np.ascontiguousarray(prev[::2, ::2]))
        else:
            half = cv2.resize(prev, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
            levels.append(np.asarray(half, dtype=np.uint8))
    return levels


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    pixels: NDArray[np.uint8],
    *,
    mpp: float | None = None,
    tile: int = 256,
    compression: Literal["jpeg", "deflate", "lzw", "none"] = "jpeg",
    quality: int = 90,
    nearest: bool = False,
    flavor: Literal["generic", "aperio"] = "generic",
    max_levels: int | None = None,
) -> Path:
    """Write a tiled pyramidal TIFF that OpenSlide opens, atomically.

    Parameters
    ----------
    path
        Destination (``.tif``; ``.svs`` with ``flavor="aperio"``).
    pixels
        ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8 for masks.
    mpp
        Microns per level-0 pixel, stored in the resolution tags (and the Aperio description).
    tile
        Tile side in px (a multiple of 16).
    compression
        ``jpeg`` for slides; ``deflate``/``lzw``/``none`` for masks (lossless).
    quality
        JPEG quality.
    nearest
        Build lower levels by subsampling (label masks keep their values).
    flavor
        ``generic`` (CAMELYON16-like generic TIFF) or ``aperio`` (an SVS-like description,
        so OpenSlide reports vendor ``aperio`` and ``MPP``).
    max_levels
        Keep at most this many levels (``1`` writes a single-level tiled TIFF).

    Returns
    -------
    pathlib.Path
    """
    import tifffile

    if tile % 16:
        raise ConfigError("tile", tile, "TIFF tile sides must be multiples of 16")
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ConfigError("pixels", f"{pixels.dtype}{pixels.shape}", "uint8 (H, W) or (H, W, 3)")
    levels = pyramid_levels(pixels, tile=tile, nearest=nearest)[:max_levels]
    h, w = pixels.shape[:2]
    rgb = pixels.ndim == 3
    description = ""
    if flavor == "aperio":
        description = (
            f"Aperio Image Library v12.0.16\r\n{w}x{h} ({tile}x{tile}) JPEG/RGB Q={quality}"
            f"|AppMag = 20|MPP = {mpp if mpp else 0.5}"
        )
    comp: Any = None if compression == "none" else compression
    comp_args: dict[str, Any] = {"level": quality} if compression == "jpeg" else {}
    extra: dict[str, Any] = {}
    if mpp:
        extra = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    bigtiff = pixels.nbytes > 2**31

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for i, level in enumerate(levels):
                _lh, lw = level.shape[:2]
                level_extra = dict(extra)
                if mpp and i:
                    fx = w / lw
                    level_extra["resolution"] = (1e4 / (mpp * fx), 1e4 / (mpp * fx))
                tw.write(
                    level,
                    tile=(tile, tile),
                    compression=comp,
                    compressionargs=comp_args,
                    photometric="rgb" if rgb else "minisblack",
                    subfiletype=0 if i == 0 else 1,
                    description=description if i == 0 and description else None,
                    metadata=None,
                    **level_extra,
                )

    return atomic_write(path, write)
