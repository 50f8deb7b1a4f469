"""Render a phantom slide block by block, and write it as a pyramidal TIFF with its truth.

Any rectangle of level 0 renders on its own (textures are functions of position), so a slide of
any size streams through :func:`slidesift.io.tiff.write_tiled_pyramid` in bounded memory, and
rendering by blocks gives the same pixels as rendering whole.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.io.polygons import Polygon, rasterize
from slidesift.io.tiff import write_tiled_pyramid
from slidesift.phantom import _texture as tx
from slidesift.phantom.slide_layout import FAT, GLASS, SUBTYPES, SlideLayout

__all__ = ["render_block", "render_image", "tumor_block", "write_mask", "write_slide"]

#: Optical densities of pen inks per RGB channel: green, blue, black markers.
_INKS = ((1.0, 0.25, 0.8), (1.1, 0.6, 0.1), (1.6, 1.6, 1.5))
#: Out-of-focus blur: Gaussian sigma in microns.
_BLUR_UM = 5.0


@functools.lru_cache(maxsize=64)
def tumor_gains(subtype: str, strength: float) -> tuple[float, float]:
    """Stain gains that give tumor of ``subtype`` the mean stain of its normal counterpart.

    Both subtypes are matched to normal mucosa, the commonest normal compartment, so tumor
    differs from normal tissue by texture and architecture, not by colour (the difficulty knob
    moves texture only).

    Returns
    -------
    tuple of float
        ``(haematoxylin gain, eosin gain)``.
    """
    kind, normal = (0 if subtype == "glandular" else 1), 2
    th, te = tx.mean_stain(kind, strength)
    nh, ne = tx.mean_stain(normal, 0.0)
    return nh / th, ne / te


def _params(layout: SlideLayout) -> NDArray[np.float64]:
    p = np.zeros(tx.N_PARAMS)
    if layout.subtype is not None:
        p[tx.P_TUMOR_H], p[tx.P_TUMOR_E] = tumor_gains(layout.subtype, 1.0 - layout.difficulty)
    st = layout.stain
    p[tx.P_HOD : tx.P_HOD + 3] = st.h_od
    p[tx.P_EOD : tx.P_EOD + 3] = st.e_od
    p[tx.P_GLASS : tx.P_GLASS + 3] = st.glass
    p[tx.P_HSCALE], p[tx.P_ESCALE] = st.h_scale, st.e_scale
    p[tx.P_STRENGTH] = 1.0 - layout.difficulty
    p[tx.P_MPP] = layout.mpp
    p[tx.P_PENOD : tx.P_PENOD + 9] = np.ravel(_INKS)
    return p


def _column_gain(layout: SlideLayout, l0_x0: int, l0_x1: int) -> NDArray[np.float32]:
    """Light multiplier per column: scanner stripes, or ones."""
    art = layout.artifacts
    if not art.stripe_period:
        return np.ones(l0_x1 - l0_x0, np.float32)
    n_bands = layout.shape[1] // art.stripe_period + 2
    table = np.random.default_rng(layout.seed + 1).uniform(-1, 1, n_bands)
    bands = np.arange(l0_x0, l0_x1) // art.stripe_period
    return (1.0 + art.stripe_amplitude * table[bands]).astype(np.float32)


def _pen(layout: SlideLayout, l0_x0: int, l0_y0: int, w: int, h: int) -> NDArray[np.uint8]:
    """Pen-mark ink index + 1 per pixel of the block (0 without ink)."""
    from slidesift.io._raster import stroke_polyline

    canvas = np.zeros((h, w), np.uint8)
    for stroke in layout.artifacts.pens:
        lo, hi = stroke.points.min(axis=0) - stroke.width, stroke.points.max(axis=0) + stroke.width
        if hi[0] < l0_x0 or lo[0] > l0_x0 + w or hi[1] < l0_y0 or lo[1] > l0_y0 + h:
            continue
        stroke_polyline(np.ascontiguousarray(stroke.points), stroke.width / 2, l0_x0, l0_y0,
                        stroke.ink + 1, canvas)  # fmt: skip
    return canvas


def _touches(polys: tuple[Polygon, ...], x0: int, y0: int, x1: int, y1: int) -> bool:
    for p in polys:
        lo, hi = p.rings[0].min(axis=0), p.rings[0].max(axis=0)
        if hi[0] >= x0 and lo[0] <= x1 and hi[1] >= y0 and lo[1] <= y1:
            return True
    return False


def _paint(layout: SlideLayout, y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint8]:
    """Render a rectangle without out-of-focus blur."""
    h, w = y1 - y0, x1 - x0
    size, one, origin = (w, h), (1.0, 1.0), (x0, y0)
    region = layout.regions(size, one, origin)
    art = layout.artifacts
    fold = np.zeros((h, w), np.uint8)
    if art.folds and _touches(art.folds, x0, y0, x1, y1):
        fold = rasterize(art.folds, size, one, origin=origin)
        fold[(region == GLASS) | (region == FAT)] = 0
    out = np.empty((h, w, 3), np.uint8)
    subtype = SUBTYPES.index(layout.subtype) if layout.subtype else 0
    tx.paint_block(
        region, fold, _pen(layout, x0, y0, w, h), _column_gain(layout, x0, x1), x0, y0,
        _params(layout), 0 if layout.regime == "paip" else 1, subtype, layout.seed, out,
    )  # fmt: skip
    return out


def render_block(layout: SlideLayout, y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint8]:
    """Level-0 RGB of rows ``y0:y1`` and columns ``x0:x1`` of a phantom slide.

    Parameters
    ----------
    layout
        The slide.
    y0, y1, x0, x1
        The rectangle in level-0 px (inside the slide).

    Returns
    -------
    numpy.ndarray
        ``(y1 - y0, x1 - x0, 3)`` uint8 RGB, identical to the same window of the whole slide.
    """
    blurs = layout.artifacts.blurs
    sigma = _BLUR_UM / layout.mpp
    m = math.ceil(3 * sigma)
    if not blurs or sigma < 0.3 or not _touches(blurs, x0 - m, y0 - m, x1 + m, y1 + m):
        return _paint(layout, y0, y1, x0, x1)
    hh, ww = layout.shape
    ey0, ey1, ex0, ex1 = max(0, y0 - m), min(hh, y1 + m), max(0, x0 - m), min(ww, x1 + m)
    wide = _paint(layout, ey0, ey1, ex0, ex1)
    soft = cv2.GaussianBlur(wide, (2 * m + 1, 2 * m + 1), sigma, borderType=cv2.BORDER_REFLECT)
    inner = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
    patch = rasterize(blurs, (x1 - x0, y1 - y0), (1.0, 1.0), origin=(x0, y0)) > 0
    out = wide[inner].copy()
    out[patch] = soft[inner][patch]
    return out


def tumor_block(layout: SlideLayout, y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint8]:
    """Level-0 tumor mask (1 tumor, 0 not) of rows ``y0:y1`` and columns ``x0:x1``.

    Returns
    -------
    numpy.ndarray
        ``(y1 - y0, x1 - x0)`` uint8.
    """
    return np.minimum(
        rasterize(layout.tumors, (x1 - x0, y1 - y0), (1.0, 1.0), origin=(x0, y0)), 1
    ).astype(np.uint8)


def render_image(layout: SlideLayout, *, workers: int | None = None) -> NDArray[np.uint8]:
    """The whole level 0 in memory (small slides, tests): ``(H, W, 3)`` uint8 RGB.

    Rendered in bands of 256 rows on ``workers`` threads (default: the CPU count).
    """
    from concurrent.futures import ThreadPoolExecutor

    h, w = layout.shape
    out = np.empty((h, w, 3), np.uint8)

    def band(y0: int) -> None:
        out[y0 : y0 + 256] = render_block(layout, y0, min(h, y0 + 256), 0, w)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(band, range(0, h, 256)))
    return out


def write_slide(
    layout: SlideLayout,
    path: str | os.PathLike[str],
    *,
    flavor: Literal["generic", "aperio"] = "generic",
    quality: int = 80,
    workers: int | None = None,
    on_rows: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the slide as a JPEG-tiled pyramidal TIFF (SVS-like with ``flavor="aperio"``).

    Memory stays bounded by a strip of tiles whatever the slide's size.

    Returns
    -------
    pathlib.Path
    """

    def source(y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint8]:
        return render_block(layout, y0, y1, x0, x1)

    return write_tiled_pyramid(
        path, layout.shape, source, mpp=layout.mpp, compression="jpeg", quality=quality,
        flavor=flavor, workers=workers, on_rows=on_rows, block_width=1024,
    )  # fmt: skip


def write_mask(
    layout: SlideLayout, path: str | os.PathLike[str], *, workers: int | None = None
) -> Path:
    """Write the level-0-aligned tumor mask (0/1, deflate) as a pyramidal TIFF (PAIP2020-like).

    Returns
    -------
    pathlib.Path
    """

    def source(y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint8]:
        return tumor_block(layout, y0, y1, x0, x1)

    return write_tiled_pyramid(
        path, layout.shape, source, channels=1, mpp=layout.mpp, compression="deflate",
        nearest=True, workers=workers, block_width=16384,
    )  # fmt: skip
