"""Train the lightweight CNN on a tile set: Adam, flips, a checkpoint after every epoch, resume.

METHOD.md section 4: Adam (lr 1e-4), batch 16, 75 epochs, random horizontal and vertical flips,
binary or categorical cross-entropy, no validation set steering the training. A held-out tile
set may be given; it is only scored after each epoch, two ways (both go in the log and the
checkpoint's metrics):

- ``holdout_raw_*``, **the model's accuracy**: the held-out slides tiled as segmentation tiles
  them (its default grid, sift and the model's rails), raw pixels, each tile labelled by its
  truth fraction (:mod:`slidesift.tile_truth`; ambiguous tiles left out and counted);
- ``masked_holdout_*``: the held-out tile set as training cuts it (the other class blacked
  out), which overstates what the model does on a slide.

Beyond the paper's flips, :class:`slidesift.augment.AugmentSpec` adds 90-degree rotations,
HED stain jitter and scale jitter (off by default).

Reproducible: epoch ``e``'s tile order, flips and augmentation seeds come from
``numpy.random.default_rng([seed, e])`` and its dropout from ``torch.manual_seed`` of the same
pair, so an epoch does not depend on how the run got there. Together with the optimizer state
saved after every epoch (``resume.safetensors``), a resumed run produces the same weights as an
uninterrupted one.

The run folder's files are :mod:`slidesift.train_run`'s; the options and log rows are
:mod:`slidesift.train_spec`'s; epoch plans and batches :mod:`slidesift.train_data`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift._version import __version__
from slidesift.errors import ConfigError, TrainingError, require
from slidesift.io.atomic import remove_stale_temporaries
from slidesift.io.lock import locks_output
from slidesift.rails import Rails
from slidesift.tile_truth import (
    SEGMENT_OVERLAP,
    RawTiles,
    classify_raw_tiles,
    raw_tiles,
    score_raw_tiles,
)
from slidesift.tiles import stride_for_overlap
from slidesift.tileset import SlideImage, TileSet
from slidesift.train_data import EpochSampler, TileBatches, collate_batch
from slidesift.train_run import (
    already_trained,
    checkpoint_name,
    fingerprint,
    resume_point,
    run_exists,
    save_epoch,
    write_log,
    write_run,
)
from slidesift.train_spec import EpochRecord, TrainCallbacks, TrainResult, TrainSpec

__all__ = ["checkpoint_meta", "train", "training_scale"]


# --- helpers -----------------------------------------------------------------------------------


def train_device(spec: TrainSpec) -> str:
    """The device a run trains on: ``spec.device``, ``auto`` resolved (CUDA when present)."""
    import torch

    if spec.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda", "a CUDA device; none is visible (use auto or cpu)")
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


def _workers(spec: TrainSpec, device: str) -> int:
    if spec.workers is not None:
        return spec.workers
    cores = os.cpu_count() or 1
    if device == "cuda":
        return min(8, max(1, cores - 1))
    return 0 if cores <= 2 else min(4, cores // 4 or 1)


def training_scale(slides: Sequence[SlideImage]) -> dict[str, Any]:
    """The training slides' median um per thumbnail px (``None`` when none has an MPP), their
    median level-0 longer side, and how many slides had no MPP; segmentation warns when a
    slide is 2x or more away (:func:`slidesift.segment.scale_warnings`)."""
    ums = [s.um_per_px for s in slides if s.um_per_px is not None]
    sizes = [s.l0_longest for s in slides if s.l0_longest is not None]
    return {
        "um_per_px": float(np.median(ums)) if ums else None,
        "l0_longest": int(np.median(sizes)) if sizes else None,
        "slides_without_mpp": len(slides) - len(ums),
    }


def checkpoint_meta(
    tiles: TileSet, *, normalization: dict[str, Any] | None, epoch: int, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The metadata a checkpoint needs to segment a new slide like the training slides."""
    ts = tiles.spec
    return {
        "architecture": "lightweight-cnn",
        "input": "RGB float32 in [0, 1], (B, 3, T, T)",
        "tile": ts.tile,
        "longest": ts.longest,
        "mpp": ts.mpp,
        "overlaps": tiles.overlaps,
        "rails": tiles.rails.to_dict(),
        "sift": ts.sift.to_dict(),
        "tumor_max_background": ts.tumor_sift.max_background,
        "classes": list(tiles.classes),
        "normalization": normalization,
        "training_scale": training_scale(tiles.slides),
        "epoch": epoch,
        "metrics": metrics,
        "slidesift_version": __version__,
    }


def _loss_fn(n_classes: int) -> Callable[[Any, Any], Any]:
    import torch.nn.functional as F

    if n_classes == 2:
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return lambda logits, y: F.cross_entropy(logits, y)


