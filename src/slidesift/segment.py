"""Segment a slide with a checkpoint (METHOD.md section 5).

    slide --read_thumb(checkpoint N)--> [stain-normalise] --TileGrid(T, overlap)--> measure
    --sift(background, checkpoint rails)--> kept tiles --classify (dense or per tile)-->
    probabilities --assemble (union | dominant | mean)--> mask --smooth, shrink--> mask

:func:`segment_pixels` is the pure core on a thumbnail's pixels; :func:`segment` reads the
slide. Classification picks the dense shared-feature path whenever the stride is a multiple of
16 (exact), else classifies tile by tile, and says which it used. On the CPU, ``auto`` runs the
dense backend (fp32, int8 or bf16) that :func:`slidesift.backends.probe` found fastest among
those that agree with fp32 on this machine.
"""

from __future__ import annotations

import glob
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.backends import build_backend, probe, probing_enabled
from slidesift.checkpoint import UNET, Checkpoint
from slidesift.errors import ConfigError, NoTilesWarning, OutOfDomainWarning
from slidesift.inference import OnnxTiles, classify_tiles, dense_applies
from slidesift.io.slide import Thumb, open_slide, read_thumb
from slidesift.segment_types import (
    DENSE_MODES,
    InferenceMode,
    SegmentResult,
    SegmentSpec,
    assemble_and_clean,
)
from slidesift.sift import SiftResult, measure_tiles, sift, warm_up
from slidesift.stain import normalized_pixels
from slidesift.tiles import TileGrid
from slidesift.torch_inference import TorchTiles, torch_dense

__all__ = [
    "DENSE_MODES",
    "Classifiers",
    "InferenceMode",
    "NoTilesWarning",
    "OutOfDomainWarning",
    "SegmentResult",
    "SegmentSpec",
    "segment",
    "segment_pixels",
]


#: Below this share of tissue tiles (tiles passing the background sift) admitted by the
#: rails, a slide is out of the rails' domain: its entropy range is not the training slides'.
RAILS_ADMIT_FLOOR = 0.2
#: A slide whose um per thumbnail px (or, without MPP, level-0 size) differs from the
#: training slides' median by this factor or more is out of the model's domain.
SCALE_FACTOR_LIMIT = 2.0


@dataclass
class Classifiers:
    """Classifiers built once per checkpoint and reused over slides.

    ``threads`` caps the ONNX Runtime sessions' and the tile measurement's threads (default:
    every core), so that several segmenting processes share a machine without oversubscribing.
    ``probe``: whether ``auto`` asks :func:`slidesift.backends.probe` for the dense backend
    (default: unless ``SLIDESIFT_PROBE=0``); ``cache_dir`` is where the probe's answer and the
    int8 graphs are kept (default :func:`slidesift.cache.default_cache_dir`).
    """

    checkpoint: Checkpoint
    threads: int | None = None
    probe: bool | None = None
    cache_dir: Path | None = None
    _made: dict[str, Any] = field(default_factory=dict)

    def get(self, kind: str) -> Any:
        """``dense``, ``int8``, ``bf16``, ``torch-dense``, ``tiles``, ``torch`` (the last two
        in torch: CUDA when present) or ``unet``
        (a U-Net baseline checkpoint, :class:`slidesift.unet_infer.UnetTiles`)."""
        if kind not in self._made:
            if kind == "unet":
                from slidesift.unet_infer import UnetTiles

                device = "cuda" if _cuda_available() else "cpu"
                self._made[kind] = UnetTiles(self.checkpoint, device=device, threads=self.threads)
            elif kind == "torch-dense":
                device = "cuda" if _cuda_available() else "cpu"
                self._made[kind] = torch_dense(self.checkpoint, device=device, threads=self.threads)
            elif kind in DENSE_MODES:
                self._made[kind] = build_backend(
                    kind, self.checkpoint, threads=self.threads, cache_dir=self.cache_dir
                )
            elif kind == "tiles":
                self._made[kind] = OnnxTiles(self.checkpoint, threads=self.threads)
            else:
                device = "cuda" if _cuda_available() else "cpu"
                self._made[kind] = TorchTiles(self.checkpoint, device=device)
        return self._made[kind]

    def dense_choice(self) -> str:
        """The dense backend ``auto`` uses on the CPU: the probe's choice, or ``dense``."""
        if "auto" not in self._made:
            enabled = probing_enabled() if self.probe is None else self.probe
            self._made["auto"] = (
                probe(self.checkpoint, threads=self.threads, cache_dir=self.cache_dir).choice
                if enabled
                else "dense"
            )
        return str(self._made["auto"])


