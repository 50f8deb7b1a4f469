"""Held-out tiles as segmentation sees them: raw pixels, labelled by the truth they cover.

Training tiles are cut from class images (the other class blacked out, METHOD.md section 2), so
accuracy on such tiles measures a task segmentation never poses. Here a slide is tiled exactly
as :func:`slidesift.segment.segment_pixels` tiles it (same grid, same background sift, same
rails) and each kept tile is labelled by its **truth fraction**: the share of its tissue pixels
(grey value within the sift's limits) that the truth marks tumor.

The rule (:class:`RawTileRule`): a tile is tumor when its truth fraction is at least
``threshold`` (0.5: at least half of its tissue is tumor) and non-tumor otherwise; tiles whose
fraction lies within ``margin`` of the threshold (default: strictly between 0.25 and 0.75) are
ambiguous, left out of the accuracy and counted. A tumor tile's class is its slide's subtype for
multi-class models, as in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.rails import Rails
from slidesift.sift import SiftSpec, measure_tiles, sift, to_gray
from slidesift.tiles import TileGrid

__all__ = [
    "RawTileRule",
    "RawTileScore",
    "RawTiles",
    "classify_raw_tiles",
    "raw_tiles",
    "score_raw_tiles",
    "truth_fractions",
]

#: Overlap segmentation uses by default (METHOD.md section 5); held-out tiles use its grid.
SEGMENT_OVERLAP = 0.8


@dataclass(frozen=True)
class RawTileRule:
    """How a raw tile's truth fraction becomes a label.

    Attributes
    ----------
    threshold
        Tumor when the truth fraction of the tile's tissue is at least this.
    margin
        Tiles with ``|fraction - threshold| < margin`` are ambiguous and left out (0 keeps all).
    """

    threshold: float = 0.5
    margin: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError("threshold", self.threshold, "a fraction in (0, 1], e.g. 0.5")
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError("margin", self.margin, "a fraction in [0, 1), e.g. 0.25")

    def apply(self, fraction: NDArray[np.float64]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """``(tumor, clear)`` bool arrays of ``fraction``'s shape: tumor when the fraction is at
        least the threshold; clear when it lies at least ``margin`` from it (not ambiguous)."""
        f = np.asarray(fraction)
        return np.asarray(f >= self.threshold), np.asarray(
            np.abs(f - self.threshold) >= self.margin
        )

    def describe(self) -> str:
        """The rule in words, for logs and reports."""
        lo, hi = self.threshold - self.margin, self.threshold + self.margin
        band = f"; tiles with a fraction strictly between {lo:g} and {hi:g} are left out"
        return f"tumor if at least {self.threshold:g} of the tile's tissue pixels are truth" + (
            band if self.margin > 0 else ""
        )


def truth_fractions(
    pixels: NDArray[np.uint8],
    truth: NDArray[np.bool_],
    grid: TileGrid,
    spec: SiftSpec,
) -> NDArray[np.float64]:
    """Share of each tile's tissue pixels that the truth marks tumor.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail, ``[th_y, th_x]``.
    truth
        ``(H, W)`` bool tumor mask on the same grid.
    grid
        The tile grid over the thumbnail.
    spec
        The sift options; tissue is grey within ``[gray_low, gray_high]``.

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_cols)`` float64 in ``[0, 1]``; 0 for a tile without tissue.
    """
    if truth.shape != pixels.shape[:2]:
        raise ConfigError("truth", truth.shape, f"the thumbnail's shape {pixels.shape[:2]}")
    gray = to_gray(np.asarray(pixels))
    tissue = (gray >= spec.gray_low) & (gray <= spec.gray_high)
    n_tissue = _tile_sums(tissue, grid)
    n_tumor = _tile_sums(tissue & np.asarray(truth, bool), grid)
    return np.divide(n_tumor, n_tissue, out=np.zeros_like(n_tumor), where=n_tissue > 0)


def _tile_sums(mask: NDArray[np.bool_], grid: TileGrid) -> NDArray[np.float64]:
    """``(n_rows, n_cols)`` count of set pixels under each tile (summed-area table)."""
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=sat[1:, 1:])
    t = grid.tile
    y = np.arange(grid.n_rows)[:, None] * grid.stride
    x = np.arange(grid.n_cols)[None, :] * grid.stride
    total = sat[y + t, x + t] - sat[y, x + t] - sat[y + t, x] + sat[y, x]
    return total.astype(np.float64)


@dataclass(frozen=True)
class RawTiles:
    """Kept tiles of held-out slides with their truth labels.

    Attributes
    ----------
    slide
        ``(n,)`` int64 index of each tile's slide in the list it was built from.
    th_xy
        ``(n, 2)`` int64 top-left corners ``(th_x, th_y)`` in thumbnail px.
    label
        ``(n,)`` int64 class index (0 non-tumor).
    fraction
        ``(n,)`` float64 truth fraction.
    ambiguous
        Kept tiles left out by the rule's margin.
    rule
        The rule that labelled them.
    """

    slide: NDArray[np.int64] = field(repr=False)
    th_xy: NDArray[np.int64] = field(repr=False)
    label: NDArray[np.int64] = field(repr=False)
    fraction: NDArray[np.float64] = field(repr=False)
    ambiguous: int
    rule: RawTileRule

    def __len__(self) -> int:
        return int(self.label.size)


def raw_tiles(
    slides: Sequence[tuple[NDArray[np.uint8], NDArray[np.bool_], int]],
    *,
    tile: int,
    stride: int,
    spec: SiftSpec,
    rails: Rails | None,
    rule: RawTileRule | None = None,
) -> RawTiles:
    """Tile, sift and label held-out slides as segmentation would.

    Parameters
    ----------
    slides
        ``(pixels (H, W, 3) uint8, truth (H, W) bool, tumor class index)`` per slide; the
        class index is 1 for binary models, the slide's subtype index otherwise.
    tile, stride
        The segmentation grid.
    spec
        Background and entropy options (the checkpoint's).
    rails
        The model's rails (``None``: background sift only).
    rule
        The labelling rule.
    """
    rule = rule or RawTileRule()
    parts: list[tuple[NDArray[Any], ...]] = []
    ambiguous = 0
    for i, (pixels, truth, tumor_class) in enumerate(slides):
        grid = TileGrid.from_stride(pixels.shape[:2], tile=tile, stride=stride)
        keep = sift(measure_tiles(pixels, grid, spec), rails).keep.ravel()
        frac = truth_fractions(pixels, truth, grid, spec).ravel()
        is_tumor, clear = rule.apply(frac)
        ambiguous += int((keep & ~clear).sum())
        chosen = np.flatnonzero(keep & clear)
        label = np.where(is_tumor[chosen], tumor_class, 0).astype(np.int64)
        parts.append((np.full(chosen.size, i, np.int64), grid.th_xy()[chosen], label, frac[chosen]))
    cols = [np.concatenate([p[k] for p in parts]) for k in range(4)] if parts else []
    if not cols:
        cols = [np.empty(0, np.int64), np.empty((0, 2), np.int64), np.empty(0, np.int64),
                np.empty(0, np.float64)]  # fmt: skip
    return RawTiles(
        slide=cols[0], th_xy=cols[1], label=cols[2], fraction=cols[3], ambiguous=ambiguous,
        rule=rule,
    )  # fmt: skip


@dataclass(frozen=True)
class RawTileScore:
    """Accuracy of a classifier on raw held-out tiles.

    Attributes
    ----------
    accuracy
        Share of tiles whose predicted class is their label (NaN with no tile).
    balanced_accuracy
        Mean over the classes present of each class's recall.
    tiles
        Tiles scored.
    ambiguous
        Kept tiles left out by the rule.
    per_class
        ``{class index: recall}`` over the classes present.
    """

    accuracy: float
    balanced_accuracy: float
    tiles: int
    ambiguous: int
    per_class: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return asdict(self)


def score_raw_tiles(label: NDArray[np.int64], predicted: NDArray[np.int64],
                    ambiguous: int = 0) -> RawTileScore:  # fmt: skip
    """Accuracy, balanced accuracy and per-class recall of ``predicted`` against ``label``."""
    y, p = np.asarray(label), np.asarray(predicted)
    if y.shape != p.shape:
        raise ConfigError("predicted", p.shape, f"the labels' shape {y.shape}")
    per_class = {int(k): float((p[y == k] == k).mean()) for k in np.unique(y)}
    acc = float((y == p).mean()) if y.size else float("nan")
    bal = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return RawTileScore(acc, bal, int(y.size), ambiguous, per_class)


def classify_raw_tiles(
    tiles: RawTiles,
    images: Sequence[NDArray[np.uint8]],
    classify: Callable[[NDArray[np.uint8]], NDArray[np.floating[Any]]],
    *,
    tile: int,
    batch: int = 64,
) -> NDArray[np.int64]:
    """Predicted class of every raw tile: ``argmax`` of ``classify`` over batches.

    Parameters
    ----------
    tiles
        The labelled tiles (:func:`raw_tiles`).
    images
        The slides' ``(H, W, 3)`` uint8 thumbnails, in the order ``tiles.slide`` indexes.
    classify
        ``(B, T, T, 3)`` uint8 -> ``(B, C)`` class probabilities (column 0 non-tumor).
    tile
        Tile side T.
    """
    out = np.empty(len(tiles), np.int64)
    buf = np.empty((batch, tile, tile, 3), np.uint8)
    for j in range(0, len(tiles), batch):
        idx = np.arange(j, min(j + batch, len(tiles)))
        for k, i in enumerate(idx):
            x, y = tiles.th_xy[i]
            buf[k] = images[int(tiles.slide[i])][y : y + tile, x : x + tile]
        probs = np.asarray(classify(buf[: idx.size]))
        out[idx] = np.argmax(probs, axis=1)
    return out
