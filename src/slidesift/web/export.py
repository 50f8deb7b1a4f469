"""Write a checkpoint as a static web page that segments a thumbnail in the browser.

Layout of ``OUT/``::

    index.html, style.css, app.mjs,     the page (no build step, no framework)
    sift.mjs, mask.mjs, imagemeta.mjs,
    dense.mjs
    model.json                          T, stride, sift spec, rails, classes, assembly, scale
    model.onnx                          the fp32 per-tile network (uint8 NHWC in, probs out), or
    maps.onnx, head.onnx                when the stride is a multiple of 16 (T = 400: stride 80)
                                        the dense path's trunk and head, as segment uses them
    xlog2x.bin                          c * log2(c) for c = 0 .. N, float64 little-endian
    ort/                                onnxruntime-web's WebAssembly build (pinned, hashed)

The page repeats slidesift's sift exactly (see ``sift.mjs``): the entropy table is Python's
own, so the browser's ``Math.log2`` plays no part. The folder is built beside ``OUT`` and
renamed into place: an interrupted export leaves no half page, and an earlier export at ``OUT``
stays whole until the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from slidesift._version import __version__
from slidesift.assemble import default_mode
from slidesift.checkpoint import Checkpoint
from slidesift.errors import ConfigError, OutputError
from slidesift.io.atomic import disk_error
from slidesift.segment import SegmentSpec
from slidesift.sift import _xlog2x, to_gray
from slidesift.web.runtime import ORT_WEB_VERSION, PINNED, find_runtime

__all__ = ["ASSETS", "FORMAT", "GRAY", "export_web", "is_web_export"]

#: Format tag in ``model.json``; an ``OUT`` holding it may be replaced by a new export.
FORMAT = "slidesift-web/1"
#: The page's own files, shipped as package data in ``slidesift/web/assets``.
ASSETS = (
    "index.html",
    "style.css",
    "app.mjs",
    "sift.mjs",
    "mask.mjs",
    "imagemeta.mjs",
    "dense.mjs",
)
#: OpenCV's fixed-point RGB -> grey for 8-bit pixels: ``(R r + G g + B b + 2^(s-1)) >> s``.
GRAY = {"r": 9798, "g": 19235, "b": 3735, "shift": 15}
#: Tiles per network call in the page.
BATCH = 16
#: Largest side of the image region the page runs through the feature layers at once (dense
#: path): about 128 x BLOCK_PX^2 bytes of WebAssembly memory for the first layer's activations.
BLOCK_PX = 1024


def is_web_export(folder: Path) -> bool:
    """Whether ``folder`` holds a page :func:`export_web` wrote (its ``model.json`` says so)."""
    try:
        data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _check_target(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(out, "it exists and is not a folder", "give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not is_web_export(out):
        raise OutputError(
            out,
            "the folder holds other files and is no earlier slidesift web export",
            "give a new or empty folder: an export replaces only an earlier export",
        )


def _check_gray() -> None:
    """The page's grey constants must be cv2's (:func:`slidesift.sift.to_gray`) here."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = rgb.astype(np.int64)
    mine = (
        x[..., 0] * GRAY["r"] + x[..., 1] * GRAY["g"] + x[..., 2] * GRAY["b"]
        + (1 << (GRAY["shift"] - 1))
    ) >> GRAY["shift"]  # fmt: skip
    if not np.array_equal(mine, to_gray(rgb)):
        raise ConfigError(
            "opencv",
            "grey conversion",
            "OpenCV's RGB2GRAY that the page reproduces (R*9798 + G*19235 + B*3735 + 2^14) "
            ">> 15; this OpenCV rounds otherwise: report it as a bug",
        )


def _refuse_unsupported(checkpoint: Checkpoint) -> None:
    if checkpoint.normalizer is not None:
        raise ConfigError(
            "normalization",
            checkpoint.normalizer.method,
            "none: the web page does not stain-normalise thumbnails yet; export a model "
            "trained without --normalize",
        )


