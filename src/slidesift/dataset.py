"""Training tile sets: tumor and non-tumor images, per-class overlaps, both sifts, balancing.

METHOD.md sections 2-3, for a cohort of training slides::

    thumbnail + truth --> tumor image (outside tumor black)  --tiles @ tumor overlap-->
                      --> non-tumor image (tumor black)      --tiles @ non-tumor overlap-->
    tumor tiles --background sift--> fit rails (min, max entropy)
    non-tumor tiles --background sift--> rails sift
    both --random removal--> equal classes --> TileSet (a table of coordinates)

The tile set's types (:class:`~slidesift.tileset.TileSet`, its spec, the slide images) live in
:mod:`slidesift.tileset`; this module builds one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, DatasetError
from slidesift.rails import Rails, fit_rails
from slidesift.sift import TileStats, measure_tiles
from slidesift.tile_truth import truth_fractions
from slidesift.tiles import TileGrid
from slidesift.tileset import (
    NON_TUMOR,
    BalanceMode,
    ClassMode,
    ClassSummary,
    SlideImage,
    TileSet,
    TileSetSpec,
    class_image,
)

__all__ = ["OVERLAP_CANDIDATES", "build_tileset", "friendly_overlap"]

#: Overlaps tried, in order, when a class needs more tiles (the paper ran 50% to 96%).
OVERLAP_CANDIDATES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96)


def _class_names(slides: Sequence[SlideImage], mode: ClassMode) -> tuple[str, ...]:
    if mode == "binary":
        return (NON_TUMOR, "tumor")
    subtypes = sorted({s.label for s in slides if s.tumor.any() and s.label is not None})
    unlabeled = [s.name for s in slides if s.tumor.any() and s.label is None]
    if unlabeled:
        raise DatasetError(
            f"classes='subtype' needs a label on every slide with tumor; unlabelled: "
            f"{', '.join(unlabeled[:5])}"
        )
    if len(subtypes) < 2:
        raise DatasetError(
            f"classes='subtype' needs at least two subtype labels among the tumor slides, "
            f"found {subtypes}; train a binary model instead (classes='binary')"
        )
    return (NON_TUMOR, *subtypes)


def _check_slides(slides: Sequence[SlideImage], tile: int, need_tumor: bool) -> None:
    if not slides:
        raise DatasetError("no training slides: give a manifest with split 'train' rows")
    small = [s for s in slides if min(s.pixels.shape[:2]) < tile]
    if small:
        sizes = ", ".join(f"{s.name} ({s.pixels.shape[1]}x{s.pixels.shape[0]})" for s in small[:5])
        raise ConfigError(
            "tile",
            tile,
            f"at most every thumbnail's shorter side; smaller thumbnails: {sizes}. "
            "Lower the tile size or raise N (--longest)",
        )
    if need_tumor and not any(s.tumor.any() for s in slides):
        raise DatasetError(
            "none of the slides has tumor in its truth, so there is only one class; "
            "a training cohort needs tumor slides with masks or annotations"
        )


@dataclass(frozen=True)
class _ClassTiles:
    """One slide's tiles of one class: the measurements and which tiles belong to the class."""

    stats: TileStats
    member: NDArray[np.bool_]  # (n_rows, n_cols)

    @property
    def keep_background(self) -> NDArray[np.bool_]:
        return np.asarray(self.stats.keep_background & self.member)

    @property
    def entropy(self) -> NDArray[np.float64]:
        return self.stats.entropy

    @property
    def background(self) -> NDArray[np.float64]:
        return self.stats.background

    @property
    def grid(self) -> TileGrid:
        return self.stats.grid


def _measure(
    slides: Sequence[SlideImage], tumor: bool, tile: int, overlap: float, spec: TileSetSpec
) -> list[_ClassTiles | None]:
    """Each slide's tiles of one class at ``overlap`` (None where the class is absent)."""
    sift = spec.tumor_sift if tumor else spec.sift
    rule = spec.raw_rule
    out: list[_ClassTiles | None] = []
    for s in slides:
        present = s.tumor.any() if tumor else not s.tumor.all()
        if not present:
            out.append(None)
            continue
        grid = TileGrid.from_overlap(s.pixels.shape[:2], tile=tile, overlap=overlap)
        if spec.source == "masked":
            stats = measure_tiles(class_image(s, tumor), grid, sift)
            out.append(_ClassTiles(stats, np.ones(grid.grid_shape, bool)))
            continue
        stats = measure_tiles(np.asarray(s.pixels), grid, sift)
        frac = truth_fractions(np.asarray(s.pixels), np.asarray(s.tumor), grid, sift)
        is_tumor, clear = rule.apply(frac)
        member = clear & (is_tumor if tumor else ~is_tumor)
        out.append(_ClassTiles(stats, member))
    return out


