"""The training run folder: its files' names, formats, writers and readers.

Run folder::

    run.json                  the tile set's and the training's options, classes, rails
    tiles.csv                 the training tile table (holdout_tiles.csv for the held-out set)
    epoch_001.safetensors ... weights + metadata after each epoch (slidesift.checkpoint)
    resume.safetensors        weights + Adam state + history of the last complete epoch
    log.csv                   one row per epoch: loss, accuracy, held-out accuracy, tiles/s
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slidesift.checkpoint import read_safetensors, save_checkpoint, write_safetensors
from slidesift.errors import CheckpointError, TrainingError
from slidesift.io.atomic import atomic_write_json, atomic_write_text
from slidesift.tileset import TileSet, TileSetSpec
from slidesift.train_spec import EpochRecord, TrainSpec

__all__ = [
    "LOG_COLUMNS",
    "LOG_FILE",
    "RESUME",
    "RUN_FILE",
    "already_trained",
    "checkpoint_name",
    "fingerprint",
    "load_resume",
    "read_resume_options",
    "read_run",
    "resume_point",
    "run_exists",
    "save_epoch",
    "save_resume",
    "write_log",
    "write_run",
]

RUN_FILE = "run.json"
LOG_FILE = "log.csv"
RESUME = "resume.safetensors"
LOG_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "holdout_raw_accuracy",
    "holdout_raw_balanced_accuracy",
    "holdout_raw_tiles",
    "holdout_raw_ambiguous",
    "masked_holdout_loss",
    "masked_holdout_accuracy",
    "masked_holdout_balanced_accuracy",
    "seconds",
    "tiles_per_second",
)


def checkpoint_name(epoch: int) -> str:
    """``epoch_005.safetensors`` for epoch 5."""
    return f"epoch_{epoch:03d}.safetensors"


def write_run(out: Path, doc: dict[str, Any]) -> Path:
    """Write ``run.json`` (strict JSON: NaN becomes null)."""
    return atomic_write_json(out / RUN_FILE, doc)


def read_run(out: Path) -> dict[str, Any]:
    """Read ``run.json`` of the run in ``out``.

    Raises
    ------
    TrainingError
        The file is missing, unreadable or not a JSON object.
    """
    path = out / RUN_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(
            f"cannot read {path}: {exc}", "was a training run started in this folder?"
        ) from exc
    if not isinstance(doc, dict):
        raise TrainingError(f"{path} is not a JSON object", "was it written by slidesift train?")
    return doc


def read_resume_options(out: Path) -> dict[str, Any]:
    """What ``train --resume`` needs from ``run.json``: ``manifest`` (a path), ``tileset`` (a
    :class:`~slidesift.tileset.TileSetSpec`), ``train`` (a dict of :class:`TrainSpec` fields)
    and ``normalization``.

    Raises
    ------
    TrainingError
        The file is missing, unreadable or lacks one of these.
    """
    doc = read_run(out)
    try:
        return {
            "manifest": Path(doc["manifest"]),
            "tileset": TileSetSpec.from_dict(doc["tileset"]),
            "train": dict(doc["train"]),
            "normalization": doc.get("normalization"),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(
            f"cannot resume: {out / RUN_FILE} lacks {exc}", "was the run started here?"
        ) from exc


def fingerprint(tiles: TileSet, spec: TrainSpec) -> str:
    """Hash of the tile table and the options that shape the training (not ``epochs``)."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (tiles.slide, tiles.th_x, tiles.th_y, tiles.label):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    h.update(",".join(s.key or s.name for s in tiles.slides).encode())
    opts = spec.to_dict()
    for k in ("epochs", "device", "workers", "eval_batch"):
        opts.pop(k)
    if not spec.augment.active:  # runs from before augmentations existed still resume
        opts.pop("augment")
    h.update(json.dumps([opts, tiles.spec.to_dict(), list(tiles.classes)], sort_keys=True).encode())
    return h.hexdigest()


