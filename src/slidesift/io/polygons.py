"""Polygons in level-0 px and their rasterization onto a thumbnail grid.

Frame: level-0 px with pixel ``(i, j)`` covering ``[j, j + 1) x [i, i + 1)``. A thumbnail pixel
belongs to a polygon when its centre does; thumbnail px ``(th_x, th_y)`` has its centre at
level-0 ``((th_x + 0.5) * sx, (th_y + 0.5) * sy)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["Polygon", "rasterize"]

_SUB = 8  # fixed-point bits for cv2.fillPoly vertices


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
    polygons: Iterable[Polygon], th_size: tuple[int, int], scale: tuple[float, float]
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

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 labels indexed ``[th_y, th_x]``.
    """
    w, h = th_size
    out = np.zeros((h, w), dtype=np.uint8)
    polys = list(polygons)
    ordered = [p for p in polys if p.label != 0] + [p for p in polys if p.label == 0]
    factor = np.array([1.0 / scale[0], 1.0 / scale[1]]) * (1 << _SUB)
    half = 0.5 * (1 << _SUB)
    for poly in ordered:
        rings = [np.rint(r * factor - half).astype(np.int32) for r in poly.rings if len(r) >= 1]
        if rings:
            cv2.fillPoly(out, rings, int(poly.label), lineType=cv2.LINE_8, shift=_SUB)
    return out
