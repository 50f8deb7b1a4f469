"""Otsu thresholding of a thumbnail: the U-Net baseline's input (METHOD.md section 7).

The paper found the U-Net/EfficientNet-B0 baseline did best on images "thresholded using
Otsu's method before tiling". Here that means: one threshold per slide, from the histogram of
the whole thumbnail's grey values (Otsu 1979: the threshold that maximises the between-class
variance); pixels at or below it are tissue (H&E tissue is darker than the glass) and keep
their colour, pixels above it are background and become black. The threshold is the slide's,
not the tile's, so a tile of pure glass stays black rather than being split in two.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.sift import to_gray

__all__ = ["otsu_image", "otsu_threshold", "otsu_tissue"]


def otsu_threshold(gray: NDArray[np.uint8]) -> int:
    """Otsu's threshold of 8-bit grey values: the ``t`` maximising the between-class variance
    of ``{v <= t}`` and ``{v > t}`` (OpenCV's implementation).

    Parameters
    ----------
    gray
        ``(H, W)`` uint8 grey image (any shape; all values count).

    Returns
    -------
    int
        ``t`` in ``[0, 255]``. A constant image gives 0 (OpenCV's convention), so a blank
        slide has no tissue.
    """
    g = np.ascontiguousarray(np.asarray(gray, np.uint8).reshape(1, -1))
    t, _ = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return int(t)


def otsu_tissue(pixels: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """``(H, W)`` bool: the thumbnail's tissue, grey at or below the slide's Otsu threshold.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB thumbnail, ``[th_y, th_x]``.
    """
    gray = to_gray(np.asarray(pixels, np.uint8))
    return np.asarray(gray <= otsu_threshold(gray))


def otsu_image(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The thumbnail with its background (grey above the Otsu threshold) set to black.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB thumbnail.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, a new array: tissue pixels unchanged, the others ``(0, 0, 0)``.
    """
    p = np.asarray(pixels, np.uint8)
    return np.where(otsu_tissue(p)[..., None], p, np.uint8(0)).astype(np.uint8)