def write_log(out: Path, records: Sequence[EpochRecord]) -> Path:
    """Write ``log.csv``: one row per epoch, columns :data:`LOG_COLUMNS` (blank: not measured)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LOG_COLUMNS)
    for r in records:
        d = r.to_dict()
        w.writerow(
            [
                "" if d[c] is None else (f"{d[c]:.6g}" if isinstance(d[c], float) else d[c])
                for c in LOG_COLUMNS
            ]
        )
    return atomic_write_text(out / LOG_FILE, buf.getvalue())


def save_epoch(
    out: Path,
    model: Any,
    optimizer: Any,
    fp: str,
    records: Sequence[EpochRecord],
    meta_for: Callable[[dict[str, Any]], dict[str, Any]],
) -> Path:
    """Write the files of the epoch ``records[-1]`` ends, in the order :func:`resume_point`
    relies on: its checkpoint (metadata ``meta_for(metrics)``), then ``resume.safetensors``,
    then ``log.csv``. Any model's training loop ends its epochs here. Returns the checkpoint."""
    record = records[-1]
    metrics = {k: v for k, v in record.to_dict().items() if k != "epoch" and v is not None}
    path = out / checkpoint_name(record.epoch)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, state, meta_for(metrics))
    save_resume(out, model, optimizer, record.epoch, fp, records)
    write_log(out, records)
    return path


def save_resume(
    out: Path, model: Any, optimizer: Any, epoch: int, fp: str, records: Sequence[EpochRecord]
) -> None:
    """Write ``resume.safetensors``: weights, Adam state and the log of the last epoch."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{i}.{name}"] = value
    meta = {
        "epoch": epoch,
        "fingerprint": fp,
        "param_groups": opt["param_groups"],
        "records": [r.to_dict() for r in records],
    }
    write_safetensors(out / RESUME, tensors, {"slidesift-resume": json.dumps(meta)})


def load_resume(out: Path, model: Any, optimizer: Any, fp: str) -> tuple[int, list[EpochRecord]]:
    """Restore ``model`` and ``optimizer`` from ``resume.safetensors``; returns the epoch reached
    and the log so far. Refuses state written for another tile set or other options."""
    path = out / RESUME
    tensors, meta = read_safetensors(path, framework="torch")
    try:
        doc = json.loads(meta["slidesift-resume"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, "no resume metadata") from exc
    if doc["fingerprint"] != fp:
        raise TrainingError(*_other_options(out))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    return int(doc["epoch"]), [EpochRecord(**r) for r in doc["records"]]


def resume_point(out: Path, model: Any, optimizer: Any, fp: str) -> tuple[int, list[EpochRecord]]:
    """Where ``train --resume`` continues the run in ``out``: the last epoch whose resume state
    is on disk (``model`` and ``optimizer`` restored to it) and the log so far.

    Epoch ``e`` writes its checkpoint, then ``resume.safetensors``, then ``log.csv``; a process
    killed between two of them resumes after the last epoch with resume state and rewrites the
    later files with the same bits. Killed in the first epoch before any resume state: epoch 1
    starts again (0, no records), unless the run has later checkpoints or ``run.json`` names
    other options.

    Raises
    ------
    TrainingError
        The run was started with other options or tile set (``fp`` differs).
    CheckpointError
        The resume state is damaged, or missing although the run has passed epoch 1.
    """
    if (out / RESUME).exists():
        start, records = load_resume(out, model, optimizer, fp)
        return start, records[:start]
    if (out / RUN_FILE).exists() and read_run(out).get("fingerprint", fp) != fp:
        raise TrainingError(*_other_options(out))
    if any(p.name != checkpoint_name(1) for p in out.glob("epoch_*.safetensors")):
        raise CheckpointError(out / RESUME, "missing; the run cannot be resumed exactly")
    return 0, []


def _other_options(out: Path) -> tuple[str, str]:
    return (
        f"cannot resume {out}: it was trained on another tile set or with other options "
        "(tile size, N, overlaps, classes, seed, batch size, learning rate)",
        "start a new run in another folder, or give the same options",
    )


def run_exists(out: Path) -> bool:
    """Whether ``out`` already holds a training run (checkpoints or resume state)."""
    return (out / RESUME).exists() or any(out.glob("epoch_*.safetensors"))


def already_trained(out: Path) -> tuple[str, str]:
    """The reason and hint for a run folder that is not empty."""
    return (
        f"{out} already holds a training run",
        "pass resume=True (--resume) to continue it, or choose another output folder",
    )
