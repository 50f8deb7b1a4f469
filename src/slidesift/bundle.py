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
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from slidesift.checkpoint import Checkpoint, load_checkpoint
from slidesift.errors import CheckpointError
from slidesift.io.atomic import atomic_write
from slidesift.io.bundle_read import (
    BUNDLE_FORMAT,
    FP32_GRAPHS,
    INT8_GRAPHS,
    MANIFEST,
    MEMBER,
    sha256,
)

#: The file suffix ``export`` gives bundles.
SUFFIX = ".slidesift"

__all__ = [
    "BUNDLE_FORMAT",
    "FP32_GRAPHS",
    "INT8_GRAPHS",
    "SUFFIX",
    "bundle_summary",
    "load_bundle",
    "write_bundle",
]


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
    from slidesift.inference import export_onnx
    from slidesift.onnx_cache import checkpoint_digest, onnx_cache_dir

    digest = checkpoint_digest(checkpoint)
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
        "graphs": {n: {"sha256": sha256(b), "bytes": len(b)} for n, b in graphs.items()},
    }
    if int8:
        doc["int8_recipe"] = RECIPE

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(MANIFEST, json.dumps(doc, indent=2, sort_keys=True) + "\n")
            for name, data in graphs.items():
                zf.writestr(MEMBER.format(name), data)

    return atomic_write(out, write)


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
        Not a bundle, or damaged (see :func:`slidesift.io.bundle_read.read_bundle`).
    """
    ck = load_checkpoint(path)
    if not ck.is_bundle:
        raise CheckpointError(Path(path), "this is a checkpoint, not a model bundle")
    return ck


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
