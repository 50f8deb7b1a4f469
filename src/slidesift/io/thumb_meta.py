"""Thumbnails that carry their scale: the slidesift record in PNG and JPEG files.

``slidesift thumb`` writes the thumbnail a model needs, to send instead of the slide. The file
says what it is, in two places:

- its resolution, for any viewer: a PNG ``pHYs`` chunk (px per metre) or the JPEG's JFIF
  density (dots per inch, or per cm where inches overflow its 16 bits), from the um/px;
- the slidesift record, a small JSON mapping (:class:`ThumbMeta`) in a PNG ``iTXt`` chunk
  ``slidesift`` (``tEXt`` read too) or a JPEG ``COM`` segment starting ``slidesift:``: um/px,
  level-0 size and downsample, target asked, normaliser and model if any, and the slide's
  file name, never its path (``--name`` changes or drops it).

:func:`read_thumb_meta` reads the record back when :func:`slidesift.io.slide.open_slide` opens
a PNG or JPEG: the image opens as a slide whose MPP is the recorded um/px. Reading is bounded:
only the chunks or segments before the image data are walked (their headers, not their
bytes), a record over :data:`MAX_RECORD_BYTES` is not read, compressed text is not inflated,
and the record must be JSON of the known fields and types, for an image of the recorded size
(a resized or cropped copy no longer has that um/px). Anything else is ignored with a
:class:`ThumbMetaWarning` that says why, and the image opens as a plain image without MPP.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, SlidesiftWarning
from slidesift.io.downsample import Downsample

__all__ = [
    "FORMAT",
    "JPEG_QUALITY",
    "MAX_RECORD_BYTES",
    "ThumbMeta",
    "ThumbMetaWarning",
    "encode_thumb",
    "read_thumb_meta",
    "thumb_format",
]

#: Format tag of the record; another tag is not read.
FORMAT = "slidesift-thumb/1"
#: PNG text keyword, and the prefix of the JPEG comment, that mark the record.
KEYWORD = "slidesift"
_COM_PREFIX = b"slidesift:"
#: Largest record read, in bytes (one is about 400 bytes).
MAX_RECORD_BYTES = 4096
#: Longest slide or model name kept in a record.
MAX_NAME = 255
#: JPEG quality written by default.
JPEG_QUALITY = 90
#: Chunks or segments walked before the image data at most.
_MAX_HEADERS = 1000
#: um/px a thumbnail may record: finer than any scan is nonsense, coarser than 10 cm a px too.
_UM_RANGE = (1e-3, 1e5)
_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ThumbMetaWarning(SlidesiftWarning):
    """A PNG or JPEG carries a slidesift record that cannot be used; it opens without one."""


class _Bad(ValueError):
    """Why a record is refused (becomes a :class:`ThumbMetaWarning`)."""


@dataclass(frozen=True)
class ThumbMeta:
    """What a thumbnail written by ``slidesift thumb`` is.

    Attributes
    ----------
    size
        ``(w, h)`` of the thumbnail in px.
    level0
        ``(w, h)`` of the source slide's level 0 in px.
    downsample
        ``(sx, sy)`` level-0 px per thumbnail px (:attr:`slidesift.io.slide.Thumb.scale`).
    um_per_px
        ``(x, y)`` microns per thumbnail px, or ``None`` when the slide carries no MPP.
    asked
        The target the thumbnail was read at: N (``longest``) or um/px (``mpp``).
    slide
        The source slide's file name (never its folder), or ``None`` where withheld.
    normalizer
        The stain normalisation method applied to the pixels, or ``None``.
    normalizer_key
        :func:`slidesift.stain.key_of` of that normaliser: segmenting with a model whose
        normaliser has this key does not normalise the pixels again.
    model
        The model file the thumbnail was made for (name only), or ``None``.
    model_digest
        BLAKE2b-128 hex digest of that file's bytes.
    version
        The slidesift version that wrote it (``io`` knows no version: the writer gives it).
    """

    size: tuple[int, int]
    level0: tuple[int, int]
    downsample: tuple[float, float]
    um_per_px: tuple[float, float] | None
    asked: Downsample
    slide: str | None = None
    normalizer: str | None = None
    normalizer_key: str | None = None
    model: str | None = None
    model_digest: str | None = None
    version: str = ""

    def to_json(self) -> str:
        """The record as compact JSON (:meth:`from_json` reads it back)."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "slidesift": self.version,
            "slide": self.slide,
            "size": list(self.size),
            "level0": list(self.level0),
            "downsample": list(self.downsample),
            "um_per_px": None if self.um_per_px is None else list(self.um_per_px),
            "asked": self.asked.to_dict(),
            "normalizer": None
            if self.normalizer is None
            else {"method": self.normalizer, "key": self.normalizer_key},
            "model": None
            if self.model is None
            else {"name": self.model, "digest": self.model_digest},
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, raw: bytes) -> ThumbMeta:
        """Parse and check a record; unknown keys are ignored (a newer writer's additions).

        Parameters
        ----------
        raw
            The record's bytes (UTF-8 JSON), at most :data:`MAX_RECORD_BYTES`.

        Raises
        ------
        ValueError
            Too long, not UTF-8 JSON, another format, or a field missing or of a wrong type
            or range; the message says which.
        """
        if len(raw) > MAX_RECORD_BYTES:
            raise _Bad(
                f"it has {len(raw):,} bytes, over the {MAX_RECORD_BYTES:,} a record may have"
            )
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise _Bad(f"it is not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise _Bad("it is not a JSON mapping")
        tag = doc.get("format")
        if tag != FORMAT:
            said = f"{tag[:40]!r}" if isinstance(tag, str) else "missing"
            raise _Bad(f"its format is {said}, not {FORMAT!r}")
        asked = doc.get("asked")
        if not isinstance(asked, dict):
            raise _Bad("'asked' is not a mapping of longest or mpp")
        try:
            target = Downsample.from_dict(asked)
        except (ConfigError, TypeError, ValueError, OverflowError) as exc:
            raise _Bad(f"'asked' is no downsample target ({exc})") from exc
        um = doc.get("um_per_px")
        norm = _mapping(doc, "normalizer")
        if norm is not None and not (_name(norm, "method") and _name(norm, "key")):
            raise _Bad("'normalizer' lacks its method or key")  # pixels normalised by whom?
        model = _mapping(doc, "model")
        return cls(
            size=_ints(doc, "size"),
            level0=_ints(doc, "level0"),
            downsample=_floats(doc, "downsample", (1e-6, 1e9)),
            um_per_px=None if um is None else _floats(doc, "um_per_px", _UM_RANGE),
            asked=target,
            slide=_name(doc, "slide"),
            normalizer=None if norm is None else _name(norm, "method"),
            normalizer_key=None if norm is None else _name(norm, "key"),
            model=None if model is None else _name(model, "name"),
            model_digest=None if model is None else _name(model, "digest"),
            version=_name(doc, "slidesift") or "",
        )

    def describe(self) -> list[str]:
        """Human-readable lines for ``slidesift info``."""
        asked = f"N {self.asked.longest}" if self.asked.longest else f"{self.asked.mpp:g} um/px"
        lines = [
            f"  slidesift thumbnail of {self.slide or '(name withheld)'} "
            f"(level 0 {self.level0[0]} x {self.level0[1]} px, downsample "
            f"{self.downsample[0]:.4g} x {self.downsample[1]:.4g}), read at {asked}, "
            f"slidesift {self.version or '?'}"
        ]
        norm = f"{self.normalizer} (key {self.normalizer_key})" if self.normalizer else "no"
        lines.append(f"  stain-normalised: {norm}")
        if self.model:
            lines.append(f"  made for model {self.model} (digest {self.model_digest})")
        return lines


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _mapping(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, dict):
        raise _Bad(f"{key!r} is not a mapping or null")
    return value


def _name(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise _Bad(f"{key!r} is not a text of at most {MAX_NAME} characters")
    return value


def _ints(doc: dict[str, Any], key: str) -> tuple[int, int]:
    value = doc.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31 for v in value)
    ):
        raise _Bad(f"{key!r} is not two positive whole numbers of px")
    return (value[0], value[1])


