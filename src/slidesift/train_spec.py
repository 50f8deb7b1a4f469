"""Training as data: the options, one epoch's log row, the progress hooks and the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slidesift.augment import AugmentSpec
from slidesift.errors import ConfigError

__all__ = ["EpochRecord", "TrainCallbacks", "TrainResult", "TrainSpec"]


@dataclass(frozen=True)
class TrainSpec:
    """Training options (every default is the paper's, METHOD.md section 4).

    Attributes
    ----------
    epochs
        Epochs to train in all (a resumed run continues up to this).
    batch_size
        Tiles per optimizer step.
    lr
        Adam learning rate.
    flips
        Random horizontal and vertical flips (each with probability 1/2).
    augment
        Augmentations beyond the paper's flips (:class:`slidesift.augment.AugmentSpec`:
        90-degree rotations, HED stain jitter, scale jitter); all off by default.
    seed
        Seeds weights, tile order, flips and dropout.
    device
        ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``.
    workers
        DataLoader worker processes; ``None``: none on a machine with 2 cores or fewer (cutting
        a tile costs microseconds; the cores are better spent on the network), else up to 4.
    eval_batch
        Batch size when scoring the held-out set.
    """

    epochs: int = 75
    batch_size: int = 16
    lr: float = 1e-4
    flips: bool = True
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    eval_batch: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.augment, AugmentSpec):  # a dict read back from run.json
            object.__setattr__(self, "augment", AugmentSpec.from_dict(self.augment))
        if self.epochs < 1:
            raise ConfigError("epochs", self.epochs, "at least 1 (paper: 75)")
        if self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "at least 1 (paper: 16)")
        if not self.lr > 0:
            raise ConfigError("lr", self.lr, "a positive learning rate (paper: 1e-4)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("device", self.device, "'auto', 'cpu' or 'cuda'")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("workers", self.workers, "0 or more, or None for automatic")
        if self.eval_batch < 1:
            raise ConfigError("eval_batch", self.eval_batch, "at least 1 tile per batch")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON/TOML."""
        return asdict(self)


@dataclass(frozen=True)
class EpochRecord:
    """One row of the training log (``holdout_raw_*``: the model's accuracy; see the module)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    holdout_raw_accuracy: float | None = None
    holdout_raw_balanced_accuracy: float | None = None
    holdout_raw_tiles: int | None = None
    holdout_raw_ambiguous: int | None = None
    masked_holdout_loss: float | None = None
    masked_holdout_accuracy: float | None = None
    masked_holdout_balanced_accuracy: float | None = None
    seconds: float = 0.0
    tiles_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return asdict(self)


@dataclass
class TrainCallbacks:
    """Hooks the CLI uses to draw progress; every one is optional.

    Attributes
    ----------
    on_epoch_start
        ``(epoch, n_batches)`` before an epoch's first batch.
    on_batch
        ``(epoch, batch_index, loss)`` after each optimizer step.
    on_evaluate
        ``(epoch, n_batches)`` before the held-out set is scored.
    on_epoch_end
        ``(record, checkpoint_path)`` once the epoch's checkpoint is on disk.
    """

    on_epoch_start: Callable[[int, int], None] | None = None
    on_batch: Callable[[int, int, float], None] | None = None
    on_evaluate: Callable[[int, int], None] | None = None
    on_epoch_end: Callable[[EpochRecord, Path], None] | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a training run left behind."""

    out: Path
    records: tuple[EpochRecord, ...]
    checkpoints: tuple[Path, ...]
    device: str
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
