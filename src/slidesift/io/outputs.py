"""Files a pathologist can open: PNG images and CSV tile tables, written atomically."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import OutputError
from slidesift.io.atomic import atomic_write_bytes, atomic_write_text
from slidesift.io.slide import Thumb
from slidesift.sift import SiftResult

__all__ = ["location_map_image", "write_png", "write_tile_table"]


def write_png(path: str | os.PathLike[str], image: NDArray[np.uint8] | NDArray[np.bool_]) -> Path:
    """Write ``(H, W, 3)`` RGB, ``(H, W)`` grey or bool as PNG, atomically.

    Bool masks become 1-bit PNGs (white on black; 9x faster to encode than 8-bit grey and a
    quarter of the size). Colour and grey images use zlib level 1 with the "up" filter and
    run-length strategy: about half the encoding time of OpenCV's defaults at level 1, for
    similar sizes on H&E thumbnails.
    """
    img = np.asarray(image)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if img.dtype == np.bool_:
        img = np.where(img, np.uint8(255), np.uint8(0))
        params += [cv2.IMWRITE_PNG_BILEVEL, 1]
    else:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    if img.ndim == 3:
        img = np.asarray(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
    ok, buf = cv2.imencode(".png", np.asarray(img, dtype=np.uint8), params)
    if not ok:
        raise OutputError(path, "OpenCV could not encode it as PNG")
    return atomic_write_bytes(path, buf.tobytes())


def location_map_image(
    pixels: NDArray[np.uint8], kept_area: NDArray[np.bool_], *, dim: float = 0.25
) -> NDArray[np.uint8]:
    """The slide with everything outside the kept tiles dimmed (a viewable Fig. 1c).

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail.
    kept_area
        ``(H, W)`` bool union of kept tiles (:meth:`TileGrid.location_map`).
    dim
        Brightness kept outside the tiles.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.
    """
    dimmed = cv2.LUT(np.ascontiguousarray(pixels, np.uint8), linear_lut(dim, 0.0))
    np.copyto(dimmed, pixels, where=np.asarray(kept_area, bool)[..., None])
    return np.asarray(dimmed, np.uint8)


def linear_lut(gain: float, offset: float) -> NDArray[np.uint8]:
    """A 256-entry table for ``value * gain + offset`` (truncated to uint8), for ``cv2.LUT``."""
    return (np.arange(256, dtype=np.float32) * gain + offset).astype(np.uint8)


def write_tile_table(path: str | os.PathLike[str], result: SiftResult, thumb: Thumb) -> Path:
    """Write one CSV row per tile: grid index, position in both frames, measures, decisions.

    Columns: ``t_row, t_col, th_x, th_y, l0_x, l0_y, background, entropy, keep_background,
    keep_rails, keep``.
    """
    grid = result.stats.grid
    xy = grid.th_xy()
    boxes = grid.l0_boxes(thumb.scale)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["t_row", "t_col", "th_x", "th_y", "l0_x", "l0_y", "background", "entropy",
         "keep_background", "keep_rails", "keep"]
    )  # fmt: skip
    bg = result.stats.background.ravel()
    ent = result.stats.entropy.ravel()
    kb = result.keep_background.ravel()
    kr = result.keep_rails.ravel()
    for i in range(len(grid)):
        t_row, t_col = divmod(i, grid.n_cols)
        writer.writerow(
            [t_row, t_col, int(xy[i, 0]), int(xy[i, 1]), f"{boxes[i, 0]:.1f}", f"{boxes[i, 1]:.1f}",
             f"{bg[i]:.6f}", f"{ent[i]:.6f}", int(kb[i]), int(kr[i]), int(kb[i] and kr[i])]
        )  # fmt: skip
    return atomic_write_text(path, buf.getvalue())
