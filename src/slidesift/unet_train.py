"""Train the U-Net/EfficientNet-B0 baseline: the paper's comparison (METHOD.md section 7).

    slides at N --Otsu--> image tiles + mask tiles (:mod:`slidesift.unet_data`) --Adam,
    flips, BCE + Dice--> a checkpoint per epoch (``architecture: unet-effb0``)

The run folder is the lightweight CNN's (:mod:`slidesift.train_run`): ``run.json`` (with
``arch``), ``epoch_NNN.safetensors``, ``resume.safetensors``, ``log.csv``; ``--resume``,
``select``, ``evaluate``, ``segment`` and ``report`` take it as they take a CNN run. The paper
trained 20 epochs and kept the best on validation; here ``slidesift select`` chooses on the
``val`` slides as for the CNN.

Loss: binary cross-entropy plus soft Dice over each batch's pixels (the paper does not say
which loss it used; this pair is the common choice for a U-Net on unbalanced masks). After each
epoch, with held-out slides, ``holdout_raw_*`` in the log is the U-Net's tile decision (the 70%
rule) on the held-out slides' raw tiles on the U-Net's segmentation grid (overlap 0.5), labelled
by truth fraction exactly as the CNN's (:mod:`slidesift.tile_truth`), so the two logs compare.
Epoch ``e``'s tile order and flips come from ``numpy.random.default_rng([seed, e])`` and its
dropout from ``torch.manual_seed`` of the same pair, so a resumed run reproduces an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from slidesift._version import __version__
from slidesift.checkpoint import UNET
from slidesift.errors import ConfigError, TrainingError, require
from slidesift.io.atomic import remove_stale_temporaries
from slidesift.io.lock import locks_output
from slidesift.rails import Rails
from slidesift.tile_truth import classify_raw_tiles, raw_tiles, score_raw_tiles
from slidesift.tiles import stride_for_overlap
from slidesift.tileset import NON_TUMOR, SlideImage, TileSetSpec
from slidesift.train import train_device, training_scale
from slidesift.train_data import epoch_plan
from slidesift.train_run import (
    already_trained,
    checkpoint_name,
    resume_point,
    run_exists,
    save_epoch,
    write_log,
    write_run,
)
from slidesift.train_spec import EpochRecord, TrainCallbacks, TrainResult, TrainSpec
from slidesift.unet_data import MIN_TISSUE, TRAIN_OVERLAP, SegTiles, seg_tiles
from slidesift.unet_infer import TILE_RULE, decision_probabilities
from slidesift.unet_segment import DEFAULT_OVERLAP

__all__ = [
    "OPEN_RAILS",
    "UNET_EPOCHS",
    "UNET_LR",
    "UNET_TILES",
    "train_unet",
    "unet_checkpoint_meta",
]

#: The paper's training length for the baseline ("the best performer over 20 epochs").
UNET_EPOCHS = 20
#: Adam's learning rate for the baseline: Keras' default (the paper gives none for its baseline,
#: which ran in Keras' segmentation_models).
UNET_LR = 1e-3
#: The paper's tile sides: 256 px for PAIP2020, 224 px for CAMELYON16.
UNET_TILES = {"paip": 256, "camelyon": 224}
#: Rails that keep every tile: the U-Net sifts by Otsu tissue, not by entropy.
OPEN_RAILS = Rails(0.0, 24.0)


def unet_checkpoint_meta(
    spec: TileSetSpec,
    slides: Sequence[SlideImage],
    *,
    normalization: dict[str, Any] | None,
    epoch: int,
    metrics: dict[str, Any],
    parameters: dict[str, int],
) -> dict[str, Any]:
    """A U-Net checkpoint's metadata: the CNN's keys (:func:`slidesift.train.checkpoint_meta`)
    with open rails, plus the tile rule, the segmentation grid's overlap and Otsu."""
    return {
        "architecture": UNET,
        "input": "RGB float32 in [0, 1], (B, 3, T, T), Otsu background black",
        "tile": spec.tile,
        "longest": spec.longest,
        "mpp": spec.mpp,
        "rails": OPEN_RAILS.to_dict(),
        "sift": spec.sift.to_dict(),
        "classes": [NON_TUMOR, "tumor"],
        "normalization": normalization,
        "training_scale": training_scale(slides),
        "tile_rule": TILE_RULE,
        "segment_overlap": DEFAULT_OVERLAP,
        "otsu": True,
        "parameters": parameters,
        "epoch": epoch,
        "metrics": metrics,
        "slidesift_version": __version__,
    }


