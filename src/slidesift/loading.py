"""Read a manifest's slides onto their thumbnail grids, through the cache, for tiling.

This is the disk edge of training: everything after it (:mod:`slidesift.dataset`) works on
arrays. Each slide is decoded once per N; its truth is rasterised once per thumbnail grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from slidesift.cache import ThumbCache
from slidesift.errors import DatasetError
from slidesift.io.annotations import read_truth
from slidesift.io.slide import Thumb, open_slide, read_thumb
from slidesift.manifest import ManifestEntry
from slidesift.stain import StainNormalizer, key_of
from slidesift.tileset import SlideImage

__all__ = ["load_slide", "load_slides", "normalize_slides"]


def load_slide(
    entry: ManifestEntry,
    *,
    longest: int | None = None,
    mpp: float | None = None,
    cache: ThumbCache | None = None,
) -> SlideImage:
    """One manifest entry as a :class:`SlideImage` (thumbnail and tumor mask).

    Raises
    ------
    DatasetError
        The slide has no ground truth (no annotation and not labelled normal), or is labelled
        as a tumor slide but its truth marks no tumor.
    SlideReadError, AnnotationError
        The slide or its truth cannot be read.
    """
    cache = cache or ThumbCache()
    if not entry.has_truth:
        raise DatasetError(
            f"training slide {entry.name} (manifest line {entry.line}) has no annotation and is "
            "not labelled normal; give its mask/XML/GeoJSON, or label it 'normal'"
        )

    def read() -> Thumb:
        with open_slide(entry.slide) as slide:
            return read_thumb(slide, longest=longest, mpp=mpp)

    thumb, key = cache.thumb(entry.slide, read, longest=longest, mpp=mpp)
    if entry.annotation is None:
        tumor = np.zeros(thumb.pixels.shape[:2], bool)
    else:
        annotation = entry.annotation
        tumor = cache.truth(annotation, key, lambda: read_truth(annotation, thumb))
        if tumor.shape != thumb.pixels.shape[:2]:  # pragma: no cover - read_truth fixes the grid
            raise DatasetError(f"truth of {entry.name} does not match its thumbnail")
        if not entry.is_normal and not tumor.any():
            raise DatasetError(
                f"slide {entry.name} (manifest line {entry.line}) is labelled "
                f"{entry.label or 'tumor'!r} but its truth {entry.annotation.name} marks no "
                "tumor at this resolution; fix the mask, or label the slide 'normal'"
            )
    um = None if thumb.mpp is None else (thumb.mpp[0] + thumb.mpp[1]) / 2
    return SlideImage(entry.name, entry.label, thumb.pixels, tumor, key, um, max(thumb.l0_size))


def load_slides(
    entries: Sequence[ManifestEntry],
    *,
    longest: int | None = None,
    mpp: float | None = None,
    cache: ThumbCache | None = None,
    on_slide: Callable[[ManifestEntry], None] | None = None,
) -> list[SlideImage]:
    """:func:`load_slide` for every entry, calling ``on_slide(entry)`` after each."""
    out = []
    for entry in entries:
        out.append(load_slide(entry, longest=longest, mpp=mpp, cache=cache))
        if on_slide is not None:
            on_slide(entry)
    return out


def normalize_slides(
    slides: Sequence[SlideImage],
    normalizer: StainNormalizer,
    *,
    cache: ThumbCache | None = None,
) -> list[SlideImage]:
    """The slides with stain-normalised pixels (cached per thumbnail and normaliser)."""
    cache = cache or ThumbCache()
    tag = key_of(normalizer)
    out = []
    for s in slides:

        def make(s: SlideImage = s) -> NDArray[np.uint8]:
            return normalizer.apply(np.asarray(s.pixels))

        pixels = cache.array(f"{s.key}-{tag}", make) if s.key else make()
        out.append(replace(s, pixels=pixels))
    return out
