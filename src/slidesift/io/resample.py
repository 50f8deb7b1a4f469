"""Resampling large rasters band by band, so memory follows the output, not the input.

Both functions read their source through a callback ``read_rows(y0, y1) -> (y1 - y0, W, C) uint8``
over the source's rows, so a 100k-px slide level is never held whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["area_resample", "nearest_resample", "rows_per_band"]

ReadRows = Callable[[int, int], NDArray[np.uint8]]

#: Bytes of source pixels one band may hold; bands are the unit of work and of memory.
BAND_BYTES = 32 * 1024 * 1024


def rows_per_band(src_w: int, channels: int, scale_y: float) -> int:
    """Output rows per band such that one band of source rows stays near :data:`BAND_BYTES`.

    Parameters
    ----------
    src_w, channels
        Width (px) and channel count of the source raster.
    scale_y
        Source rows per output row (>= 1 when downsampling).
    """
    src_rows = max(1, BAND_BYTES // max(1, src_w * channels * 4))
    return max(1, int(src_rows / max(scale_y, 1.0)))


def _area_weights(o0: int, o1: int, scale: float, src_len: int) -> tuple[int, NDArray[np.float32]]:
    """Area weights mapping source rows onto output rows ``o0 .. o1 - 1``.

    Output row ``i`` covers the source interval ``[i * scale, (i + 1) * scale)``; each source row
    ``r`` covers ``[r, r + 1)``; the weight is the overlap length divided by ``scale``.

    Returns
    -------
    first_row
        Index of the first source row the weights refer to.
    weights
        ``(o1 - o0, n_src_rows)`` float32; rows sum to 1.
    """
    s0 = o0 * scale
    s1 = min(o1 * scale, float(src_len))
    r0 = math.floor(s0)
    r1 = min(src_len, math.ceil(s1 - 1e-9))
    starts = np.arange(o0, o1, dtype=np.float64)[:, None] * scale
    ends = np.minimum(starts + scale, src_len)
    rows = np.arange(r0, r1, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(ends, rows + 1) - np.maximum(starts, rows), 0.0, None)
    overlap /= overlap.sum(axis=1, keepdims=True)
    return r0, overlap.astype(np.float32)


def area_resample(
    read_rows: ReadRows,
    src_size: tuple[int, int],
    dst_size: tuple[int, int],
    *,
    workers: int = 1,
) -> NDArray[np.uint8]:
    """Area-average a raster read band by band down to ``dst_size``.

    Equivalent to ``cv2.resize(src, dst_size, interpolation=cv2.INTER_AREA)`` on the whole
    source (within 1 grey level, from rounding), but the source is read in bands of rows so
    memory stays bounded by the output plus one band per worker.

    Parameters
    ----------
    read_rows
        ``read_rows(y0, y1)`` returns source rows ``y0 .. y1 - 1`` as ``(y1 - y0, W, C)`` uint8.
    src_size, dst_size
        ``(w, h)`` of the source and of the output, in px; ``dst`` must not exceed ``src``.
    workers
        Threads reading and resampling bands at once (the callbacks must be thread-safe).

    Returns
    -------
    numpy.ndarray
        ``(dst_h, dst_w, C)`` uint8.
    """
    src_w, src_h = src_size
    dst_w, dst_h = dst_size
    if dst_w > src_w or dst_h > src_h:
        raise ValueError(f"area_resample only shrinks: {src_size} -> {dst_size}")
    probe = read_rows(0, 1)
    channels = probe.shape[2]
    out = np.empty((dst_h, dst_w, channels), dtype=np.uint8)
    scale_y = src_h / dst_h
    band = rows_per_band(src_w, channels, scale_y)
    same = (src_w, src_h) == (dst_w, dst_h)

    def do_band(o0: int) -> None:
        o1 = min(dst_h, o0 + band)
        if same:
            out[o0:o1] = read_rows(o0, o1)
            return
        r0, weights = _area_weights(o0, o1, scale_y, src_h)
        src = read_rows(r0, r0 + weights.shape[1])
        if src_w != dst_w:
            src_f = cv2.resize(
                src.astype(np.float32), (dst_w, src.shape[0]), interpolation=cv2.INTER_AREA
            )
        else:
            src_f = src.astype(np.float32)
        src_f = src_f.reshape(src.shape[0], dst_w * channels)
        res = weights @ src_f
        out[o0:o1] = np.clip(np.rint(res), 0, 255).astype(np.uint8).reshape(o1 - o0, dst_w, -1)

    starts = range(0, dst_h, band)
    if workers <= 1:
        for o0 in starts:
            do_band(o0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(do_band, starts))
    return out


def nearest_resample(
    read_rows: ReadRows,
    src_size: tuple[int, int],
    dst_size: tuple[int, int],
) -> NDArray[np.uint8]:
    """Nearest-neighbour resampling (for label masks), reading the source band by band.

    Output pixel ``(i, j)`` takes the source pixel under its centre:
    ``src[floor((i + 0.5) * src_h / dst_h), floor((j + 0.5) * src_w / dst_w)]``, computed in
    integers so no rounding can pick a neighbour.

    Parameters
    ----------
    read_rows
        As for :func:`area_resample`.
    src_size, dst_size
        ``(w, h)`` in px; any ratio (upsampling too).

    Returns
    -------
    numpy.ndarray
        ``(dst_h, dst_w, C)`` uint8.
    """
    src_w, src_h = src_size
    dst_w, dst_h = dst_size
    # floor((i + 0.5) * src / dst) in exact integer arithmetic
    src_rows = (2 * np.arange(dst_h, dtype=np.int64) + 1) * src_h // (2 * dst_h)
    src_cols = (2 * np.arange(dst_w, dtype=np.int64) + 1) * src_w // (2 * dst_w)
    probe = read_rows(0, 1)
    out = np.empty((dst_h, dst_w, probe.shape[2]), dtype=np.uint8)
    band = max(1, BAND_BYTES // max(1, src_w * probe.shape[2]))
    i = 0
    while i < dst_h:
        r0 = int(src_rows[i])
        r1 = min(src_h, r0 + band)
        j = int(np.searchsorted(src_rows, r1, side="left"))
        j = max(j, i + 1)
        block = read_rows(r0, max(r1, int(src_rows[j - 1]) + 1))
        out[i:j] = block[src_rows[i:j] - r0][:, src_cols]
        i = j
    return out