def _model_json(checkpoint: Checkpoint, digest: str, stride: int, dense: bool) -> dict[str, Any]:
    sift = checkpoint.sift
    total = 3 * checkpoint.tile**2 if sift.entropy == "rgb" else checkpoint.tile**2
    classes = list(checkpoint.classes)
    rails = checkpoint.rails
    name = checkpoint.path.name if checkpoint.path is not None else "(in memory)"
    if checkpoint.path is not None and checkpoint.path.parent.name:
        name = f"{checkpoint.path.parent.name}/{name}"
    if checkpoint.is_bundle:  # the page names the checkpoint the bundle came from
        source = (checkpoint.meta.get("bundle_source") or {}).get("name")
        name = f"{checkpoint.path.name if checkpoint.path else 'bundle'} (from {source})"
    return {
        "format": FORMAT,
        "slidesift_version": __version__,
        "model": {
            "name": name,
            "digest": digest,
            "epoch": checkpoint.epoch,
            "classes": classes,
            "metrics": checkpoint.metrics,
        },
        "tile": checkpoint.tile,
        "stride": stride,
        "downsample": checkpoint.downsample.to_dict(),
        "sift": sift.to_dict(),
        "rails": {"lo": rails.lo, "hi": rails.hi, "entropy": rails.entropy, "tile": rails.tile},
        "gray": GRAY,
        "entropy_table": {
            "file": "xlog2x.bin",
            "total": total,
            "log2_total": float(np.log2(total)),
        },
        "assembly": {"mode": default_mode(len(classes)), "threshold": 0.5},
        "onnx": (
            None if dense else {"file": "model.onnx", "input": "x", "output": "y", "batch": BATCH}
        ),
        "dense": (
            {"maps": "maps.onnx", "head": "head.onnx", "block_px": BLOCK_PX} if dense else None
        ),
        "runtime": {"package": "onnxruntime-web", "version": ORT_WEB_VERSION},
    }


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def export_web(
    checkpoint: Checkpoint,
    out: str | os.PathLike[str],
    *,
    runtime: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the static page that segments a thumbnail with ``checkpoint`` in the browser.

    Parameters
    ----------
    checkpoint
        A binary or multi-class model without stain normalisation.
    out
        The folder to write: new, empty, or an earlier export (replaced whole).
    runtime
        onnxruntime-web 1.31.1: the ``.tgz`` from ``npm pack``, the package folder or its
        ``dist/``; default ``$SLIDESIFT_ORT_WEB``, then the cache (``make web-runtime``).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    WebRuntimeError
        The runtime is missing, of another version or damaged (checked first).
    OutputError
        ``out`` holds other files, or cannot be written.
    ConfigError
        The model normalises stains (not in the page yet).
    """
    dest = Path(out)
    _check_target(dest)
    _refuse_unsupported(checkpoint)
    _check_gray()
    runtime_files = find_runtime(runtime).read()  # before the (slow) ONNX export

    from slidesift.inference import dense_applies, export_onnx
    from slidesift.onnx_cache import checkpoint_digest

    stride = SegmentSpec().stride_for(checkpoint.tile)
    # Shared feature maps where slidesift segment uses them: a stride that is a multiple of 16.
    dense = dense_applies(stride)
    if dense:  # the per-tile graph is not needed (11 MB at T = 400)
        graphs = {
            "maps.onnx": export_onnx(checkpoint, part="maps"),
            "head.onnx": export_onnx(checkpoint, part="head"),
        }
    else:
        graphs = {"model.onnx": export_onnx(checkpoint, part="whole")}
    doc = _model_json(checkpoint, checkpoint_digest(checkpoint), stride, dense)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise (disk_error(dest, exc) or OutputError(dest, str(exc))) from exc
    try:
        assets = resources.files("slidesift.web") / "assets"
        for name in ASSETS:
            (tmp / name).write_bytes((assets / name).read_bytes())
        for name, path in graphs.items():
            shutil.copyfile(path, tmp / name)
        _xlog2x(doc["entropy_table"]["total"]).astype("<f8").tofile(tmp / "xlog2x.bin")
        (tmp / "ort").mkdir()
        for name, data in runtime_files.items():
            (tmp / "ort" / name).write_bytes(data)
        (tmp / "ort" / "NOTICE.txt").write_text(
            f"onnxruntime-web {ORT_WEB_VERSION} (MIT License, Copyright (c) Microsoft "
            "Corporation), copied unchanged from the npm package's dist/ folder; SHA-256:\n"
            + "".join(f"{PINNED[n]}  {n}\n" for n in runtime_files),
            encoding="utf-8",
        )
        doc["files"] = {
            p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }  # fmt: skip
        (tmp / "model.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700: a web server must read it
        _swap(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        translated = disk_error(dest, exc)
        if translated is not None:
            raise translated from exc
        raise
    return dest


def _swap(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an earlier export (or empty folder) there goes last."""
    old: Path | None = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
