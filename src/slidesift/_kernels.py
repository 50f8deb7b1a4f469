"""Compiled inner loops (numba). Private: the public API is in :mod:`slidesift.sift`."""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(nogil=True, cache=True)
def block_row_histograms(
    rgb_rows: NDArray[np.uint8],
    gray_rows: NDArray[np.uint8],
    block: int,
    n_blocks: int,
    rgb_out: NDArray[np.int64],
    gray_out: NDArray[np.int64],
    with_rgb: bool,
) -> None:  # pragma: no cover - compiled
    """Add the histograms of one row of ``block x block`` blocks into the outputs.

    Parameters
    ----------
    rgb_rows
        ``(block, n_blocks * block * 3)`` uint8: the band's RGB values, channels interleaved.
    gray_rows
        ``(block, n_blocks * block)`` uint8: the band in grey.
    block, n_blocks
        Block side in px and blocks per row.
    rgb_out, gray_out
        ``(n_blocks, 256)`` int64 accumulators (RGB values pooled over channels; grey).
    with_rgb
        Also histogram the RGB values.
    """
    for i in range(gray_rows.shape[0]):
        grow = gray_rows[i]
        for bj in range(n_blocks):
            g = gray_out[bj]
            for j in range(bj * block, (bj + 1) * block):
                g[grow[j]] += 1
        if with_rgb:
            row = rgb_rows[i]
            for bj in range(n_blocks):
                e = rgb_out[bj]
                for j in range(bj * block * 3, (bj + 1) * block * 3):
                    e[row[j]] += 1


@numba.njit(nogil=True, cache=True)
def block_row_rgb_and_limits(
    rgb_rows: NDArray[np.uint8],
    gray_rows: NDArray[np.uint8],
    block: int,
    n_blocks: int,
    low: int,
    high: int,
    rgb_out: NDArray[np.int64],
    background_out: NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    """RGB histograms and grey-limit background counts of one row of blocks.

    The common case (RGB entropy, grey-limit background) needs no grey histogram, only the
    number of grey values ``< low`` or ``> high`` per block: a vectorisable count.

    Parameters
    ----------
    rgb_rows, gray_rows, block, n_blocks
        As for :func:`block_row_histograms`.
    low, high
        Grey limits: values below ``low`` or above ``high`` are background.
    rgb_out
        ``(n_blocks, 256)`` int64 accumulator of RGB values.
    background_out
        ``(n_blocks,)`` int64 accumulator of background pixel counts.
    """
    for i in range(gray_rows.shape[0]):
        grow = gray_rows[i]
        for bj in range(n_blocks):
            count = 0
            for j in range(bj * block, (bj + 1) * block):
                v = grow[j]
                count += (v < low) | (v > high)
            background_out[bj] += count
        row = rgb_rows[i]
        for bj in range(n_blocks):
            e = rgb_out[bj]
            for j in range(bj * block * 3, (bj + 1) * block * 3):
                e[row[j]] += 1