def _floats(doc: dict[str, Any], key: str, bounds: tuple[float, float]) -> tuple[float, float]:
    value = doc.get(key)
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        # bounds first: math.isfinite of a 400-digit integer raises OverflowError
        and all(bounds[0] <= v <= bounds[1] and math.isfinite(v) for v in value)
    )
    if not ok:
        raise _Bad(f"{key!r} is not two numbers in [{bounds[0]:g}, {bounds[1]:g}]")
    assert isinstance(value, list)
    return (float(value[0]), float(value[1]))


# --- writing ------------------------------------------------------------------------------------


def thumb_format(path: str | os.PathLike[str]) -> str:
    """``png`` or ``jpeg`` from a file name's extension.

    Raises
    ------
    ConfigError
        Any other extension.
    """
    kind = _SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise ConfigError(
            "out", str(path), "a .jpg/.jpeg (small, for sending) or .png (lossless) file name"
        )
    return kind


def encode_thumb(
    pixels: NDArray[np.uint8], meta: ThumbMeta, kind: str, *, quality: int = JPEG_QUALITY
) -> bytes:
    """The thumbnail file's bytes: the image, its resolution and the slidesift record.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB; ``(W, H)`` must be ``meta.size``.
    meta
        The record.
    kind
        ``png`` (lossless; pHYs and iTXt chunks before the image data) or ``jpeg`` (JFIF
        density and a COM segment after the JFIF header).
    quality
        JPEG quality, 1-95.

    Raises
    ------
    ValueError
        ``pixels`` do not match ``meta.size``, or the record is over :data:`MAX_RECORD_BYTES`.
    """
    from PIL import Image

    h, w = pixels.shape[:2]
    if (w, h) != meta.size or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels {pixels.shape} do not match the record's size {meta.size}")
    record = meta.to_json().encode("utf-8")
    if len(record) > MAX_RECORD_BYTES:
        raise ValueError(f"the record has {len(record)} bytes, over {MAX_RECORD_BYTES}")
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    out = io.BytesIO()
    if kind == "png":
        image.save(out, "PNG", compress_level=1)
        return _png_with_record(out.getvalue(), meta.um_per_px, record)
    if kind != "jpeg":
        raise ValueError(f"kind {kind!r}: png or jpeg")
    image.save(out, "JPEG", quality=int(quality), optimize=True)
    return _jpeg_with_record(out.getvalue(), meta.um_per_px, record)