def _fingerprint(tiles: SegTiles, spec: TrainSpec, tileset: TileSetSpec, weights: str) -> str:
    """Hash of the tile table and the options that shape the training (not ``epochs``)."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (tiles.slide, tiles.th_xy):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    opts = spec.to_dict()
    for k in ("epochs", "device", "workers", "eval_batch"):
        opts.pop(k)
    h.update(json.dumps([UNET, opts, tileset.to_dict(), weights], sort_keys=True).encode())
    return h.hexdigest()


def _file_digest(path: str | os.PathLike[str] | None) -> str:
    if path is None:
        return ""
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def _loss(logits: Any, target: Any) -> Any:
    """Binary cross-entropy plus soft Dice (1 - 2|P.T| / (|P| + |T|)) over the batch."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = logits.sigmoid()
    dice = 1.0 - (2.0 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + dice


@locks_output("out")
def train_unet(
    slides: Sequence[SlideImage],
    out: str | os.PathLike[str],
    spec: TrainSpec,
    tileset: TileSetSpec,
    *,
    holdout: Sequence[SlideImage] = (),
    normalization: dict[str, Any] | None = None,
    encoder_weights: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: TrainCallbacks | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the U-Net baseline on ``slides``, writing a checkpoint after every epoch.

    Parameters
    ----------
    slides
        Training thumbnails with tumor masks, read at ``tileset``'s N.
    out
        Run folder (as :func:`slidesift.train.train`'s).
    spec
        Training options (the paper's baseline: 20 epochs).
    tileset
        Tile side T (a multiple of 32), downsample target and the sift options recorded for
        the tile table.
    holdout
        Held-out slides scored after each epoch (``val`` rows).
    normalization
        The stain normaliser's parameters the slides were made with.
    encoder_weights
        A safetensors file of ImageNet EfficientNet-B0 weights (torchvision's names) to start
        the encoder from; ``None``: from scratch (no weights hub is reachable).
    resume, callbacks, info
        As :func:`slidesift.train.train`'s.
    """
    require("torch", "learn", "training the U-Net baseline")
    import torch

    from slidesift.model import scale_input
    from slidesift.unet_model import UnetEffB0, count_parameters, load_encoder_weights

    cb = callbacks or TrainCallbacks()
    out = Path(out)
    t = tileset.tile
    if t % 32:
        raise ConfigError(
            "tile", t, "a multiple of 32 for the U-Net (paper: 256 PAIP, 224 CAMELYON)"
        )
    tiles = seg_tiles(slides, t)
    out.mkdir(parents=True, exist_ok=True)
    if run_exists(out) and not resume:
        raise TrainingError(*already_trained(out))
    remove_stale_temporaries(out)
    device = train_device(spec)
    fp = _fingerprint(tiles, spec, tileset, _file_digest(encoder_weights))
    torch.manual_seed(spec.seed)
    model = UnetEffB0(n_out=1)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    model = model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    parameters = count_parameters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    start, records = resume_point(out, model, optimizer, fp) if resume else (0, list[EpochRecord]())
    write_run(
        out,
        {
            "slidesift_version": __version__,
            "arch": UNET,
            "tileset": tileset.to_dict(),
            "train": spec.to_dict(),
            "classes": [NON_TUMOR, "tumor"],
            "normalization": normalization,
            "tiles": {"count": len(tiles), "overlap": TRAIN_OVERLAP, "min_tissue": MIN_TISSUE},
            "parameters": parameters,
            "encoder_weights": None if encoder_weights is None else str(encoder_weights),
            "slides": [s.name for s in slides],
            "holdout_slides": [s.name for s in holdout],
            "fingerprint": fp,
            "device": device,
            **(info or {}),
        },
    )
    if start:
        write_log(out, records)
    raw = raw_images = None
    if holdout:
        raw = raw_tiles(
            [(np.asarray(s.pixels), np.asarray(s.tumor), 1) for s in holdout],
            tile=t, stride=stride_for_overlap(t, DEFAULT_OVERLAP), spec=tileset.sift,
            rails=None, rule=tileset.raw_rule,
        )  # fmt: skip
        raw_images = seg_tiles(holdout, t, min_tissue=0.0).images  # Otsu images
    checkpoints = [out / checkpoint_name(e) for e in range(1, start + 1)]
    for epoch in range(start + 1, spec.epochs + 1):
        torch.manual_seed(int(np.random.default_rng([spec.seed, epoch, 1]).integers(2**62)))
        plan = epoch_plan(len(tiles), spec.batch_size, spec.seed, epoch, spec.flips)
        model.train()
        if cb.on_epoch_start:
            cb.on_epoch_start(epoch, len(plan))
        t0 = time.perf_counter()
        total_loss, correct, pixels = 0.0, 0, 0
        for b, items in enumerate(plan):
            x_u8, y_u8 = tiles.batch(items)
            x = scale_input(torch.from_numpy(x_u8), device)
            y = torch.from_numpy(y_u8).to(device).float()
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)[:, 0].float()
            loss = _loss(logits, y)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total_loss += value * len(items)
            correct += int(((logits.detach() > 0) == (y > 0.5)).sum())
            pixels += y.numel()
            if cb.on_batch:
                cb.on_batch(epoch, b, value)
        seconds = time.perf_counter() - t0
        record = EpochRecord(
            epoch, total_loss / len(tiles), correct / pixels, seconds=seconds,
            tiles_per_second=len(tiles) / seconds if seconds > 0 else 0.0,
        )  # fmt: skip
        if raw is not None and raw_images is not None:
            if cb.on_evaluate:
                cb.on_evaluate(epoch, -(-len(raw) // spec.eval_batch))
            predicted = classify_raw_tiles(
                raw, raw_images, lambda b: decision_probabilities(model, b, device),
                tile=t, batch=spec.eval_batch,
            )  # fmt: skip
            score = score_raw_tiles(raw.label, predicted, raw.ambiguous)
            record = replace(
                record,
                holdout_raw_accuracy=score.accuracy,
                holdout_raw_balanced_accuracy=score.balanced_accuracy,
                holdout_raw_tiles=score.tiles,
                holdout_raw_ambiguous=score.ambiguous,
            )
        records.append(record)
        path = save_epoch(
            out, model, optimizer, fp, records,
            lambda m, e=epoch: unet_checkpoint_meta(  # type: ignore[misc]
                tileset, slides, normalization=normalization, epoch=e, metrics=m,
                parameters=parameters,
            ),
        )  # fmt: skip
        checkpoints.append(path)
        if cb.on_epoch_end:
            cb.on_epoch_end(record, path)
    return TrainResult(out, tuple(records), tuple(checkpoints), device, resumed_from=start)