def _warn_if_rails_reject_tissue(sifted: SiftResult, rails_used: bool) -> None:
    """Warn when the rails admit under :data:`RAILS_ADMIT_FLOOR` of the tissue tiles."""
    n_tissue = int(sifted.keep_background.sum())
    if not rails_used or n_tissue == 0:
        return
    admitted = int(sifted.keep.sum()) / n_tissue
    if admitted < RAILS_ADMIT_FLOOR:
        rails = sifted.rails
        where = f" [{rails.lo:.2f}, {rails.hi:.2f}] bits" if rails is not None else ""
        warnings.warn(
            f"the model's rails{where} admit only {admitted:.0%} of this slide's "
            f"{n_tissue} tissue tiles: its tile entropy lies outside what the model was "
            "trained on (another scanner, stain or resolution?). Check the slide's um/px "
            "against the training slides', stain-normalise, or retrain on such slides; the "
            "slide's *_locations.png shows the tiles that were kept",
            OutOfDomainWarning,
            stacklevel=3,
        )


def scale_warnings(thumb: Thumb, checkpoint: Checkpoint) -> list[str]:
    """What is out of the model's domain in the slide's scale, as advice (empty: nothing).

    Compares the thumbnail's um/px with the training slides' median (checkpoint metadata
    ``training_scale``; checkpoints from before it was recorded give no advice), and, when
    either side lacks an MPP, the level-0 sizes, against :data:`SCALE_FACTOR_LIMIT`.
    """
    trained = checkpoint.meta.get("training_scale") or {}
    if not trained:
        return []
    out = []
    model_um = trained.get("um_per_px")
    um = None if thumb.mpp is None else (thumb.mpp[0] + thumb.mpp[1]) / 2
    if um is None:
        at = f" (the model was trained at {model_um:.3g} um/px)" if model_um else ""
        out.append(
            f"the slide has no MPP (microns per pixel) in its metadata, so its physical scale "
            f"cannot be checked against the model's{at}. If it was scanned at another "
            "magnification than the training slides, its tiles will not look like the training "
            "tiles; convert it with its MPP, or check the segmentation by eye"
        )
    elif model_um:
        ratio = um / model_um
        if max(ratio, 1 / ratio) >= SCALE_FACTOR_LIMIT:
            looks = "smaller" if ratio > 1 else "larger"
            out.append(
                f"this slide is read at {um:.3g} um/px, the model was trained at "
                f"{model_um:.3g} um/px ({max(ratio, 1 / ratio):.1f}x): its cells look {looks} "
                "than the cells the model learned. Train with --mpp, so that every slide is "
                "read at one physical scale, or retrain on slides like this one"
            )
    model_l0 = trained.get("l0_longest")
    if (um is None or not model_um) and model_l0:
        ratio = max(thumb.l0_size) / model_l0
        if max(ratio, 1 / ratio) >= SCALE_FACTOR_LIMIT:
            out.append(
                f"this slide's level 0 is {max(thumb.l0_size)} px on its longer side, "
                f"{max(ratio, 1 / ratio):.1f}x the training slides' median ({model_l0} px): "
                "at the model's N its tissue is scaled differently from the training tissue. "
                "Train with --mpp, or retrain on slides of this size"
            )
    return out


