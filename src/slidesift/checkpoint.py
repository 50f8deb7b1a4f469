"""Checkpoints: weights in safetensors, with everything needed to segment a new slide.

One file per epoch, ``epoch_NNN.safetensors``. The safetensors header carries the metadata as
one JSON document under the key ``slidesift``: tile side T, downsample target N (or MPP), the
training overlaps, the rails, the sift options (entropy mode, background test and limits),
the classes, the stain normalisation (method and fitted target), the epoch, its metrics and the
slidesift version. Reading never unpickles: safetensors holds raw tensors and a JSON header.

Files are written atomically (temporary file, fsync, rename), so an interrupted write leaves
the previous epoch's checkpoint as it was and no half file under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidesift.errors import CheckpointError, SlidesiftError, require
from slidesift.io.atomic import atomic_write_bytes
from slidesift.io.bundle_read import read_bundle
from slidesift.io.downsample import Downsample
from slidesift.io.limits import CHECKPOINT_MB_ENV, SAFETENSORS_HEADER_MAX, max_checkpoint_bytes
from slidesift.io.sniff import SLIDE_KINDS, a_kind, file_kind
from slidesift.rails import Rails
from slidesift.sift import SiftSpec
from slidesift.stain import StainNormalizer, normalizer_from_dict

__all__ = [
    "CNN",
    "FORMAT",
    "NOT_CHECKPOINT_KINDS",
    "UNET",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "read_safetensors",
    "save_checkpoint",
    "write_safetensors",
]

#: ``architecture`` of the paper's lightweight CNN (:mod:`slidesift.model`), the default.
CNN = "lightweight-cnn"
#: ``architecture`` of the U-Net/EfficientNet-B0 baseline (:mod:`slidesift.unet_model`).
UNET = "unet-effb0"
ARCHITECTURES = (CNN, UNET)
#: Format tag written in every checkpoint's metadata.
FORMAT = "slidesift-checkpoint/1"
_META_KEY = "slidesift"
#: Metadata every checkpoint must carry.
REQUIRED = ("format", "tile", "classes", "rails", "sift", "epoch")
#: File kinds (:func:`~slidesift.io.sniff.file_kind`) that are no checkpoint, damaged or not
#: (a zip archive may be a model bundle, :mod:`slidesift.bundle`).
NOT_CHECKPOINT_KINDS = SLIDE_KINDS | {"folder", "JSON", "XML", "text"}


def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, str]
) -> Path:
    """Serialise torch tensors and string metadata to ``path`` atomically."""
    require("safetensors", "learn", "writing checkpoints")
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata)
    return atomic_write_bytes(path, data)


def read_safetensors(
    path: str | os.PathLike[str], *, framework: str = "numpy"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of a safetensors file; any damage becomes :class:`CheckpointError`.

    ``framework="numpy"`` (default) returns numpy arrays and needs no torch, so segmenting with
    ONNX Runtime does not pay torch's import; ``"torch"`` returns torch tensors (resuming a
    training run).

    What the file claims is checked against its size (``stat``) before anything is read beyond
    the 8-byte header length: the file within ``SLIDESIFT_MAX_CHECKPOINT_MB``, the header within
    the file and :data:`~slidesift.io.limits.SAFETENSORS_HEADER_MAX`, the tensors' offsets
    within the bytes after the header.
    """
    p = Path(path)
    kind = file_kind(p)
    # a slide's bytes would read as "header claims 5e15 bytes"; a zip may be a bundle
    if kind in NOT_CHECKPOINT_KINDS or kind == "zip archive":
        raise CheckpointError(
            p,
            f"this is {a_kind(kind)}, not a slidesift checkpoint",
            "give an epoch_NNN.safetensors file that `slidesift train --out RUN` writes in RUN",
        )
    size = _checked_size(p)
    try:
        with p.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len > size - 8:
                raise CheckpointError(
                    p, f"the header claims {header_len} bytes but the file has {size}: truncated"
                )
            if header_len > SAFETENSORS_HEADER_MAX:
                raise CheckpointError(
                    p,
                    f"the header claims {header_len:,} bytes, over the "
                    f"{SAFETENSORS_HEADER_MAX:,} a safetensors header may have",
                    "this is no checkpoint slidesift wrote; give an epoch_NNN.safetensors file",
                )
            head = fh.read(header_len)
            header = _parse_header(p, head)
            have = size - 8 - header_len
            try:
                ends = [
                    int(v["data_offsets"][1])
                    for k, v in header.items()
                    if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
                ]
            except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:  # [a], inf
                raise CheckpointError(
                    p, f"not a readable safetensors file (data_offsets: {exc})"
                ) from exc
            if ends and max(ends) > have:
                raise CheckpointError(
                    p,
                    f"its tensors need {max(ends)} bytes but only {have} follow the header: "
                    "truncated",
                )
            fh.seek(0)
            raw = fh.read()  # the whole file, now that its claims fit its size
    except OSError as exc:
        raise CheckpointError(p, exc.strerror or str(exc)) from exc
    if framework == "torch":
        require("torch", "learn", "reading training state")
    require("safetensors", "learn", "reading checkpoints")
    from safetensors import SafetensorError

    if framework == "torch":
        from safetensors.torch import load as load_torch

        loader: Any = load_torch
    else:
        from safetensors.numpy import load as load_numpy

        loader = load_numpy
    try:
        tensors = loader(raw)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(p, f"not a readable safetensors file ({exc})") from exc
    meta = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _checked_size(p: Path) -> int:
    """The file's size in bytes, once it is known to be no shorter than 8 and within the limit."""
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise CheckpointError(p, exc.strerror or str(exc)) from exc
    if size < 8:
        raise CheckpointError(p, f"the file has {size} bytes; it is empty or truncated")
    cap = max_checkpoint_bytes()
    if size > cap:
        raise CheckpointError(
            p,
            f"the file has {size / 2**20:,.1f} MB, over the {cap // 2**20:,} MB a checkpoint "
            "may have (it is read whole)",
            "slidesift's checkpoints are a few MB: is this the right file? If it is genuine "
            f"and memory allows, raise {CHECKPOINT_MB_ENV}",
        )
    return size