def _predict(logits: Any) -> Any:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def evaluate(model: Any, loader: Any, n_classes: int, device: str) -> tuple[float, float, float]:
    """Mean loss, accuracy and balanced accuracy of ``model`` over a loader's batches."""
    require("torch", "learn", "scoring the CNN")
    import torch

    from slidesift.model import autocast, scale_input

    loss_fn = _loss_fn(n_classes)
    model.eval()
    ys, preds, total = [], [], 0.0
    with torch.no_grad(), autocast(device):
        for x_u8, y in loader:
            logits = model(scale_input(x_u8, device)).float()
            y = y.to(device)
            total += float(loss_fn(logits, y)) * len(y)
            ys.append(y.cpu().numpy())
            preds.append(_predict(logits).cpu().numpy())
    y_all, p_all = np.concatenate(ys), np.concatenate(preds)
    score = score_raw_tiles(y_all, p_all)
    return total / len(y_all), score.accuracy, score.balanced_accuracy


def holdout_raw_tiles(holdout: TileSet, rails: Rails) -> RawTiles:
    """The held-out slides' tiles as segmentation cuts them (default overlap, the model's
    rails), labelled by truth fraction with the tile set's rule (see :mod:`slidesift.tile_truth`).
    A tumor tile's class is the slide's subtype for multi-class sets, else 1."""
    classes = holdout.classes
    slides = [
        (
            np.asarray(s.pixels),
            np.asarray(s.tumor),
            classes.index(s.label) if len(classes) > 2 and s.label in classes else 1,
        )
        for s in holdout.slides
    ]
    t = holdout.spec.tile
    return raw_tiles(
        slides, tile=t, stride=stride_for_overlap(t, SEGMENT_OVERLAP), spec=holdout.spec.sift,
        rails=rails, rule=holdout.spec.raw_rule,
    )  # fmt: skip


def _classifier(model: Any, device: str) -> Callable[[NDArray[np.uint8]], NDArray[np.float32]]:
    """``(B, T, T, 3)`` uint8 -> ``(B, C)`` probabilities with ``model`` (eval mode)."""
    import torch

    from slidesift.model import autocast, probabilities, scale_input

    def classify(tiles_u8: NDArray[np.uint8]) -> NDArray[np.float32]:
        model.eval()
        x = scale_input(torch.from_numpy(np.ascontiguousarray(tiles_u8)), device)
        with torch.no_grad(), autocast(device):
            return np.asarray(probabilities(model(x)).float().cpu().numpy(), np.float32)

    return classify


# --- the loop ----------------------------------------------------------------------------------


