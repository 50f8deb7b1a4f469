"""Read a model bundle (``*.slidesift``, a zip archive) safely: sizes bounded, graphs hashed.

The format is :mod:`slidesift.bundle`'s (which writes it); this module only reads the bytes:
the archive within ``SLIDESIFT_MAX_CHECKPOINT_MB``, each member's stated size within it too
(read by name, never extracted to a path the archive chooses), ``bundle.json`` within
:data:`MANIFEST_MAX_BYTES`, every graph's sha256 against ``bundle.json``. ONNX graphs hold no
code; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidesift.errors import CheckpointError
from slidesift.io.limits import CHECKPOINT_MB_ENV, max_checkpoint_bytes

__all__ = [
    "BUNDLE_FORMAT",
    "FP32_GRAPHS",
    "INT8_GRAPHS",
    "MANIFEST",
    "MANIFEST_MAX_BYTES",
    "MEMBER",
    "BundleContents",
    "read_bundle",
    "sha256",
]

#: Format tag of ``bundle.json``.
BUNDLE_FORMAT = "slidesift-bundle/1"
MANIFEST = "bundle.json"
#: ``bundle.json`` is a few kB; anything beyond this is no bundle slidesift wrote.
MANIFEST_MAX_BYTES = 4 * 2**20
#: fp32 graphs every bundle holds (their names in the ONNX cache).
FP32_GRAPHS = ("whole.onnx", "maps.onnx", "head.onnx")
#: int8 graphs a bundle holds unless exported without them.
INT8_GRAPHS = ("maps-rgbx.int8.onnx", "head.int8.onnx")
#: Where a graph lies in the archive.
MEMBER = "onnx/{}"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BundleContents:
    """A bundle's ``bundle.json`` (checked) and its graphs by name (hashes verified)."""

    doc: dict[str, Any]
    graphs: dict[str, bytes] = field(repr=False)


def _refuse(p: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        p,
        reason,
        "export it again with `slidesift export CHECKPOINT --out model.slidesift`",
    )


def _member(zf: zipfile.ZipFile, p: Path, name: str, cap: int) -> bytes:
    """A member's bytes, refused before reading when its stated size is over ``cap``."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise _refuse(p, f"it lacks {name}: not a whole slidesift model bundle") from None
    if info.file_size > cap:
        raise _refuse(p, f"its {name} claims {info.file_size:,} bytes, over the {cap:,} allowed")
    with zf.open(info) as fh:  # zipfile stops at the stated size (and checks the CRC)
        return fh.read()


def read_bundle(path: str | os.PathLike[str]) -> BundleContents:
    """Read a bundle that :func:`slidesift.bundle.write_bundle` wrote.

    Returns
    -------
    BundleContents
        ``bundle.json`` with ``graphs``, ``source`` (with ``digest``) and ``meta`` present,
        and every graph it lists, its sha256 checked.

    Raises
    ------
    CheckpointError
        Missing, too large, not a zip archive, no ``bundle.json``, an unknown format, a
        graph missing or differing from its sha256, damaged metadata.
    """
    p = Path(path)
    cap = max_checkpoint_bytes()
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise CheckpointError(p, exc.strerror or str(exc)) from exc
    if size > cap:
        raise CheckpointError(
            p,
            f"the file has {size / 2**20:,.1f} MB, over the {cap // 2**20:,} MB a model may have",
            f"slidesift's bundles are a few MB: is this the right file? If it is, raise "
            f"{CHECKPOINT_MB_ENV}",
        )
    try:
        with zipfile.ZipFile(p) as zf:
            if MANIFEST not in zf.namelist():
                raise CheckpointError(
                    p,
                    "this zip archive has no bundle.json: it is no slidesift model bundle",
                    "give a checkpoint (epoch_NNN.safetensors) or a bundle that "
                    "`slidesift export CHECKPOINT --out model.slidesift` wrote",
                )
            doc = _manifest(p, _member(zf, p, MANIFEST, MANIFEST_MAX_BYTES))
            graphs = {}
            for name, entry in doc["graphs"].items():
                data = _member(zf, p, MEMBER.format(name), cap)
                if sha256(data) != entry.get("sha256"):
                    raise _refuse(p, f"its {MEMBER.format(name)} differs from bundle.json's "
                                  "sha256: damaged or edited")  # fmt: skip
                graphs[name] = data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise _refuse(p, f"not a readable zip archive ({exc})") from exc
    except OSError as exc:
        raise CheckpointError(p, exc.strerror or str(exc)) from exc
    return BundleContents(doc, graphs)


def _manifest(p: Path, raw: bytes) -> dict[str, Any]:
    """``bundle.json`` parsed and its shape checked."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _refuse(p, f"its bundle.json is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(
            p,
            f"unknown bundle format {found!r} (this slidesift reads {BUNDLE_FORMAT!r})",
            "export it again with this slidesift, or update slidesift",
        )
    graphs, source, meta = doc.get("graphs"), doc.get("source"), doc.get("meta")
    if (
        not isinstance(graphs, dict)
        or not all(isinstance(v, dict) for v in graphs.values())
        or not isinstance(source, dict)
        or not isinstance(source.get("digest"), str)
        or not isinstance(meta, dict)
    ):
        raise _refuse(p, "its bundle.json lacks graphs, source or meta")
    missing = [g for g in FP32_GRAPHS if g not in graphs]
    unknown = [g for g in graphs if g not in FP32_GRAPHS + INT8_GRAPHS]
    if missing or unknown:
        raise _refuse(p, f"its graphs are not slidesift's (missing {missing}, unknown {unknown})")
    return doc
