"""Feeding the network: epoch plans (order, flips, augmentation seeds) and batches of tiles.

Epoch ``e``'s tile order, flips and augmentation seeds come from
``numpy.random.default_rng([seed, e])``, so an epoch does not depend on how the run got there
(which makes a resumed run exact).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from slidesift.augment import AugmentSpec, augment_tile
from slidesift.tileset import TileSet
from slidesift.train_spec import TrainSpec

__all__ = ["EpochSampler", "TileBatches", "collate_batch", "epoch_plan"]


class TileBatches:
    """A DataLoader dataset over a :class:`TileSet`: fetches whole batches of ``(i, flip_h,
    flip_v, augment_seed)`` items and returns ``(tiles (B, T, T, 3) uint8, labels (B,) int64)``
    tensors. With ``augment``, each tile is then augmented from its item's seed."""

    def __init__(self, tiles: TileSet, augment: AugmentSpec | None = None) -> None:
        self.tiles = tiles
        self.augment = augment if augment is not None and augment.active else None

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, item: tuple[int, ...]) -> Any:
        return self.__getitems__([item])

    def __getitems__(self, items: Sequence[tuple[int, ...]]) -> Any:
        import torch

        t = self.tiles.spec.tile
        out = np.empty((len(items), t, t, 3), np.uint8)
        labels = np.empty(len(items), np.int64)
        for k, (i, flip_h, flip_v, *rest) in enumerate(items):
            tile = self.tiles.tile(i)
            if flip_h:
                tile = tile[:, ::-1]
            if flip_v:
                tile = tile[::-1]
            if self.augment is not None and rest:
                tile = augment_tile(tile, self.augment, rest[0])
            out[k] = tile
            labels[k] = self.tiles.label[i]
        return torch.from_numpy(out), torch.from_numpy(labels)


def collate_batch(batch: Any) -> Any:
    """The DataLoader's ``collate_fn``: :class:`TileBatches` already returns whole batches."""
    return batch


def epoch_plan(
    n: int, batch_size: int, seed: int, epoch: int, flips: bool, augment: bool = False
) -> list[list[tuple[int, int, int, int]]]:
    """Epoch ``epoch``'s batches of ``(tile index, flip_h, flip_v, augment_seed)``; a function
    of its args (the order and flips do not depend on ``augment``; seeds are 0 without it)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    flip = rng.integers(0, 2, size=(n, 2)) if flips else np.zeros((n, 2), np.int64)
    if augment:
        seeds = np.random.default_rng([seed, epoch, 1]).integers(0, 2**31, size=n)
    else:
        seeds = np.zeros(n, np.int64)
    items = [(int(i), int(flip[k, 0]), int(flip[k, 1]), int(seeds[k])) for k, i in enumerate(order)]
    return [items[j : j + batch_size] for j in range(0, n, batch_size)]


class EpochSampler:
    """A batch sampler whose batches follow the epoch it is set to (works with persistent
    DataLoader workers, which only ever see indices)."""

    def __init__(self, n: int, spec: TrainSpec) -> None:
        self.n, self.spec, self.epoch = n, spec, 1

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        s = self.spec
        plan = epoch_plan(self.n, s.batch_size, s.seed, self.epoch, s.flips, s.augment.active)
        return iter(plan)

    def __len__(self) -> int:
        return -(-self.n // self.spec.batch_size)