@locks_output("out")
def train(
    tiles: TileSet,
    out: str | os.PathLike[str],
    spec: TrainSpec | None = None,
    *,
    holdout: TileSet | None = None,
    normalization: dict[str, Any] | None = None,
    resume: bool = False,
    callbacks: TrainCallbacks | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a :class:`LightweightCNN` on ``tiles``, writing a checkpoint after every epoch.

    Parameters
    ----------
    tiles
        The training tile set (:func:`slidesift.dataset.build_tileset`).
    out
        Run folder (created). A folder that already holds a run needs ``resume=True``; one
        that another run is writing raises :class:`~slidesift.errors.OutputLockedError`
        (:func:`slidesift.io.lock.output_lock`, held for the whole call).
    spec
        Training options.
    holdout
        A held-out tile set (same classes, rails and tile size), scored after each epoch.
    normalization
        The stain normaliser's :meth:`to_dict` the tiles were made with (saved with the model).
    resume
        Continue the run in ``out`` from its last complete epoch.
    callbacks
        Progress hooks.
    info
        Extra entries for ``run.json`` (the CLI records the manifest's path for ``--resume``).

    Returns
    -------
    TrainResult
    """
    require("torch", "learn", "training the CNN")
    import torch

    from slidesift.model import LightweightCNN, autocast, scale_input

    spec = spec or TrainSpec()
    cb = callbacks or TrainCallbacks()
    out = Path(out)
    if len(tiles) == 0:
        raise TrainingError("the tile set is empty; nothing to train on")
    if holdout is not None and (
        holdout.classes != tiles.classes or holdout.spec.tile != tiles.spec.tile
    ):
        raise ConfigError(
            "holdout",
            holdout.classes,
            f"a tile set with classes {tiles.classes} at T={tiles.spec.tile}",
        )
    out.mkdir(parents=True, exist_ok=True)
    if run_exists(out) and not resume:
        raise TrainingError(*already_trained(out))
    remove_stale_temporaries(out)  # a run killed inside a write (kill -9) leaves its temp file
    device = train_device(spec)
    n_classes = len(tiles.classes)
    fp = fingerprint(tiles, spec)

    torch.manual_seed(spec.seed)
    model = LightweightCNN(tiles.spec.tile, n_classes)
    model = model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    start, records = 0, list[EpochRecord]()
    if resume:
        start, records = resume_point(out, model, optimizer, fp)

    run_doc = {
        "slidesift_version": __version__,
        "tileset": tiles.spec.to_dict(),
        "train": spec.to_dict(),
        "classes": list(tiles.classes),
        "rails": tiles.rails.to_dict(),
        "overlaps": tiles.overlaps,
        "normalization": normalization,
        "summary": [asdict(s) for s in tiles.summary],
        "slides": [s.name for s in tiles.slides],
        "holdout_slides": [s.name for s in holdout.slides] if holdout is not None else [],
        "fingerprint": fp,
        "device": device,
        **(info or {}),
    }
    write_run(out, run_doc)
    if start:
        write_log(out, records)  # a run killed before its last log row: the row comes back
    else:
        tiles.write_csv(out / "tiles.csv")
        if holdout is not None:
            holdout.write_csv(out / "holdout_tiles.csv")

    workers = _workers(spec, device)
    sampler = EpochSampler(len(tiles), spec)
    loader: Any = torch.utils.data.DataLoader(
        TileBatches(tiles, spec.augment),  # type: ignore[arg-type]
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device == "cuda",
    )
    hold_loader: Any = None
    raw: RawTiles | None = None
    raw_images: list[NDArray[np.uint8]] = []
    if holdout is not None and len(holdout):
        raw = holdout_raw_tiles(holdout, tiles.rails)
        raw_images = [np.asarray(s.pixels) for s in holdout.slides]
        plan = [
            [(i, 0, 0) for i in range(j, min(j + spec.eval_batch, len(holdout)))]
            for j in range(0, len(holdout), spec.eval_batch)
        ]
        hold_loader = torch.utils.data.DataLoader(
            TileBatches(holdout),  # type: ignore[arg-type]
            batch_sampler=plan,
            collate_fn=collate_batch,
            num_workers=0,
        )
    loss_fn = _loss_fn(n_classes)
    checkpoints = [out / checkpoint_name(e) for e in range(1, start + 1)]
    for epoch in range(start + 1, spec.epochs + 1):
        sampler.epoch = epoch
        torch.manual_seed(int(np.random.default_rng([spec.seed, epoch, 1]).integers(2**62)))
        model.train()
        if cb.on_epoch_start:
            cb.on_epoch_start(epoch, len(sampler))
        t0 = time.perf_counter()
        total_loss, correct, seen = 0.0, 0, 0
        for b, (x_u8, y) in enumerate(loader):
            x = scale_input(x_u8, device)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total_loss += value * len(y)
            correct += int((_predict(logits.detach()) == y).sum())
            seen += len(y)
            if cb.on_batch:
                cb.on_batch(epoch, b, value)
        seconds = time.perf_counter() - t0
        record = EpochRecord(
            epoch,
            total_loss / seen,
            correct / seen,
            seconds=seconds,
            tiles_per_second=seen / seconds if seconds > 0 else 0.0,
        )
        if hold_loader is not None and raw is not None:
            if cb.on_evaluate:
                cb.on_evaluate(epoch, len(hold_loader))
            h_loss, h_acc, h_bal = evaluate(model, hold_loader, n_classes, device)
            classify = _classifier(model, device)
            predicted = classify_raw_tiles(
                raw, raw_images, classify, tile=tiles.spec.tile, batch=spec.eval_batch
            )
            raw_score = score_raw_tiles(raw.label, predicted, raw.ambiguous)
            record = replace(
                record,
                holdout_raw_accuracy=raw_score.accuracy,
                holdout_raw_balanced_accuracy=raw_score.balanced_accuracy,
                holdout_raw_tiles=raw_score.tiles,
                holdout_raw_ambiguous=raw_score.ambiguous,
                masked_holdout_loss=h_loss,
                masked_holdout_accuracy=h_acc,
                masked_holdout_balanced_accuracy=h_bal,
            )
        records.append(record)
        path = save_epoch(
            out, model, optimizer, fp, records,
            lambda m, e=epoch: checkpoint_meta(  # type: ignore[misc]
                tiles, normalization=normalization, epoch=e, metrics=m
            ),
        )  # fmt: skip
        checkpoints.append(path)
        if cb.on_epoch_end:
            cb.on_epoch_end(record, path)
    return TrainResult(out, tuple(records), tuple(checkpoints), device, resumed_from=start)