def _cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (no torch: the ONNX paths).

    Without an NVIDIA device node (``/dev/nvidia*``, or WSL's ``/dev/dxg``) there is no CUDA
    device to find, so torch (seconds to import) is not imported just to be told so.
    """
    if "torch" not in sys.modules and not (
        glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")
    ):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _pick(spec: SegmentSpec, stride: int, classifiers: Classifiers) -> str:
    if spec.inference == "auto":
        if not classifiers.checkpoint.is_bundle and _cuda_available():  # a bundle: ONNX only
            return "torch-dense" if dense_applies(stride) else "torch"
        return classifiers.dense_choice() if dense_applies(stride) else "tiles"
    if spec.inference in DENSE_MODES and not dense_applies(stride):
        raise ConfigError(
            "inference",
            spec.inference,
            f"a stride that is a multiple of 16 (it is {stride}); use --round-stride or 'tiles'",
        )
    return spec.inference


def segment_pixels(
    pixels: NDArray[np.uint8],
    checkpoint: Checkpoint,
    spec: SegmentSpec | None = None,
    *,
    classifiers: Classifiers | None = None,
    classify_background: bool = False,
) -> SegmentResult:
    """Segment a thumbnail already read at the checkpoint's N (and normalised).

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail.
    checkpoint
        The model with its tile size, rails and sift options.
    spec
        Segmentation options.
    classifiers
        Reuse classifiers across slides (ONNX sessions are built once).
    classify_background
        Classify every tile that passes the background sift, not only those within the rails
        (so :meth:`SegmentResult.remask` can run the no-rails ablation).
    """
    spec = spec or SegmentSpec()
    classifiers = classifiers or Classifiers(checkpoint)
    if checkpoint.architecture == UNET:  # the paper's baseline: its own tiling and tile rule
        from slidesift.unet_segment import segment_unet

        return segment_unet(pixels, checkpoint, spec, classifiers.get("unet"))
    t = checkpoint.tile
    if min(pixels.shape[:2]) < t:
        raise ConfigError(
            "tile", t, f"at most the thumbnail's shorter side ({min(pixels.shape[:2])} px)"
        )
    stride = spec.stride_for(t)
    grid = TileGrid.from_stride(pixels.shape[:2], tile=t, stride=stride)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    workers = classifiers.threads or os.cpu_count() or 1
    stats = measure_tiles(pixels, grid, checkpoint.sift, workers=workers)
    sifted = sift(stats, checkpoint.rails if spec.rails else None)
    seconds["sift"] = time.perf_counter() - start
    _warn_if_rails_reject_tissue(sifted, spec.rails)

    start = time.perf_counter()
    to_classify = sifted.keep_background if classify_background else sifted.keep
    classes = checkpoint.classes
    probs = np.zeros((*grid.grid_shape, len(classes)), np.float32)
    probs[..., 0] = 1.0
    flat = np.flatnonzero(to_classify.ravel())
    kind = _pick(spec, stride, classifiers)
    classifier = classifiers.get(kind)
    xy = grid.th_xy()[flat]
    if flat.size == 0:
        warnings.warn(
            "no tile survived the sift (background and rails): the mask is empty; is this a "
            "slide without tissue, or were the rails fitted on other material?",
            NoTilesWarning,
            stacklevel=2,
        )
        batches: Any = iter(())
    elif kind in DENSE_MODES:
        batches = classifier.classify(pixels, xy, stride)
    else:
        batches = classify_tiles(classifier, pixels, xy, t, batch=spec.batch)
    flat_probs = probs.reshape(-1, len(classes))
    for idx, p in batches:
        flat_probs[flat[idx]] = p
    seconds["classify"] = time.perf_counter() - start

    start = time.perf_counter()
    a, mask = assemble_and_clean(grid, sifted.keep, probs, classes, spec)
    seconds["assemble"] = time.perf_counter() - start
    return SegmentResult(
        pixels=pixels,
        grid=grid,
        sifted=sifted,
        probs=probs,
        classified=to_classify,
        classes=classes,
        assembly=a,
        mask=mask,
        inference=str(classifier.name),
        seconds=seconds,
    )


def segment(
    slide_path: str | os.PathLike[str],
    checkpoint: Checkpoint,
    spec: SegmentSpec | None = None,
    *,
    classifiers: Classifiers | None = None,
    classify_background: bool = False,
    thumb: Thumb | None = None,
) -> SegmentResult:
    """Read a slide at the checkpoint's N and segment it (see :func:`segment_pixels`).

    Parameters
    ----------
    slide_path
        Any slide slidesift reads.
    checkpoint
        The model.
    spec
        Segmentation options.
    classifiers
        Shared classifiers (reuse across slides).
    classify_background
        See :func:`segment_pixels`.
    thumb
        An already read thumbnail of this slide at the checkpoint's N (skips reading).
    """
    start = time.perf_counter()
    if thumb is None:
        warm_up(checkpoint.sift)  # the sift's compiled kernels load while the slide is read
        with open_slide(slide_path) as slide:
            thumb = read_thumb(slide, **checkpoint.downsample.to_dict())
    for advice in scale_warnings(thumb, checkpoint):
        warnings.warn(f"{Path(slide_path).name}: {advice}", OutOfDomainWarning, stacklevel=2)
    pixels, _ = normalized_pixels(thumb, checkpoint.normalizer, Path(slide_path).name)
    read_s = time.perf_counter() - start
    result = segment_pixels(
        np.asarray(pixels), checkpoint, spec, classifiers=classifiers,
        classify_background=classify_background,
    )  # fmt: skip
    return replace(result, thumb=thumb, seconds={"read": read_s, **result.seconds})
