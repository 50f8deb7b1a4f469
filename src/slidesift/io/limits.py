"""Size limits checked from a file's header or size before anything large is read or allocated.

A hostile or mistaken file can claim sizes no machine holds: a TIFF of 1,000,000 x 1,000,000 px
in a few MB, a PNG that inflates 1000:1, a safetensors header length of gigabytes, a GeoJSON of
a gigabyte. Each reader compares what the file claims with one of these limits first and
refuses with the file, the claimed size, the limit and what to do; none is reached by real
slides read as slidesift reads them (a pyramid level near the thumbnail size). Where a limit
could bite a legitimate file it is an environment variable:

===============================  ================  =========================================
variable                         default           what it bounds
===============================  ================  =========================================
``SLIDESIFT_MAX_IMAGE_PIXELS``   200,000,000 px    a plain PNG/JPEG/BMP/TIFF, decoded whole
                                                   (and one tile of a slide)
``SLIDESIFT_MAX_READ_PIXELS``    4,294,967,296 px  the level a thumbnail is averaged from
``SLIDESIFT_MAX_ANNOTATION_MB``  256 MB            a GeoJSON or ASAP XML file, parsed whole
``SLIDESIFT_MAX_CHECKPOINT_MB``  1024 MB           a safetensors file, read whole
===============================  ================  =========================================

Fixed limits (no legitimate file comes near them): a mask image may have at most
:data:`MASK_SIDE_RATIO` times the slide's level-0 side; a safetensors header at most
:data:`SAFETENSORS_HEADER_MAX` bytes (the safetensors library's own limit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from slidesift.errors import AnnotationError, ConfigError, SlideReadError

__all__ = [
    "ANNOTATION_MB_ENV",
    "CHECKPOINT_MB_ENV",
    "IMAGE_PIXELS_ENV",
    "MASK_SIDE_RATIO",
    "READ_PIXELS_ENV",
    "SAFETENSORS_HEADER_MAX",
    "check_annotation_size",
    "check_level_read",
    "check_tile_sizes",
    "limit",
    "max_annotation_bytes",
    "max_checkpoint_bytes",
    "max_image_pixels",
    "max_read_pixels",
    "megapixels",
]

IMAGE_PIXELS_ENV = "SLIDESIFT_MAX_IMAGE_PIXELS"
READ_PIXELS_ENV = "SLIDESIFT_MAX_READ_PIXELS"
ANNOTATION_MB_ENV = "SLIDESIFT_MAX_ANNOTATION_MB"
CHECKPOINT_MB_ENV = "SLIDESIFT_MAX_CHECKPOINT_MB"

#: A plain image is decoded whole (PIL holds RGB as 4 bytes a px, numpy takes 3 more, the
#: thumbnail's bands the rest): a 196 MP PNG read to a 6000-px thumbnail peaked at 1.98 GB.
_IMAGE_PIXELS = 200_000_000
#: 65536 x 65536 px: CAMELYON16's level 2 (1.4 Gpx) fits, a single-level 100k-px TIFF does not.
#: Levels are read band by band, so this bounds time (minutes), not memory.
_READ_PIXELS = 2**32
_ANNOTATION_MB = 256
_CHECKPOINT_MB = 1024
#: A mask may be at most this many times the slide's level-0 width and height.
MASK_SIDE_RATIO = 2.0
#: The safetensors library refuses longer headers too.
SAFETENSORS_HEADER_MAX = 100_000_000


def limit(env: str, default: int) -> int:
    """The positive integer in environment variable ``env``, or ``default`` when unset.

    Raises
    ------
    ConfigError
        The variable is set but is no positive integer (``_`` separators allowed).
    """
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(env, raw, f"a positive integer (default {default})")
    return value


def max_image_pixels() -> int:
    """Pixels a plain image may have (``SLIDESIFT_MAX_IMAGE_PIXELS``)."""
    return limit(IMAGE_PIXELS_ENV, _IMAGE_PIXELS)


def max_read_pixels() -> int:
    """Pixels of the pyramid level a thumbnail may be read from (``SLIDESIFT_MAX_READ_PIXELS``)."""
    return limit(READ_PIXELS_ENV, _READ_PIXELS)


def max_annotation_bytes() -> int:
    """Bytes a GeoJSON or ASAP XML file may have (``SLIDESIFT_MAX_ANNOTATION_MB`` x 2**20)."""
    return limit(ANNOTATION_MB_ENV, _ANNOTATION_MB) * 2**20


def max_checkpoint_bytes() -> int:
    """Bytes a safetensors file may have (``SLIDESIFT_MAX_CHECKPOINT_MB`` x 2**20)."""
    return limit(CHECKPOINT_MB_ENV, _CHECKPOINT_MB) * 2**20


def megapixels(w: int, h: int) -> str:
    """``"1000000 x 1000000 px (1,000,000 MP)"``: a size as messages give it."""
    mp = w * h / 1e6
    return f"{w} x {h} px ({mp:,.0f} MP)" if mp >= 10 else f"{w} x {h} px ({mp:.2g} MP)"


def check_level_read(
    path: Path, level: int, lv_size: tuple[int, int], target: tuple[int, int]
) -> None:
    """Refuse to area-average a thumbnail of ``target`` px from a level of ``lv_size`` px.

    The level is read band by band (memory stays bounded), but every one of its pixels is
    decoded: a single-level TIFF claiming 1,000,000 x 1,000,000 px would take days. Called
    before the first band is read.

    Raises
    ------
    SlideReadError
        The level has more than ``SLIDESIFT_MAX_READ_PIXELS`` px.
    """
    (w, h), cap = lv_size, max_read_pixels()
    if w * h > cap:
        raise SlideReadError(
            path,
            f"a {target[0]} x {target[1]} px thumbnail would be read from level {level} of "
            f"{megapixels(w, h)}, the smallest level at least that large; over the "
            f"{cap:,} px one thumbnail may read",
            "the slide lacks a pyramid level near the thumbnail's size: convert it to a tiled "
            "pyramidal TIFF (e.g. vips tiffsave --tile --pyramid), or, if it is genuine and "
            f"you can wait, raise {READ_PIXELS_ENV}",
        )


def check_annotation_size(path: Path) -> None:
    """Refuse a GeoJSON or XML annotation file larger than ``SLIDESIFT_MAX_ANNOTATION_MB``.

    Both are parsed whole, and parsed JSON takes several times its file's size in Python
    objects; the size is taken with ``stat`` before a byte is read. A missing file passes
    (the parser reports it).

    Raises
    ------
    AnnotationError
        Naming the file's size, the limit and what to do.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return
    cap = max_annotation_bytes()
    if size > cap:
        raise AnnotationError(
            path,
            f"the file has {size / 2**20:,.1f} MB, over the {cap // 2**20:,} MB an annotation "
            "file may have (it is parsed whole, at several times its size in memory)",
            "check that this is the slide's annotation export (QuPath GeoJSON of a slide is "
            f"rarely over 100 MB); if it is genuine and memory allows, raise {ANNOTATION_MB_ENV}",
        )