def _kept(stats: Sequence[_ClassTiles | None], rails: Rails | None) -> int:
    n = 0
    for st in stats:
        if st is not None:
            keep = st.keep_background
            n += int((keep & rails.admits(st.entropy)).sum() if rails else keep.sum())
    return n


class _Measures:
    """Memoised class-image measurements per overlap."""

    def __init__(self, slides: Sequence[SlideImage], spec: TileSetSpec) -> None:
        self.slides, self.spec = slides, spec
        self._memo: dict[tuple[bool, float], list[_ClassTiles | None]] = {}

    def __call__(self, tumor: bool, overlap: float) -> list[_ClassTiles | None]:
        key = (tumor, overlap)
        if key not in self._memo:
            self._memo[key] = _measure(self.slides, tumor, self.spec.tile, overlap, self.spec)
        return self._memo[key]


def friendly_overlap(tile: int, overlap: float) -> float:
    """``overlap`` moved to a stride that shares a large factor with ``tile``.

    The sift engine's cost grows as ``gcd(T, stride)`` shrinks (T = 96 at 70% overlap gives
    stride 29, gcd 1). Among strides within 10% of ``T * (1 - overlap)`` this takes the one with
    the largest gcd (the nearest on ties) and returns its exact overlap ``1 - stride / T``.
    """
    ideal = tile * (1.0 - overlap)
    lo, hi = max(1, math.floor(ideal * 0.9)), max(1, math.ceil(ideal * 1.1))
    best = min(range(lo, hi + 1), key=lambda s: (-math.gcd(tile, s), abs(s - ideal)))
    return 1.0 - best / tile


def _first_overlap_reaching(
    count: Callable[[float], int], target: int, start: float, tile: int
) -> float:
    """Smallest candidate overlap >= ``start`` whose count reaches ``target`` (else the last)."""
    chosen = friendly_overlap(tile, start)
    for o in OVERLAP_CANDIDATES:
        if o < start:
            continue
        chosen = friendly_overlap(tile, o)
        if count(chosen) >= target:
            break
    return chosen


