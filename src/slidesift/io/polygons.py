"""Polygons in level-0 px and their rasterization onto a thumbnail grid.

Frame: level-0 px with pixel ``(i, j)`` covering ``[j, j + 1) x [i, i + 1)``. A thumbnail pixel
belongs to a polygon when its centre does (even-odd rule over the polygon's rings, so holes cut
out); thumbnail px ``(th_x, th_y)`` has its centre at level-0 ``((th_x + 0.5) * sx,
(th_y + 0.5) * sy)``. The decision depends on the centre alone, so a window of a grid paints
exactly as that part of the whole grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Polygon", "rasterize"]


@dataclass(frozen=True)
class Polygon:
    """One polygon with holes, in level-0 px.

    Attributes
    ----------
    rings
        Exterior ring first, then holes; each ``(n, 2)`` float64 of ``(l0_x, l0_y)``.
    label
        Label it paints (0 cuts out).
    name
        Its group or classification name, for messages.
    """

    rings: tuple[NDArray[np.float64], ...]
    label: int
    name: str = ""


def rasterize(
    polygons: Iterable[Polygon],
    th_size: tuple[int, int],
    scale: tuple[float, float],
    *,
    origin: tuple[int, int] = (0, 0),
) -> NDArray[np.uint8]:
    """Paint polygons onto a thumbnail-sized label image.

    Polygons paint in order with their labels, except that label-0 polygons (exclusions) paint
    last, so they cut out of everything. Holes leave what was below untouched.

    Parameters
    ----------
    polygons
        Polygons in level-0 px.
    th_size
        ``(W, H)`` of the thumbnail.
    scale
        ``(sx, sy)`` level-0 px per thumbnail px (:attr:`Thumb.scale`).
    origin
        ``(th_x, th_y)`` of the output's top-left pixel: paints a window of a larger grid,
        exactly as that window of the whole grid would be painted.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 labels indexed ``[th_y, th_x]``.
    """
    from slidesift.io._raster import fill_even_odd

    w, h = th_size
    out = np.zeros((h, w), dtype=np.uint8)
    polys = list(polygons)
    ordered = [p for p in polys if p.label != 0] + [p for p in polys if p.label == 0]
    factor = np.array([1.0 / scale[0], 1.0 / scale[1]])
    ox, oy = origin
    for poly in ordered:
        edges = _edges(poly.rings, factor)
        if not len(edges):
            continue
        lo = np.minimum(edges[:, :2], edges[:, 2:]).min(axis=0)
        hi = np.maximum(edges[:, :2], edges[:, 2:]).max(axis=0)
        if hi[0] < ox or lo[0] > ox + w or hi[1] < oy or lo[1] > oy + h:
            continue
        rows = (np.maximum(edges[:, 1], edges[:, 3]) >= oy) & (
            np.minimum(edges[:, 1], edges[:, 3]) <= oy + h
        )
        fill_even_odd(np.ascontiguousarray(edges[rows]), ox, oy, int(poly.label), out)
    return out


def _edges(
    rings: tuple[NDArray[np.float64], ...], factor: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``(E, 4)`` edges ``(xa, ya, xb, yb)`` of all rings, closed, in grid px."""
    parts = []
    for ring in rings:
        if len(ring) < 3:
            continue
        pts = np.asarray(ring, dtype=np.float64) * factor
        parts.append(np.concatenate([pts, np.roll(pts, -1, axis=0)], axis=1))
    return np.concatenate(parts) if parts else np.empty((0, 4))
