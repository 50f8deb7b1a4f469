"""The :class:`Thumb` value: a slide downsampled, with its level-0 scale (read by
:func:`slidesift.io.slide.read_thumb`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Thumb"]


@dataclass(frozen=True)
class Thumb:
    """A downsampled slide: the pixels every later stage works on.

    Attributes
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB, indexed ``[th_y, th_x]``.
    l0_size
        ``(w, h)`` of the slide's level 0, in level-0 px.
    scale
        ``(sx, sy)``: level-0 px per thumbnail px along x and y, exactly ``l0_w / W`` and
        ``l0_h / H``. A thumbnail pixel ``(th_x, th_y)`` covers level-0
        ``[th_x * sx, (th_x + 1) * sx) x [th_y * sy, (th_y + 1) * sy)``.
    level
        The pyramid level the pixels were resampled from.
    mpp
        ``(x, y)`` microns per thumbnail pixel, or ``None`` when the slide carries no MPP.
    source
        The slide's path, for messages and reports.
    reader
        What decoded the level: ``tifffile`` (its tiles, :mod:`slidesift.io.tiff_read`),
        ``openslide``, ``wsidicom`` (DICOM) or ``memory`` (plain images); ``None`` where not
        recorded (cached).
    normalized
        :func:`slidesift.stain.key_of` of the stain normaliser the pixels were already
        normalised with (a thumbnail ``slidesift thumb --model`` wrote), else ``None``.
    """

    pixels: NDArray[np.uint8]
    l0_size: tuple[int, int]
    scale: tuple[float, float]
    level: int
    mpp: tuple[float, float] | None
    source: str
    reader: str | None = None
    normalized: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(w, h)`` of the thumbnail in px."""
        return (self.pixels.shape[1], self.pixels.shape[0])

    def th_to_l0(self, th_x: float, th_y: float) -> tuple[float, float]:
        """Map a thumbnail point to level-0 px (top-left corner convention)."""
        return (th_x * self.scale[0], th_y * self.scale[1])