def _parse_header(p: Path, head: bytes) -> dict[str, Any]:
    """The safetensors JSON header as a mapping."""
    try:
        header = json.loads(head)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(p, f"not a readable safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(p, "not a readable safetensors file (its header is not a mapping)")
    return header


@dataclass(frozen=True)
class Checkpoint:
    """A trained model and the method's parameters it was trained with.

    Attributes
    ----------
    path
        Where it was read from (``None`` when built in memory).
    meta
        The metadata document (see the module docstring).
    state
        The network's ``state_dict``: numpy arrays when read from a file (no torch needed),
        torch tensors when built from a training run; empty for a model bundle.
    graphs
        A model bundle's ONNX graphs (:mod:`slidesift.bundle`), by their file name in the ONNX
        cache (``whole.onnx``, ``maps.onnx``, ``head.onnx``, ``maps-rgbx.int8.onnx``,
        ``head.int8.onnx``); placed in the cache when first used. Empty for a checkpoint.
    source_digest
        A bundle's source checkpoint digest (what its graphs and the caches are keyed by);
        ``None`` for a checkpoint, whose digest is its file's.
    """

    path: Path | None
    meta: dict[str, Any]
    state: dict[str, Any] = field(repr=False)
    graphs: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    source_digest: str | None = None

    @property
    def is_bundle(self) -> bool:
        """Whether this is a model bundle (ONNX graphs, no torch weights)."""
        return self.source_digest is not None

    @property
    def architecture(self) -> str:
        """:data:`CNN` (the paper's lightweight CNN) or :data:`UNET` (the U-Net baseline)."""
        return str(self.meta.get("architecture", CNN))

    @property
    def tile(self) -> int:
        """Tile side T in px."""
        return int(self.meta["tile"])

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index 0 non-tumor."""
        return tuple(self.meta["classes"])

    @property
    def downsample(self) -> Downsample:
        """The downsample target the model was trained at (``longest`` or ``mpp``)."""
        return Downsample.from_dict(self.meta)

    @property
    def rails(self) -> Rails:
        """The entropy rails that sift tiles for this model."""
        return Rails.from_dict(self.meta["rails"])

    @property
    def sift(self) -> SiftSpec:
        """Background and entropy options tiles are measured with."""
        return SiftSpec(**self.meta["sift"])

    @property
    def normalizer(self) -> StainNormalizer | None:
        """The stain normaliser applied to thumbnails before tiling, or ``None``."""
        return normalizer_from_dict(self.meta.get("normalization"))

    @property
    def epoch(self) -> int:
        """The epoch after which the weights were saved (1-based)."""
        return int(self.meta["epoch"])

    @property
    def metrics(self) -> dict[str, float]:
        """The epoch's training (and held-out) metrics."""
        return dict(self.meta.get("metrics", {}))

    def model(self) -> Any:
        """A :class:`LightweightCNN` with these weights, in eval mode (on the CPU).

        Raises
        ------
        CheckpointError
            This is a model bundle: it carries ONNX graphs, not the weights; or a U-Net
            baseline checkpoint (:func:`slidesift.unet_infer.unet_from_checkpoint` builds it).
        """
        if self.architecture != CNN:
            raise CheckpointError(
                self.path or "<memory>",
                f"this is a {self.architecture} checkpoint (the U-Net baseline), not the "
                "lightweight CNN",
                "segment, evaluate, select and report run it through torch (--inference auto "
                "or torch); ONNX inference, bundles (export) and the web page take the "
                "lightweight CNN only",
            )
        if self.is_bundle:
            raise CheckpointError(
                self.path or "<memory>",
                "a model bundle carries ONNX graphs, not the network's weights",
                "inference 'torch', 'torch-dense' or 'bf16', quantising anew and training need "
                f"the checkpoint it was exported from (digest {self.source_digest}); the ONNX "
                "modes (auto, dense, int8, tiles) run from the bundle",
            )
        import torch

        from slidesift.model import LightweightCNN

        net = LightweightCNN(self.tile, len(self.classes))
        state = {k: torch.as_tensor(v) for k, v in self.state.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            where = self.path if self.path is not None else "<memory>"
            raise CheckpointError(where, f"weights do not fit the architecture: {exc}") from exc
        return net.eval()


def save_checkpoint(
    path: str | os.PathLike[str], state: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write weights and metadata to ``path`` (one safetensors file), atomically.

    Parameters
    ----------
    path
        Destination, conventionally ``epoch_NNN.safetensors``.
    state
        The network's ``state_dict``.
    meta
        Metadata; must hold :data:`REQUIRED` keys. ``format`` is filled in.
    """
    doc = {"format": FORMAT, **meta}
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    return write_safetensors(path, state, {_META_KEY: json.dumps(doc, sort_keys=True)})


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, or a model bundle written by
    :func:`slidesift.bundle.write_bundle`; never unpickles.

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupt, or lacking slidesift metadata.
    """
    p = Path(path)
    if file_kind(p) == "zip archive":  # a model bundle (slidesift.bundle)
        contents = read_bundle(p)
        meta = {**contents.doc["meta"], "bundle_source": contents.doc["source"]}
        digest = str(contents.doc["source"]["digest"])
        bundle = Checkpoint(p, meta, {}, graphs=contents.graphs, source_digest=digest)
        check_meta(bundle, p)
        return bundle
    tensors, meta = read_safetensors(p)
    if _META_KEY not in meta:
        raise CheckpointError(
            p, "it has no slidesift metadata (a safetensors file from elsewhere?)"
        )
    try:
        doc = json.loads(meta[_META_KEY])
    except (ValueError, RecursionError) as exc:  # also 5000-digit ints, deep nesting
        raise CheckpointError(p, f"its metadata is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(
            p, f"unknown format {doc.get('format') if isinstance(doc, dict) else doc!r}"
        )
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise CheckpointError(p, f"its metadata lacks {missing}")
    ckpt = Checkpoint(p, doc, tensors)
    check_meta(ckpt, p)
    return ckpt


def check_meta(ckpt: Checkpoint, p: Path) -> None:
    """Read every metadata field once, so a damaged one fails here, naming the file.

    Without it a checkpoint with ``"tile": "1e3"`` or ``"classes": 3.0`` loaded and failed
    later with a bare ``ValueError`` or ``TypeError``; and a tile that does not match the
    weights would build a network of that size before the weights were refused.
    """
    try:
        tile, classes = ckpt.tile, ckpt.classes
        if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes {list(classes)!r} are not 2 or more names")
        _ = (ckpt.downsample, ckpt.rails, ckpt.sift, ckpt.normalizer, ckpt.epoch, ckpt.metrics)
        if ckpt.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {ckpt.architecture!r} is none of {ARCHITECTURES}")
    except (SlidesiftError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(p, f"its metadata is damaged ({exc})") from exc
    first = ckpt.state.get("head.2.weight")  # the first dense layer is T wide (model.py)
    if first is not None and (len(first.shape) != 2 or first.shape[0] != tile):
        raise CheckpointError(
            p, f"its metadata says T={tile} but the weights are for T={first.shape[0]}"
        )
