"""Pictures embedded in the report as ``data:`` URIs, small enough to mail.

A slide picture (overlay, error map, tile locations) is a photograph of tissue: as PNG a
1200-px preview of an H&E thumbnail takes over 1 MB, a third more as base64, so a cohort of 8
slides made a 19 MB page. :func:`embed_picture` therefore encodes a picture both ways and keeps
JPEG when it is at most half the PNG. The JPEG keeps full colour resolution (4:4:4, no chroma
subsampling), so the thin outlines of an overlay and the edges of an error map keep their colour;
flat pictures (masks, diagrams, tiny ones) stay lossless PNG, which is then the smaller.

Plots (:func:`compact_plot_png`) are drawn in a few flat colours: a 64-colour palette PNG
holds them at a quarter of matplotlib's RGBA PNG, with no visible change.
"""

from __future__ import annotations

import base64
import html
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "JPEG_QUALITY",
    "PLOT_COLOURS",
    "compact_plot_png",
    "embed_picture",
    "png_img",
    "png_size",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: JPEG quality of embedded slide pictures (measured on H&E-like previews: outlines and
#: error-map edges stay crisp; 85 costs a third more bytes for no visible gain).
JPEG_QUALITY = 80

#: JPEG is kept only when it is at most this fraction of the PNG's bytes.
_JPEG_GAIN = 0.5

#: Colours in the palette of a plot PNG.
PLOT_COLOURS = 64


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's header, or ``None`` when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _jpeg(img: NDArray[Any]) -> bytes | None:
    """``img`` (BGR or grey, uint8) as JPEG with full chroma resolution, or ``None``."""
    import cv2

    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        return None  # alpha or 16-bit: JPEG would lose it
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]  # fmt: skip
    ok, buf = cv2.imencode(".jpg", img, params)
    return buf.tobytes() if ok else None


def embed_picture(path: str | Path, max_px: int | None) -> tuple[str, int, int] | None:
    """A PNG picture as ``(data URI, width, height)``, neither side over ``max_px``.

    Larger pictures are resampled (area). The picture is embedded as JPEG when that takes at
    most half the bytes of the PNG (a photograph), else as PNG (byte for byte when it was not
    resampled). ``None`` when the file cannot be read or is not a PNG.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    size = png_size(data)
    if size is None:
        return None
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    w, h = size
    if max_px is not None and max(w, h) > max_px:
        f = max_px / max(w, h)
        w, h = max(1, round(w * f)), max(1, round(h * f))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            return None
        data = buf.tobytes()
    jpeg = _jpeg(img)
    if jpeg is not None and len(jpeg) <= _JPEG_GAIN * len(data):
        return _data_uri("image/jpeg", jpeg), w, h
    return _data_uri("image/png", data), w, h


def compact_plot_png(rgb: NDArray[np.uint8]) -> bytes:
    """An ``(H, W, 3)`` plot raster as a palette PNG of :data:`PLOT_COLOURS` colours."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB")
    palette = image.quantize(
        colors=PLOT_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    buf = io.BytesIO()
    palette.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_img(data: bytes, alt: str, *, lazy: bool = False, cls: str = "") -> str:
    """An ``<img>`` of PNG bytes (a plot), with its size from the PNG header."""
    w, h = png_size(data) or (0, 0)
    extra = (' loading="lazy"' if lazy else "") + (
        f' class="{html.escape(cls, quote=True)}"' if cls else ""
    )
    return (
        f'<img src="{_data_uri("image/png", data)}" alt="{html.escape(alt, quote=True)}" '
        f'width="{w}" height="{h}"{extra}>'
    )
