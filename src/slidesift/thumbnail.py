"""The thumbnail to send: a slide read at a model's scale, in a 1-3 MB file that says its um/px.

Pipeline position::

    slide --read_thumb(N | um/px | the model's)--> [the model's stain normaliser]
    --encode_thumb--> case.jpg | case.png  (um/px and the slidesift record inside)

The pixels are those :func:`slidesift.segment.segment` classifies (same reader, same target,
same normaliser), so a thumbnail segmented where the slide is not (``slidesift segment MODEL
case.png``, or the browser page) sees what segmenting the slide would. Opened again,
:func:`slidesift.io.slide.open_slide` reads its um/px as the slide's MPP
(:mod:`slidesift.io.thumb_meta`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from slidesift._version import __version__
from slidesift.errors import ConfigError
from slidesift.io.atomic import atomic_write_bytes
from slidesift.io.downsample import Downsample
from slidesift.io.slide import open_slide, read_thumb
from slidesift.io.thumb_meta import JPEG_QUALITY, ThumbMeta, encode_thumb, thumb_format

if TYPE_CHECKING:
    from slidesift.checkpoint import Checkpoint

__all__ = ["BUDGET_BYTES", "Thumbnail", "make_thumbnail", "write_thumbnail"]

#: Largest file a telemedicine link takes comfortably (the budget is 1-3 MB).
BUDGET_BYTES = 3_000_000


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail to write, and its record.

    Attributes
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB, stain-normalised when ``meta.normalizer`` says so.
    meta
        What the file will record (:class:`~slidesift.io.thumb_meta.ThumbMeta`).
    """

    pixels: NDArray[np.uint8]
    meta: ThumbMeta


def make_thumbnail(
    slide_path: str | os.PathLike[str],
    *,
    downsample: Downsample | None = None,
    checkpoint: Checkpoint | None = None,
    name: str | None = None,
) -> Thumbnail:
    """Read a slide at a target, or at a model's target under the model's normaliser.

    Parameters
    ----------
    slide_path
        Any slide slidesift reads.
    downsample
        The target (N or um/px); exactly one of ``downsample`` and ``checkpoint``.
    checkpoint
        A model: its target, and its stain normaliser applied (as :func:`segment` does).
    name
        The slide name to record; default the file's name (never its folder); ``""``: none.

    Raises
    ------
    ConfigError
        Neither or both of ``downsample`` and ``checkpoint``; ``um/px`` asked of a slide
        without MPP.
    SlideReadError
        The slide cannot be read.
    """
    if (downsample is None) == (checkpoint is None):
        raise ConfigError(
            "downsample/checkpoint",
            (downsample, checkpoint),
            "exactly one: a target (-N, --mpp) or a model (--model)",
        )
    target = checkpoint.downsample if checkpoint is not None else downsample
    assert target is not None
    with open_slide(slide_path) as slide:
        thumb = read_thumb(slide, **target.to_dict())
    pixels, norm_key = np.asarray(thumb.pixels), thumb.normalized
    method = None
    model = digest = None
    if checkpoint is not None:
        from slidesift.stain import normalized_pixels

        normalizer = checkpoint.normalizer
        pixels, norm_key = normalized_pixels(thumb, normalizer, Path(slide_path).name)
        method = normalizer.method if normalizer is not None else None
        if checkpoint.path is not None:
            from slidesift.cache import file_digest

            # a bundle: its source checkpoint's digest, as a checkpoint's own
            model = checkpoint.path.name
            digest = checkpoint.source_digest or file_digest(checkpoint.path)
    if norm_key is not None and method is None:  # pixels of a thumbnail normalised before
        src = slide.thumb_meta
        method = src.normalizer if src is not None else "unknown"
    meta = ThumbMeta(
        size=thumb.size,
        level0=thumb.l0_size,
        downsample=thumb.scale,
        um_per_px=thumb.mpp,
        asked=target,
        slide=Path(slide_path).name if name is None else (name or None),
        normalizer=method if norm_key is not None else None,
        normalizer_key=norm_key,
        model=model,
        model_digest=digest,
        version=__version__,
    )
    return Thumbnail(np.ascontiguousarray(pixels), meta)


def write_thumbnail(
    path: str | os.PathLike[str], thumbnail: Thumbnail, *, quality: int = JPEG_QUALITY
) -> int:
    """Write a thumbnail atomically as PNG or JPEG (by the extension); its size in bytes.

    Raises
    ------
    ConfigError
        The extension is not ``.png``, ``.jpg`` or ``.jpeg``; ``quality`` outside 1-95.
    OutputError
        The file cannot be written (full disk, permissions, ...).
    """
    kind = thumb_format(path)
    if not 1 <= quality <= 95:
        raise ConfigError("quality", quality, "a JPEG quality from 1 to 95 (default 90)")
    data = encode_thumb(thumbnail.pixels, thumbnail.meta, kind, quality=quality)
    atomic_write_bytes(path, data)
    return len(data)
