"""Plain images as slides: PNG, JPEG, BMP and single-level TIFF, read whole into RGB.

:func:`slidesift.io.slide.open_slide` uses these when a file is not an OpenSlide format. Every
raster becomes ``(H, W, 3)`` uint8 RGB (grey repeated, alpha composited on white, 16-bit
shifted to 8); a damaged file is a :class:`~slidesift.errors.SlideReadError` that names it.

The size in the header is checked before any pixel is decoded (:func:`check_image_size`): a
small PNG can claim 100,000 x 100,000 px and inflate 1000:1. PIL's own bomb check is not the
guard (other code may switch it off, and it would refuse before ``SLIDESIFT_MAX_IMAGE_PIXELS``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import SlideReadError
from slidesift.io.limits import IMAGE_PIXELS_ENV, max_image_pixels, megapixels

__all__ = ["check_image_size", "plain_image_size", "read_plain_image", "rgba_to_rgb"]

#: Microns per pixel a scanned slide can plausibly have; resolution tags outside are ignored.
_MPP_RANGE = (0.01, 20.0)


def read_plain_image(p: Path, kind: str) -> tuple[NDArray[np.uint8], tuple[float, float] | None]:
    """``(pixels (H, W, 3) uint8, mpp or None)`` of a plain image; ``kind`` ``tiff`` or other.

    Raises
    ------
    SlideReadError
        Undecodable, or larger than :func:`check_image_size` allows (refused from the header).
    """
    if kind == "tiff":
        return _read_plain_tiff(p)
    return _read_pil(p, kind), None


def check_image_size(p: Path, size: tuple[int, int]) -> None:
    """Refuse a plain image of ``size = (w, h)`` px over ``SLIDESIFT_MAX_IMAGE_PIXELS``.

    Raises
    ------
    SlideReadError
        Naming the claimed size, the limit and what to do.
    """
    w, h = size
    cap = max_image_pixels()
    if w * h > cap:
        raise SlideReadError(
            p,
            f"its header claims {megapixels(w, h)}, over the {cap:,} px a plain "
            "(non-pyramidal) image may have: it would be decoded whole (about 10 bytes a px)",
            "convert it to a tiled pyramidal TIFF (e.g. vips tiffsave --tile --pyramid), or, "
            f"if it is genuine and memory allows, raise {IMAGE_PIXELS_ENV}",
        )


def plain_image_size(p: Path, kind: str) -> tuple[int, int]:
    """``(w, h)`` of a plain image from its header alone (nothing decoded).

    Raises
    ------
    SlideReadError
        The header cannot be read.
    """
    if kind == "tiff":
        with _TifffileLog() as log:
            try:
                import tifffile

                with tifffile.TiffFile(p) as tif:
                    return _page_size(tif.pages.first)
            except Exception as exc:  # tifffile raises many types for damaged files
                why = "; ".join(log.heard) or str(exc)
                raise SlideReadError(
                    p,
                    f"the TIFF cannot be decoded ({why})",
                    "the file is probably truncated or corrupt",
                ) from exc
    with _open_pil(p, kind) as im:
        w, h = im.size
        return int(w), int(h)


def rgba_to_rgb(rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Composite ``(h, w, 4)`` non-premultiplied RGBA onto white; return ``(h, w, 3)`` RGB."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.uint16)
    return ((rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _to_rgb(arr: NDArray[Any], p: Path) -> NDArray[np.uint8]:
    """Any 2-D/3-D 8- or 16-bit raster to ``(h, w, 3)`` uint8 RGB (RGBA composited on white)."""
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if arr.dtype.kind not in "ui":
            raise SlideReadError(p, f"unsupported pixel type {arr.dtype}", "use 8-bit RGB images")
        top = int(arr.max()) if arr.size else 0
        arr = (arr >> 8).astype(np.uint8) if top > 255 else arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise SlideReadError(p, f"unsupported image shape {arr.shape}", "use RGB or grey images")
    c = arr.shape[2]
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    if c == 2:
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]], axis=2)
    if arr.shape[2] == 4:
        return rgba_to_rgb(arr)
    return np.ascontiguousarray(arr)


def _open_pil(p: Path, kind: str) -> Any:
    """The file opened lazily (header only) by the PIL plugin for ``kind``.

    The plugin class is called directly: ``Image.open`` would apply PIL's own decompression
    bomb check, which :func:`check_image_size` replaces.
    """
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

    plugin = {"png": PngImagePlugin.PngImageFile, "jpeg": JpegImagePlugin.JpegImageFile}.get(
        kind, BmpImagePlugin.BmpImageFile
    )
    try:
        return plugin(p)
    except (OSError, SyntaxError, ValueError) as exc:
        raise SlideReadError(
            p, f"the image cannot be decoded ({exc})", "the file is probably truncated or corrupt"
        ) from exc


def _read_pil(p: Path, kind: str) -> NDArray[np.uint8]:
    from PIL import Image

    with _open_pil(p, kind) as opened:
        check_image_size(p, opened.size)  # before a pixel is decoded
        try:
            opened.load()
            im: Image.Image = opened
            if im.mode not in ("RGB", "RGBA", "L", "LA", "I;16", "1"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise SlideReadError(
                p,
                f"the image cannot be decoded ({exc})",
                "the file is probably truncated or corrupt",
            ) from exc
    return _to_rgb(arr, p)


class _TifffileLog(logging.Filter):
    """What tifffile logs while a TIFF is read, kept in :attr:`heard` instead of printed.

    For a truncated SVS tifffile printed ``<tifffile.TiffPages @1275950> invalid offset to
    first page 1275950`` on stderr above slidesift's error; that is the cause, so the error
    gives it (prefix dropped). A context manager around the read; on success it is dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.heard.append(re.sub(r"^<[^>]*>\s*", "", record.getMessage()))
        return False

    def __enter__(self) -> _TifffileLog:
        logging.getLogger("tifffile").addFilter(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger("tifffile").removeFilter(self)


def _read_plain_tiff(p: Path) -> tuple[NDArray[np.uint8], tuple[float, float] | None]:
    import tifffile

    try:
        with _TifffileLog() as log, tifffile.TiffFile(p) as tif:
            page = tif.pages.first
            check_image_size(p, _page_size(page))  # before a strip is decoded
            arr = page.asarray()
            mpp = _tiff_mpp(page)
    except SlideReadError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        why = "; ".join(log.heard) or str(exc)  # "0" (an IndexError) says less than the log
        raise SlideReadError(
            p, f"the TIFF cannot be decoded ({why})", "the file is probably truncated or corrupt"
        ) from exc
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (separate) configuration
    return _to_rgb(arr, p), mpp


def _page_size(page: Any) -> tuple[int, int]:
    """``(w, h)`` a TIFF page decodes to (volumetric planes stacked down)."""
    return int(page.imagewidth), int(page.imagelength) * max(1, int(page.imagedepth))


def _tiff_mpp(page: Any) -> tuple[float, float] | None:
    """Microns per pixel from a TIFF page's resolution tags, when in cm or inch."""
    tags = page.tags
    try:
        unit = int(tags["ResolutionUnit"].value)
        xr = tags["XResolution"].value
        yr = tags["YResolution"].value
    except KeyError:
        return None
    per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
    if per_unit is None:
        return None
    xres = xr[0] / xr[1] if xr[1] else 0.0
    yres = yr[0] / yr[1] if yr[1] else 0.0
    if xres <= 0 or yres <= 0:
        return None
    mpp = (per_unit / xres, per_unit / yres)
    # Screen defaults (72/96/300 dpi) are no scan resolution; microscopes give 0.1-20 um/px.
    return mpp if all(_MPP_RANGE[0] <= m <= _MPP_RANGE[1] for m in mpp) else None
