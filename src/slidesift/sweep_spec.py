"""The grid and recipe of an N x T sweep (:mod:`slidesift.sweep`), validated where made.

:class:`SweepSpec` holds the rows (downsample N, or um/px), the columns (tile side T) and what
every cell shares (training, tile set and segmentation options, the selection metric);
:func:`fingerprint` hashes the recipe, the grid left out, so a grid can grow in one folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from slidesift.architecture import feature_side
from slidesift.errors import ConfigError
from slidesift.io.downsample import Downsample
from slidesift.manifest import Manifest
from slidesift.segment import SegmentSpec
from slidesift.tileset import TileSetSpec

__all__ = ["METRICS", "MIN_TILE", "Cell", "SweepSpec", "fingerprint"]

#: The cohort means a sweep can choose epochs by and mark its best cell with.
METRICS = ("jaccard", "dice", "precision", "recall")
#: The smallest tile the lightweight CNN takes (five 3x3-conv + 2x2-pool blocks).
MIN_TILE = 94


@dataclass(frozen=True)
class Cell:
    """One (N, T) point of the grid; exactly one of ``n`` and ``mpp`` is set."""

    n: int | None
    mpp: float | None
    t: int

    @property
    def row(self) -> int | float:
        """The row value: N, or the um/px."""
        return self.n if self.n is not None else float(self.mpp or 0.0)

    @property
    def key(self) -> str:
        """The cell's name and folder: ``N1500_T96`` or ``mpp4_T96``."""
        return f"N{self.n}_T{self.t}" if self.n is not None else f"mpp{self.mpp:g}_T{self.t}"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains and scores.

    Attributes
    ----------
    ns, mpps
        The rows: downsample targets as longest sides N in px, or as um/px (exactly one of
        the two is given).
    ts
        The columns: tile sides T in px, each at least :data:`MIN_TILE` (94).
    epochs, batch_size, lr, seed
        Training (:class:`~slidesift.train_spec.TrainSpec`); the seed also draws the val split
        and balances the tile sets. 10 epochs by default: a sweep trains a model per cell,
        and on the paper's cohorts the selected epochs came early (CAMELYON16 overfit after
        about 25); the paper's 75 stays ``slidesift train``'s default.
    val_fraction
        Share of each label's training slides drawn as ``val`` when the manifest has no val
        rows (ignored when it has); ``None`` then refuses such a manifest.
    metric
        The cohort mean that chooses each cell's epoch on val and marks the best cell.
    min_accuracy
        Model selection's slide classification floor (paper: 0.6): epochs at or below it are
        not chosen; ``None``: every epoch qualifies (short sweeps, where an early epoch may
        call no slide tumor).
    segment
        Segmentation options for selection and the test scores.
    tileset
        Tile set options; its tile side and downsample are each cell's, its seed the sweep's.
    device
        ``auto``, ``cpu`` or ``cuda`` (not part of the recipe).
    """

    ns: tuple[int, ...] = ()
    mpps: tuple[float, ...] = ()
    ts: tuple[int, ...] = ()
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    val_fraction: float | None = 0.25
    metric: str = "jaccard"
    min_accuracy: float | None = 0.6
    segment: SegmentSpec = field(default_factory=SegmentSpec)
    tileset: TileSetSpec = field(default_factory=TileSetSpec)
    device: str = "auto"

    def __post_init__(self) -> None:
        from slidesift.train_spec import TrainSpec

        object.__setattr__(self, "ns", tuple(self.ns))
        object.__setattr__(self, "mpps", tuple(self.mpps))
        object.__setattr__(self, "ts", tuple(self.ts))
        if bool(self.ns) == bool(self.mpps):
            raise ConfigError(
                "N/mpp", (self.ns, self.mpps),
                "give the rows as N values (--N 1500,3000) or as um/px values (--mpp 2,4), "
                "one of the two",
            )  # fmt: skip
        if not self.ts:
            raise ConfigError("T", self.ts, "at least one tile side, e.g. --T 96,200")
        small = [t for t in self.ts if isinstance(t, int) and t < MIN_TILE]
        if small:
            raise ConfigError(
                "T", small[0] if len(small) == 1 else small,
                f"every tile side at least {MIN_TILE} px: the lightweight CNN's five 3x3-conv + "
                f"2x2-pool blocks leave no feature map below it (T given: {list(self.ts)})",
            )  # fmt: skip
        for t in self.ts:
            if isinstance(t, bool) or not isinstance(t, int):
                raise ConfigError("T", t, "whole numbers of px")
            feature_side(t)
        for axis, values in (("N", self.ns), ("mpp", self.mpps), ("T", self.ts)):
            if len(set(values)) != len(values):
                raise ConfigError(axis, list(values), "each value once")
        for n in self.ns:
            Downsample(longest=n)
        for m in self.mpps:
            Downsample(mpp=m)
        if self.metric not in METRICS:
            raise ConfigError("metric", self.metric, f"one of {', '.join(METRICS)}")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("val_fraction", self.val_fraction, "a fraction in (0, 1), or None")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy < 1.0:
            raise ConfigError("min_accuracy", self.min_accuracy, "a fraction in [0, 1), or None")
        TrainSpec(**self.train_fields())  # validates epochs, batch size, lr, device

    @property
    def axis(self) -> str:
        """``N`` or ``mpp``: what the rows are."""
        return "N" if self.ns else "mpp"

    @property
    def cells(self) -> list[Cell]:
        """The grid, row by row (N, then T, in the order given)."""
        rows: Sequence[int | float] = self.ns or self.mpps
        return [
            Cell(r if self.ns else None, None if self.ns else float(r), t)  # type: ignore[arg-type]
            for r in rows
            for t in self.ts
        ]

    def train_fields(self) -> dict[str, Any]:
        """The :class:`~slidesift.train_spec.TrainSpec` fields of every cell."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "seed": self.seed, "device": self.device}  # fmt: skip

    def cell_tileset(self, cell: Cell) -> TileSetSpec:
        """The tile set options of ``cell``."""
        d = self.tileset.to_dict()
        d.update(tile=cell.t, longest=cell.n, mpp=cell.mpp, seed=self.seed)
        return TileSetSpec.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for sweep.json."""
        d = asdict(self)
        d["tileset"] = self.tileset.to_dict()
        return d

    def recipe(self) -> dict[str, Any]:
        """What shapes a cell: everything but the grid and the device."""
        d = self.to_dict()
        for k in ("ns", "mpps", "ts", "device"):
            d.pop(k)
        for k in ("tile", "longest", "mpp", "seed"):
            d["tileset"].pop(k, None)
        return d


def _manifest_rows(m: Manifest) -> list[list[Any]]:
    return [[str(e.slide), None if e.annotation is None else str(e.annotation), e.label, e.split]
            for e in m]  # fmt: skip


def fingerprint(spec: SweepSpec, manifest: Manifest) -> str:
    """Hash of the recipe (:meth:`SweepSpec.recipe`) and the manifest's rows and splits."""
    text = json.dumps([spec.recipe(), _manifest_rows(manifest)], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
