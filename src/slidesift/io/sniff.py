"""What kind of file is this? A look at the first bytes, for errors that tell the user.

When a command gets a slide where it wants a checkpoint (arguments swapped) or a checkpoint where
it wants rails JSON, the reader's own failure ("header claims 5480163524102473 bytes", "invalid
start byte") says nothing useful. :func:`file_kind` names what the file is instead, so the error
can say "this is a slide (TIFF), not a checkpoint".
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

__all__ = ["SLIDE_KINDS", "a_kind", "file_kind", "image_format"]

#: Kinds :func:`file_kind` returns for files a slide reader may open.
SLIDE_KINDS = frozenset({"slide (TIFF)", "image (PNG)", "image (JPEG)", "slide (DICOM)"})

#: Larger files that start like JSON are called JSON without parsing them whole.
_PARSE_MAX = 16 * 2**20

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "slide (TIFF)"),
    (b"MM\x00*", "slide (TIFF)"),
    (b"II+\x00", "slide (TIFF)"),  # BigTIFF
    (b"MM\x00+", "slide (TIFF)"),
    (b"\x89PNG\r\n\x1a\n", "image (PNG)"),
    (b"\xff\xd8\xff", "image (JPEG)"),
    (b"PK\x03\x04", "zip archive"),
)


def file_kind(path: str | os.PathLike[str]) -> str:
    """Name the kind of file at ``path`` from its first bytes.

    Returns
    -------
    str
        One of ``missing``, ``folder``, ``empty``, ``unreadable``, ``slide (TIFF)``,
        ``slide (DICOM)``, ``image (PNG)``, ``image (JPEG)``, ``zip archive``,
        ``checkpoint (safetensors)``, ``JSON``, ``XML``, ``text`` or ``binary``.
    """
    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_dir():
        return "folder"
    try:
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return "unreadable"
    if not head:
        return "empty"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[128:132] == b"DICM":
        return "slide (DICOM)"
    if _looks_like_safetensors(head):
        return "checkpoint (safetensors)"
    if b"\x00" in head:  # valid UTF-8 but no text: a checkpoint cut inside its length field
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        if p.stat().st_size > _PARSE_MAX:
            return "JSON"  # named only; parsing a GeoJSON of a gigabyte would take gigabytes
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, OSError, RecursionError):  # RecursionError: [[[[... 100k deep
            return "text"
        return "JSON"
    if stripped.startswith("<"):
        return "XML"
    return "text"


_PHRASES = {
    "folder": "a folder",
    "empty": "an empty file",
    "unreadable": "an unreadable file",
    "image (PNG)": "an image (PNG)",
    "image (JPEG)": "an image (JPEG)",
    "JSON": "a JSON file",
    "XML": "an XML file",
    "text": "a text file",
    "binary": "a binary file",
}


def a_kind(kind: str) -> str:
    """A :func:`file_kind` as it reads in a sentence: ``this is {a_kind(kind)}``.

    Examples
    --------
    >>> a_kind("slide (TIFF)"), a_kind("image (PNG)"), a_kind("text")
    ('a slide (TIFF)', 'an image (PNG)', 'a text file')
    """
    return _PHRASES.get(kind, f"a {kind}")


def _looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n < 100_000_000 and head[8:10] in (b'{"', b"{ ", b"{}")


def image_format(path: Path) -> str:
    """The file's real image type from its first bytes: png, jpeg, tiff, dicom or unknown.

    :func:`slidesift.io.slide.open_slide` picks its reader by this, not by the suffix.
    """
    with path.open("rb") as fh:
        head = fh.read(132)
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    return "unknown"
