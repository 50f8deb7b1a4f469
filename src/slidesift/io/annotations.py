"""Ground truth onto the thumbnail grid, and masks back out as QuPath GeoJSON.

Inputs users receive:

* mask images (PAIP2020 TIFF masks, CAMELYON16 pyramidal masks, PNG): any size with the slide's
  aspect ratio, resampled nearest onto the thumbnail;
* ASAP XML (CAMELYON16): polygons in level-0 px; groups ``_0``/``_1`` tumor, ``_2`` exclusion
  cut out of tumor;
* QuPath GeoJSON: ``Polygon``/``MultiPolygon`` with holes, as a ``FeatureCollection``, a list of
  features or one feature; classification names map to labels.

Polygon frame: level-0 px with pixel ``(i, j)`` covering ``[j, j + 1) x [i, i + 1)``. A thumbnail
pixel belongs to a polygon when its centre does; thumbnail px ``(th_x, th_y)`` has its centre at
level-0 ``((th_x + 0.5) * sx, (th_y + 0.5) * sy)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import AnnotationError, SlideReadError
from slidesift.io.asap import (
    EXCLUDE_GROUPS,
    TUMOR_GROUPS,
    parse_asap_xml,
    read_asap_xml,
    write_asap_xml,
)
from slidesift.io.geojson import (
    mask_to_geojson,
    mask_to_polygons,
    parse_geojson,
    read_geojson,
    write_geojson,
)
from slidesift.io.limits import MASK_SIDE_RATIO, megapixels
from slidesift.io.plain_image import plain_image_size
from slidesift.io.polygons import Polygon, rasterize
from slidesift.io.resample import nearest_resample
from slidesift.io.slide import Thumb, open_slide
from slidesift.io.sniff import file_kind

__all__ = [
    "EXCLUDE_GROUPS",
    "TUMOR_GROUPS",
    "Polygon",
    "mask_to_geojson",
    "mask_to_polygons",
    "parse_asap_xml",
    "parse_geojson",
    "rasterize",
    "read_asap_xml",
    "read_geojson",
    "read_mask",
    "read_truth",
    "write_asap_xml",
    "write_geojson",
]


def read_mask(path: str | os.PathLike[str], thumb: Thumb, *, labels: bool = False) -> NDArray[Any]:
    """Read a mask image (any size with the slide's aspect ratio) onto the thumbnail grid.

    Parameters
    ----------
    path
        TIFF (plain or pyramidal), PNG or JPEG mask. Pyramidal masks are read at level 0 band
        by band, so label values are never blurred by a pyramid's own downsampling.
    thumb
        The slide's thumbnail; fixes the output grid.
    labels
        ``False``: any non-zero value is tumor, returns bool. ``True``: the first channel's
        values are labels, returns uint8.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool or uint8, indexed ``[th_y, th_x]``.

    Raises
    ------
    AnnotationError
        Unreadable file, an aspect ratio that does not match the slide's, or a header that
        claims more than :data:`~slidesift.io.limits.MASK_SIDE_RATIO` times the slide's
        level-0 width or height (refused before any pixel is decoded).
    """
    p = Path(path)
    claimed = _header_size(p)
    l0_w, l0_h = thumb.l0_size
    if claimed is not None and (
        claimed[0] > MASK_SIDE_RATIO * l0_w or claimed[1] > MASK_SIDE_RATIO * l0_h
    ):
        ratio = max(claimed[0] / l0_w, claimed[1] / l0_h)
        raise AnnotationError(
            p,
            f"the mask claims {megapixels(*claimed)}, {ratio:.3g} times the slide's level 0 "
            f"({l0_w} x {l0_h} px); a mask may be at most {MASK_SIDE_RATIO:g} times as wide "
            "and as high",
            "pass the mask that belongs to this slide, at level 0 or downsampled",
        )
    try:
        mask_slide = open_slide(p)
    except SlideReadError as exc:
        raise AnnotationError(p, exc.reason, exc.hint) from exc
    with mask_slide:
        mw, mh = mask_slide.dimensions
        sx, sy = l0_w / mw, l0_h / mh
        tolerance = 0.01 + 2.0 / min(mw, mh)
        if abs(sx - sy) / max(sx, sy) > tolerance:
            raise AnnotationError(
                p,
                f"mask is {mw} x {mh} px (aspect {mw / mh:.4f}) but the slide is "
                f"{l0_w} x {l0_h} px (aspect {l0_w / l0_h:.4f})",
                "pass the mask that belongs to this slide, at level 0 or downsampled uniformly",
            )

        def read_rows(y0: int, y1: int) -> NDArray[np.uint8]:
            return mask_slide.read_region(0, (0, y0), (mw, y1 - y0))

        grid = nearest_resample(read_rows, (mw, mh), thumb.size)
    if labels:
        return np.ascontiguousarray(grid[..., 0])
    return np.asarray(grid.max(axis=2) > 0)


def _header_size(p: Path) -> tuple[int, int] | None:
    """``(w, h)`` of a mask image's level 0 from its header, nothing decoded.

    ``None`` where the header cannot be read: :func:`open_slide` then says what is wrong.
    """
    import openslide

    plain = {"image (PNG)": "png", "image (JPEG)": "jpeg", "slide (TIFF)": "tiff"}
    try:
        if openslide.OpenSlide.detect_format(str(p)) is not None:
            with openslide.OpenSlide(str(p)) as osr:
                w, h = osr.dimensions
                return int(w), int(h)
        kind = plain.get(file_kind(p))
        return None if kind is None else plain_image_size(p, kind)
    except (openslide.OpenSlideError, SlideReadError, OSError):
        return None


def read_truth(path: str | os.PathLike[str], thumb: Thumb, *, labels: bool = False) -> NDArray[Any]:
    """Read any ground truth (ASAP XML, GeoJSON, mask image) onto the thumbnail grid.

    Parameters
    ----------
    path
        ``.xml`` is ASAP, ``.geojson``/``.json`` is GeoJSON, anything else a mask image.
    thumb
        Fixes the grid.
    labels
        Return uint8 labels instead of a bool tumor mask.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool (or uint8 labels), indexed ``[th_y, th_x]``.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".xml":
        out: NDArray[Any] = read_asap_xml(path, thumb)
        return out.astype(np.uint8) if labels else out
    if suffix in (".geojson", ".json"):
        lab = read_geojson(path, thumb)
        return lab if labels else lab > 0
    return read_mask(path, thumb, labels=labels)