def _chunk(ctype: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_with_record(data: bytes, um: tuple[float, float] | None, record: bytes) -> bytes:
    """A PNG's bytes with pHYs (px per metre from ``um``) and the iTXt record after IHDR."""
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR: length and type, 13 bytes, CRC
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG stream")
    extra = b""
    if um is not None:
        per_m = [min(2**31 - 1, max(1, round(1e6 / u))) for u in um]
        extra += _chunk(b"pHYs", struct.pack(">IIB", per_m[0], per_m[1], 1))  # 1: metre
    # keyword, NUL, compression flag 0 and method 0, no language tag, no translated keyword
    extra += _chunk(b"iTXt", KEYWORD.encode() + b"\x00\x00\x00\x00\x00" + record)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _jfif_density(um: tuple[float, float] | None) -> tuple[int, int, int]:
    """``(unit, x, y)`` of a JFIF header: 1 dots/inch, 2 dots/cm, 0 aspect only."""
    if um is not None:
        for unit, per in ((1, 25400.0), (2, 10000.0)):
            dens = [round(per / u) for u in um]
            if all(1 <= d <= 0xFFFF for d in dens):
                return unit, dens[0], dens[1]
    return 0, 1, 1


def _jpeg_with_record(data: bytes, um: tuple[float, float] | None, record: bytes) -> bytes:
    """A JPEG's bytes with its JFIF density set from ``um`` and a COM segment added."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    at = 2
    head = data[:2]
    if data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00":
        seg_len = struct.unpack(">H", data[4:6])[0]
        app0 = bytearray(data[2 : 4 + seg_len])
        app0[11:16] = struct.pack(">BHH", *_jfif_density(um))  # units, x and y density
        head += bytes(app0)
        at = 4 + seg_len
    payload = _COM_PREFIX + record
    com = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    return head + com + data[at:]


# --- reading ------------------------------------------------------------------------------------


def read_thumb_meta(
    path: str | os.PathLike[str], kind: str, size: tuple[int, int]
) -> ThumbMeta | None:
    """The slidesift record of a PNG or JPEG image, or ``None``.

    Parameters
    ----------
    path
        The image.
    kind
        ``png`` or ``jpeg`` (others have no record: ``None``).
    size
        ``(w, h)`` of the decoded image; a record of another size is ignored.

    Returns
    -------
    ThumbMeta or None
        ``None`` when the file has no record, or has one that cannot be used: then a
        :class:`ThumbMetaWarning` says why (too large, compressed, damaged, not JSON, wrong
        fields, another image size). Never raises for the file's content.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            if kind == "png":
                raw = _png_record(fh)
            elif kind == "jpeg":
                raw = _jpeg_record(fh)
            else:
                return None
        if raw is None:
            return None
        meta = ThumbMeta.from_json(raw)
        if meta.size != size:
            raise _Bad(
                f"it describes a {meta.size[0]} x {meta.size[1]} px image but this one is "
                f"{size[0]} x {size[1]} px (resized or cropped since: its um/px no longer holds)"
            )
    except _Bad as exc:
        warnings.warn(
            f"{p.name}: its slidesift record is ignored: {exc}. The image is read as a plain "
            "image without MPP; write it again with `slidesift thumb`",
            ThumbMetaWarning,
            stacklevel=2,
        )
        return None
    except OSError:
        return None  # the pixel reader reports an unreadable file
    return meta


def _png_record(fh: BinaryIO) -> bytes | None:
    """The text of the first ``slidesift`` iTXt/tEXt chunk before the image data, or ``None``."""
    if fh.read(8) != _PNG_SIGNATURE:
        return None
    for _ in range(_MAX_HEADERS):
        head = fh.read(8)
        if len(head) < 8:
            return None
        length, ctype = struct.unpack(">I4s", head)
        if ctype in (b"IDAT", b"IEND"):
            return None
        start = fh.tell()
        if ctype in (b"iTXt", b"tEXt", b"zTXt"):
            keyword = fh.read(min(length, len(KEYWORD) + 1))
            if keyword == KEYWORD.encode() + b"\x00":
                return _png_text(fh, start, length, ctype)
        fh.seek(start + length + 4)  # data and CRC
    return None


def _png_text(fh: BinaryIO, start: int, length: int, ctype: bytes) -> bytes:
    """The record's bytes from a ``slidesift`` text chunk at ``start`` (CRC checked)."""
    if ctype == b"zTXt":
        raise _Bad("it is compressed (zTXt); slidesift writes it uncompressed")
    if length > MAX_RECORD_BYTES + 64:
        raise _Bad(
            f"its chunk has {length:,} bytes, over the {MAX_RECORD_BYTES:,} a record may have"
        )
    fh.seek(start)
    data = fh.read(length)
    crc = fh.read(4)
    if len(data) < length or len(crc) < 4:
        raise _Bad("its chunk is truncated")
    if zlib.crc32(ctype + data) != struct.unpack(">I", crc)[0]:
        raise _Bad("its chunk is damaged (CRC mismatch)")
    body = data[len(KEYWORD) + 1 :]
    if ctype == b"tEXt":
        return body.decode("latin-1").encode("utf-8")
    # iTXt: compression flag, method, language tag \0, translated keyword \0, text
    if len(body) < 2 or body[0] != 0:
        raise _Bad("it is compressed (iTXt); slidesift writes it uncompressed")
    parts = body[2:].split(b"\x00", 2)
    if len(parts) != 3:
        raise _Bad("its iTXt chunk is malformed")
    return parts[2]


def _jpeg_record(fh: BinaryIO) -> bytes | None:
    """The record of the first ``slidesift:`` COM segment before the scan, or ``None``."""
    if fh.read(2) != b"\xff\xd8":
        return None
    for _ in range(_MAX_HEADERS):
        byte = fh.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            marker = fh.read(1)
            if marker != b"\xff":
                break
        else:
            return None  # not at a marker: a damaged stream
        if not marker or marker in (b"\xda", b"\xd9"):  # start of scan, end of image
            return None
        if b"\xd0" <= marker <= b"\xd7" or marker == b"\x01":  # no length
            continue
        raw_len = fh.read(2)
        if len(raw_len) < 2:
            return None
        length = struct.unpack(">H", raw_len)[0] - 2
        start = fh.tell()
        if marker == b"\xfe":
            prefix = fh.read(min(length, len(_COM_PREFIX)))
            if prefix == _COM_PREFIX:
                if length - len(_COM_PREFIX) > MAX_RECORD_BYTES:
                    raise _Bad(
                        f"its comment has {length:,} bytes, over the {MAX_RECORD_BYTES:,} a "
                        "record may have"
                    )
                record = fh.read(length - len(_COM_PREFIX))
                if len(record) < length - len(_COM_PREFIX):
                    raise _Bad("its comment is truncated")
                return record
        fh.seek(start + max(0, length))
    return None