def build_tileset(
    slides: Sequence[SlideImage],
    spec: TileSetSpec | None = None,
    *,
    rails: Rails | None = None,
    overlaps: dict[str, float] | None = None,
    classes: Sequence[str] | None = None,
) -> TileSet:
    """Cut, sift and balance the tiles of ``slides`` (METHOD.md sections 2-3).

    Parameters
    ----------
    slides
        Training slides on their thumbnail grids (:func:`slidesift.training_data.load_slides`).
    spec
        Tile size, overlaps, sift options, classes, balancing.
    rails
        Use these rails instead of fitting them (a held-out set sifted by the training rails).
    overlaps
        ``{"tumor": o, "non-tumor": o}`` to use (a held-out set cut like the training set);
        overrides the spec's.
    classes
        Class names to use (a held-out set labelled like the training set).

    Returns
    -------
    TileSet

    Raises
    ------
    DatasetError
        No tumor anywhere, or a class with no tile after the sifts (fitting only).
    ConfigError
        The tile is larger than a thumbnail.
    """
    spec = spec or TileSetSpec()
    fitting = rails is None
    _check_slides(slides, spec.tile, need_tumor=fitting)
    names = tuple(classes) if classes is not None else _class_names(slides, spec.classes)
    measures = _Measures(slides, spec)
    given = overlaps or {}
    o_tumor = given.get("tumor", spec.tumor_overlap)
    o_normal = given.get(NON_TUMOR, spec.non_tumor_overlap)
    base = OVERLAP_CANDIDATES[0]

    # Tumor overlap: reach the non-tumor count at its own (given or base) overlap.
    if o_tumor is None:
        start = o_normal if o_normal is not None else friendly_overlap(spec.tile, base)
        target = _kept(measures(False, start), None)
        o_tumor = _first_overlap_reaching(
            lambda o: _kept(measures(True, o), None), target, base, spec.tile
        )
    tumor_stats = measures(True, o_tumor)
    if fitting:
        found = [st.entropy[st.keep_background] for st in tumor_stats if st is not None]
        entropies = np.concatenate(found) if found else np.empty(0)
        if entropies.size == 0:
            raise DatasetError(
                f"no tumor tile of {spec.tile} px keeps at most "
                f"{spec.tumor_sift.max_background:.0%} background; use a smaller tile, a larger "
                "N, or a looser tumor background limit"
            )
        rails = fit_rails(entropies, entropy=spec.sift.entropy, tile=spec.tile)
    assert rails is not None
    n_tumor = _kept(tumor_stats, rails)
    # Non-tumor overlap: reach the tumor count after the rails.
    if o_normal is None:
        o_normal = _first_overlap_reaching(
            lambda o: _kept(measures(False, o), rails), n_tumor, base, spec.tile
        )
    normal_stats = measures(False, o_normal)

    rows: list[tuple[NDArray[Any], ...]] = []
    cut = np.zeros(len(names), np.int64)
    kept_bg = np.zeros(len(names), np.int64)
    n_slides = np.zeros(len(names), np.int64)
    for tumor, stats_list in ((False, normal_stats), (True, tumor_stats)):
        for i, (s, st) in enumerate(zip(slides, stats_list, strict=True)):
            if st is None:
                continue
            k = _label_of(s, tumor, names, spec.classes)
            keep = st.keep_background & rails.admits(st.entropy)
            cut[k] += int(st.member.sum())
            kept_bg[k] += int(st.keep_background.sum())
            n_slides[k] += int(keep.any())
            flat = np.flatnonzero(keep.ravel())
            xy = st.grid.th_xy()[flat]
            rows.append(
                (
                    np.full(flat.size, i, np.int64),
                    xy[:, 0],
                    xy[:, 1],
                    np.full(flat.size, k, np.int64),
                    st.background.ravel()[flat],
                    st.entropy.ravel()[flat],
                )
            )
    columns = [np.concatenate([r[k] for r in rows]) for k in range(6)] if rows else []
    if not columns:
        columns = [np.empty(0, np.int64)] * 4 + [np.empty(0, np.float64)] * 2
    label_all = columns[3]
    sifted = np.bincount(label_all, minlength=len(names))
    if fitting and (sifted == 0).any():
        empty = [names[k] for k in np.flatnonzero(sifted == 0)]
        raise DatasetError(
            f"no {', '.join(empty)} tile survives the sifts, so the cohort has one class only; "
            "add slides of that class, or use a smaller tile or larger N"
        )
    chosen = _balance(label_all, len(names), spec.balance, spec.seed)
    final = np.bincount(label_all[chosen], minlength=len(names))
    summary = tuple(
        ClassSummary(
            name=names[k],
            slides=int(n_slides[k]),
            overlap=float(o_tumor if k > 0 else o_normal),
            cut=int(cut[k]),
            kept_background=int(kept_bg[k]),
            kept_rails=int(sifted[k]),
            final=int(final[k]),
        )
        for k in range(len(names))
    )
    slide_i, th_x, th_y, label, background, entropy = (c[chosen] for c in columns)
    return TileSet(
        spec=spec,
        classes=names,
        rails=rails,
        overlaps={"tumor": float(o_tumor), NON_TUMOR: float(o_normal)},
        slides=tuple(slides),
        slide=slide_i,
        th_x=th_x,
        th_y=th_y,
        label=label,
        background=background.astype(np.float64),
        entropy=entropy.astype(np.float64),
        summary=summary,
    )


def _label_of(s: SlideImage, tumor: bool, names: tuple[str, ...], mode: ClassMode) -> int:
    if not tumor:
        return 0
    if mode == "binary":
        return 1
    if s.label not in names[1:]:
        raise DatasetError(
            f"slide {s.name} has label {s.label!r}, not one of the model's subtypes {names[1:]}"
        )
    return names.index(s.label)


def _balance(
    label: NDArray[np.int64], n_classes: int, mode: BalanceMode, seed: int
) -> NDArray[np.int64]:
    """Indices kept after random removal, in table order."""
    if mode == "none" or label.size == 0:
        return np.arange(label.size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(label == k) for k in range(n_classes)]
        if mode == "all"
        else [np.flatnonzero(label == 0), np.flatnonzero(label > 0)]
    )
    present = [g for g in groups if g.size]
    n = min(g.size for g in present)
    keep = [np.sort(rng.choice(g, size=n, replace=False)) for g in present]
    return np.sort(np.concatenate(keep)).astype(np.int64)
