"""Compiled scanline rasterizers (numba). Private: see :mod:`slidesift.io.polygons`.

Both decide each pixel from its centre alone, in the coordinates of the whole grid, so painting a
window gives exactly that window of painting the whole grid (cv2's fillPoly clips edges at the
canvas and differs by a pixel here and there between windows).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(nogil=True, cache=True)
def fill_even_odd(
    edges: NDArray[np.float64], x0: int, y0: int, label: int, out: NDArray[np.uint8]
) -> None:  # pragma: no cover - compiled
    """Paint ``label`` where pixel centres lie inside the rings (even-odd rule).

    Parameters
    ----------
    edges
        ``(E, 4)`` float64 ``(xa, ya, xb, yb)`` of every ring edge, in grid px where pixel
        ``(i, j)`` of the whole grid has its centre at ``(j + 0.5, i + 0.5)``.
    x0, y0
        Grid px of ``out[0, 0]``.
    label
        Value painted.
    out
        ``(h, w)`` uint8 window, painted in place.
    """
    h, w = out.shape
    n = edges.shape[0]
    xs = np.empty(n, np.float64)
    for i in range(h):
        yc = y0 + i + 0.5
        k = 0
        for e in range(n):
            ya, yb = edges[e, 1], edges[e, 3]
            if (ya <= yc) != (yb <= yc):
                xa, xb = edges[e, 0], edges[e, 2]
                xs[k] = xa + (yc - ya) * (xb - xa) / (yb - ya)
                k += 1
        if k < 2:
            continue
        cross = np.sort(xs[:k])
        for p in range(0, k - 1, 2):
            # centres xc = j + 0.5 with a <= xc < b. Crossings far outside the window (or NaN,
            # from coordinates near 1e308) are clamped before math.ceil makes them integers: a
            # float beyond int64 gave an undefined integer there, and a write out of bounds.
            a, b = cross[p] - 0.5, cross[p + 1] - 0.5
            if not (a < x0 + w and b > x0):
                continue
            j0 = max(0, math.ceil(a) - x0) if a > x0 else 0
            j1 = min(w, math.ceil(b) - x0) if b < x0 + w else w
            for j in range(j0, j1):
                out[i, j] = label


@numba.njit(nogil=True, cache=True)
def stroke_polyline(
    points: NDArray[np.float64],
    radius: float,
    x0: int,
    y0: int,
    label: int,
    out: NDArray[np.uint8],
) -> None:  # pragma: no cover - compiled
    """Paint ``label`` where pixel centres lie within ``radius`` of an open polyline.

    Parameters
    ----------
    points
        ``(n, 2)`` float64 vertices in grid px (centre convention as :func:`fill_even_odd`).
    radius
        Half the stroke width in grid px.
    x0, y0
        Grid px of ``out[0, 0]``.
    label
        Value painted.
    out
        ``(h, w)`` uint8 window, painted in place.
    """
    h, w = out.shape
    r2 = radius * radius
    for s in range(points.shape[0] - 1):
        ax, ay = points[s, 0], points[s, 1]
        bx, by = points[s + 1, 0], points[s + 1, 1]
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        i0 = max(0, math.floor(min(ay, by) - radius) - y0)
        i1 = min(h, math.ceil(max(ay, by) + radius) + 1 - y0)
        j0 = max(0, math.floor(min(ax, bx) - radius) - x0)
        j1 = min(w, math.ceil(max(ax, bx) + radius) + 1 - x0)
        for i in range(i0, i1):
            yc = y0 + i + 0.5
            for j in range(j0, j1):
                xc = x0 + j + 0.5
                t = 0.0
                if length2 > 0:
                    t = min(1.0, max(0.0, ((xc - ax) * dx + (yc - ay) * dy) / length2))
                ex, ey = ax + t * dx - xc, ay + t * dy - yc
                if ex * ex + ey * ey <= r2:
                    out[i, j] = label
