"""Model bundles: one file that segments without torch (``slidesift export CKPT --out X``).

A bundle (``model.slidesift``) is a zip archive::

    bundle.json                  format, slidesift version, the source checkpoint's name, digest,
                                 epoch and metrics, its metadata (T, N or um/px, rails, sift
                                 options, classes, stain normaliser), and the sha256 and size of
                                 every graph
    onnx/whole.onnx              per tile: (B, T, T, 3) uint8 -> (B, C) probabilities, fp32
    onnx/maps.onnx               the dense conv trunk, fp32 (see :mod:`slidesift.inference`)
    onnx/head.onnx               BatchNorm 5 and the head on pooled conv-5 features, fp32
    onnx/maps-rgbx.int8.onnx     the int8 trunk (:mod:`slidesift.quantize`), unless left out
    onnx/head.int8.onnx          the int8 head that goes with it

:func:`slidesift.checkpoint.load_checkpoint` reads a bundle wherever it reads a checkpoint and
returns a :class:`~slidesift.checkpoint.Checkpoint` without weights whose graphs are placed in
the ONNX cache (``<cache>/onnx/<source digest>/``) when first used, so ``segment``,
``evaluate`` and ``select`` run from a bundle with only the ``infer`` extra: numpy,
ONNX Runtime, OpenSlide, tifffile. What needs the weights (inference ``torch`` or ``bf16``,
training) says it needs the source checkpoint.

Reading is bounded and checked: the archive within ``SLIDESIFT_MAX_CHECKPOINT_MB``, each member
within it too (read by name, never extracted to a path the archive chooses), ``bundle.json``
within :data:`MANIFEST_MAX_BYTES`, and every graph's sha256 against ``bundle.json``: a damaged
or edited bundle is refused naming the member. ONNX graphs hold no code; nothing is unpickled.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from slidesift.checkpoint import Checkpoint, check_meta
from slidesift.errors import CheckpointError
from slidesift.io.atomic import atomic_write
from slidesift.io.limits import CHECKPOINT_MB_ENV, max_checkpoint_bytes

__all__ = [
    "BUNDLE_FORMAT",
    "FP32_GRAPHS",
    "INT8_GRAPHS",
    "SUFFIX",
    "bundle_summary",
    "load_bundle",
    "write_bundle",
]

#: Format tag of ``bundle.json``.
BUNDLE_FORMAT = "slidesift-bundle/1"
#: The file suffix ``export`` gives bundles.
SUFFIX = ".slidesift"
MANIFEST = "bundle.json"
#: ``bundle.json`` is a few kB; anything beyond this is no bundle slidesift wrote.
MANIFEST_MAX_BYTES = 4 * 2**20
#: fp32 graphs every bundle holds (their names in the ONNX cache).
FP32_GRAPHS = ("whole.onnx", "maps.onnx", "head.onnx")
#: int8 graphs a bundle holds unless exported with ``int8=False``.
INT8_GRAPHS = ("maps-rgbx.int8.onnx", "head.int8.onnx")
_MEMBER = "onnx/{}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(
    checkpoint: Checkpoint,
    out: str | os.PathLike[str],
    *,
    int8: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``checkpoint`` as a bundle to ``out``, atomically.

    Parameters
    ----------
    checkpoint
        The model (a checkpoint; exporting needs torch and onnx the first time, the ``learn``
        and ``infer`` extras). A bundle is written again as it is.
    out
        The bundle's path, conventionally ``*.slidesift``.
    int8
        Include the int8 trunk and head (quantised and calibrated now when not cached; a few
        seconds).
    cache_dir
        The cache folder the graphs are exported to; default
        :func:`slidesift.cache.default_cache_dir`.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    from slidesift._version import __version__
    from slidesift.inference import _digest, export_onnx, onnx_cache_dir

    digest = _digest(checkpoint)
    folder = onnx_cache_dir(checkpoint, cache_dir)
    paths = {f"{part}.onnx": export_onnx(checkpoint, part=part, folder=folder)
             for part in ("whole", "maps", "head")}  # fmt: skip
    if int8:
        from slidesift.quantize import RECIPE, quantized

        maps8, head8 = quantized(checkpoint, cache_dir=cache_dir)
        paths.update({INT8_GRAPHS[0]: maps8, INT8_GRAPHS[1]: head8})
    graphs = {name: path.read_bytes() for name, path in paths.items()}
    source = checkpoint.meta.get("bundle_source") or {
        "name": checkpoint.path.name if checkpoint.path is not None else None,
        "digest": digest,
        "epoch": checkpoint.epoch,
        "metrics": checkpoint.metrics,
    }
    doc: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "slidesift": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "meta": {k: v for k, v in checkpoint.meta.items() if k != "bundle_source"},
        "graphs": {n: {"sha256": _sha256(b), "bytes": len(b)} for n, b in graphs.items()},
    }
    if int8:
        doc["int8_recipe"] = RECIPE

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(MANIFEST, json.dumps(doc, indent=2, sort_keys=True) + "\n")
            for name, data in graphs.items():
                zf.writestr(_MEMBER.format(name), data)

    return atomic_write(out, write)


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


def load_bundle(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a bundle written by :func:`write_bundle` (see the module docstring).

    Returns
    -------
    Checkpoint
        With the source checkpoint's metadata, no weights, the bundle's graphs and
        ``source_digest``.

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
                data = _member(zf, p, _MEMBER.format(name), cap)
                if _sha256(data) != entry.get("sha256"):
                    raise _refuse(p, f"its {_MEMBER.format(name)} differs from bundle.json's "
                                  "sha256: damaged or edited")  # fmt: skip
                graphs[name] = data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise _refuse(p, f"not a readable zip archive ({exc})") from exc
    except OSError as exc:
        raise CheckpointError(p, exc.strerror or str(exc)) from exc
    meta = dict(doc["meta"])
    meta["bundle_source"] = doc["source"]
    ck = Checkpoint(p, meta, {}, graphs=graphs, source_digest=str(doc["source"]["digest"]))
    check_meta(ck, p)
    return ck


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


def bundle_summary(checkpoint: Checkpoint) -> dict[str, Any]:
    """What ``info`` and ``export`` print about a bundle: source, sizes, int8 or not."""
    source = dict(checkpoint.meta.get("bundle_source") or {})
    return {
        "source": source.get("name"),
        "digest": checkpoint.source_digest,
        "epoch": source.get("epoch"),
        "metrics": source.get("metrics", {}),
        "graphs": {n: len(b) for n, b in checkpoint.graphs.items()},
        "int8": all(g in checkpoint.graphs for g in INT8_GRAPHS),
    }