def check_tile_sizes(path: Path, props: Mapping[str, str], levels: int) -> None:
    """Refuse a slide whose tiles (OpenSlide's ``openslide.level[N].tile-*``) are too large.

    A tile is decoded in one piece (OpenSlide: 4 bytes a px), so a TIFF claiming one
    65536 x 65536 px tile would allocate 16 GiB for the first read; the limit is the plain
    image's, ``SLIDESIFT_MAX_IMAGE_PIXELS``. Called before any pixel is read.

    Raises
    ------
    SlideReadError
        Naming the level, the tile size, the limit and what to do.
    """
    cap = max_image_pixels()
    for level in range(levels):
        try:
            tw = int(props[f"openslide.level[{level}].tile-width"])
            th = int(props[f"openslide.level[{level}].tile-height"])
        except (KeyError, ValueError):
            continue
        if tw * th > cap:
            raise SlideReadError(
                path,
                f"level {level} claims tiles of {megapixels(tw, th)}, each decoded in one piece; "
                f"over the {cap:,} px one piece may have",
                "re-export the slide with ordinary tiles (e.g. vips tiffsave --tile "
                f"--tile-width 512 --tile-height 512 --pyramid), or, if it is genuine and memory "
                f"allows, raise {IMAGE_PIXELS_ENV}",
            )
