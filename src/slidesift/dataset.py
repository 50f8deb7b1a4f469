"""Training tile sets: tumor and non-tumor images, per-class overlaps, both sifts, balancing.

METHOD.md sections 2-3, for a cohort of training slides::

    thumbnail + truth --> tumor image (outside tumor black)  --tiles @ tumor overlap-->
                      --> non-tumor image (tumor black)      --tiles @ non-tumor overlap-->
    tumor tiles --background sift--> fit rails (min, max entropy)
    non-tumor tiles --background sift--> rails sift
    both --random removal--> equal classes --> TileSet (a table of coordinates)

A :class:`TileSet` never holds tile pixels: it is a table of ``(slide, th_x, th_y, label)`` over
the slides' (cached) thumbnails and truth masks, and :meth:`TileSet.tile` cuts one tile, with
the other class's pixels set to black, when the DataLoader asks for it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, DatasetError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.downsample import Downsample
from slidesift.rails import Rails, fit_rails
from slidesift.sift import SiftSpec, TileStats, measure_tiles
from slidesift.tile_truth import RawTileRule, truth_fractions
from slidesift.tiles import TileGrid

__all__ = [
    "NON_TUMOR",
    "OVERLAP_CANDIDATES",
    "ClassSummary",
    "DatasetError",
    "SlideImage",
    "TileSet",
    "TileSetSpec",
    "build_tileset",
    "class_image",
    "friendly_overlap",
]

#: Name of class 0 in every tile set.
NON_TUMOR = "non-tumor"
#: Overlaps tried, in order, when a class needs more tiles (the paper ran 50% to 96%).
OVERLAP_CANDIDATES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96)

ClassMode = Literal["binary", "subtype"]
BalanceMode = Literal["all", "tumor", "none"]
TileSource = Literal["masked", "raw"]



@dataclass(frozen=True)
class TileSetSpec:
    """How a training tile set is cut (every default is METHOD.md's).

    Attributes
    ----------
    tile
        Tile side T in thumbnail px (paper: 400 for PAIP2020, 200 for CAMELYON16).
    longest, mpp
        Downsample target: longer side N in px (paper: 6000), or microns per px.
    tumor_overlap, non_tumor_overlap
        Overlap of each class's tiles; ``None`` chooses them so the class counts come out
        similar (the plentiful class at 50%, the scarce one at the smallest overlap of
        :data:`OVERLAP_CANDIDATES` that matches it).
    sift
        Background and entropy options for every tile.
    tumor_max_background
        Background limit for the tumor tiles the rails are fitted on; ``None`` is
        ``sift.max_background``. A tumor tile at the tumor's edge is partly black (outside the
        tumor), which lowers its entropy: at 0.5 the rails' ``lo`` sits near 4.3-4.5 bits, at
        0.1 near the paper's 6.4 (docs/design.md).
    classes
        ``binary`` (non-tumor, tumor) or ``subtype`` (non-tumor plus one class per slide label,
        e.g. MSI-H / MSI-L).
    balance
        ``all``: random removal until every class has the smallest class's count (METHOD.md);
        ``tumor``: non-tumor vs all tumor tiles pooled (subtype proportions kept); ``none``.
    seed
        Seed of the random removal.
    source
        ``masked`` (the paper's): tiles are cut from the tumor image and the non-tumor image,
        the other class blacked out. ``raw``: tiles are cut from the slide as segmentation
        sees it and labelled by their truth fraction (:class:`RawTileRule`: tumor when at
        least ``raw_threshold`` of the tile's tissue is truth, tiles within ``raw_margin`` of
        it left out).
    raw_threshold, raw_margin
        The labelling rule of ``raw`` tiles.
    """

    tile: int = 400
    longest: int | None = 6000
    mpp: float | None = None
    tumor_overlap: float | None = None
    non_tumor_overlap: float | None = None
    sift: SiftSpec = field(default_factory=SiftSpec)
    tumor_max_background: float | None = None
    classes: ClassMode = "binary"
    balance: BalanceMode = "all"
    seed: int = 0
    source: TileSource = "masked"
    raw_threshold: float = 0.5
    raw_margin: float = 0.25

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ConfigError("tile", self.tile, "a positive number of px, e.g. 400")
        self.downsample  # noqa: B018 - validates longest/mpp
        for name in ("tumor_overlap", "non_tumor_overlap"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(name, value, "a fraction in [0, 1), or None to choose")
        tmb = self.tumor_max_background
        if tmb is not None and not 0.0 <= tmb <= 1.0:
            raise ConfigError("tumor_max_background", tmb, "a fraction in [0, 1]")
        if self.classes not in ("binary", "subtype"):
            raise ConfigError("classes", self.classes, "'binary' or 'subtype'")
        if self.balance not in ("all", "tumor", "none"):
            raise ConfigError("balance", self.balance, "'all', 'tumor' or 'none'")
        if self.source not in ("masked", "raw"):
            raise ConfigError("source", self.source, "'masked' (paper) or 'raw'")
        self.raw_rule  # noqa: B018 - validates the rule

    @property
    def downsample(self) -> Downsample:
        """The thumbnails' downsample target (``longest`` or ``mpp``)."""
        return Downsample(longest=self.longest, mpp=self.mpp)

    @property
    def raw_rule(self) -> RawTileRule:
        """The labelling rule of ``raw`` tiles."""
        return RawTileRule(self.raw_threshold, self.raw_margin)

    @property
    def tumor_sift(self) -> SiftSpec:
        """The sift options of tumor tiles (their own background limit)."""
        if self.tumor_max_background is None:
            return self.sift
        return replace(self.sift, max_background=self.tumor_max_background)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON/TOML."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileSetSpec:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["sift"] = SiftSpec(**values.get("sift", {}))
        return cls(**values)


@dataclass(frozen=True)
class SlideImage:
    """One slide on its thumbnail grid, ready to tile.

    Attributes
    ----------
    name
        The slide's id (file name without suffix).
    label
        Its slide-level label (subtype or ``normal``), or ``None``.
    pixels
        ``(H, W, 3)`` uint8 RGB thumbnail, ``[th_y, th_x]`` (often memory-mapped from the cache).
    tumor
        ``(H, W)`` bool tumor mask on the same grid.
    key
        Cache key of the thumbnail (content digest and target), for provenance.
    um_per_px
        Microns per thumbnail px (mean of x and y), ``None`` when the slide has no MPP.
    l0_longest
        Longer side of the slide's level 0 in px (``None``: unknown).
    """

    name: str
    label: str | None
    pixels: NDArray[np.uint8] = field(repr=False)
    tumor: NDArray[np.bool_] = field(repr=False)
    key: str = ""
    um_per_px: float | None = None
    l0_longest: int | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3 or self.pixels.shape[2] != 3 or self.pixels.dtype != np.uint8:
            raise ConfigError("pixels", self.pixels.shape, "(H, W, 3) uint8 RGB")
        if self.tumor.shape != self.pixels.shape[:2]:
            raise ConfigError(
                "tumor",
                self.tumor.shape,
                f"a mask of the thumbnail's shape {self.pixels.shape[:2]}",
            )


def class_image(slide: SlideImage, tumor: bool) -> NDArray[np.uint8]:
    """The tumor image (``tumor=True``: outside tumor black) or the non-tumor image.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, a new array.
    """
    inside = slide.tumor if tumor else ~np.asarray(slide.tumor)
    return np.where(inside[..., None], slide.pixels, np.uint8(0))


@dataclass(frozen=True)
class ClassSummary:
    """What each stage did to one class's tiles (printed after building a set)."""

    name: str
    slides: int
    overlap: float
    cut: int
    kept_background: int
    kept_rails: int
    final: int

    def fractions(self) -> tuple[float, float]:
        """Fraction kept by the background sift (of cut), and by the rails (of those)."""
        bg = self.kept_background / self.cut if self.cut else 0.0
        rails = self.kept_rails / self.kept_background if self.kept_background else 0.0
        return bg, rails


@dataclass(frozen=True)
class TileSet:
    """A table of tiles over a list of slide images.

    Attributes
    ----------
    spec
        How the set was cut.
    classes
        Class names; index 0 is non-tumor.
    rails
        Rails every tile passes (fitted on this set's tumor tiles, or given).
    overlaps
        ``{"tumor": o, "non-tumor": o}`` used to cut each class.
    slides
        The slide images the table points into.
    slide, th_x, th_y, label
        ``(n,)`` int arrays: slide index, tile top-left corner in thumbnail px, class index.
    background, entropy
        ``(n,)`` float64 measures of each tile (of its class image).
    summary
        One :class:`ClassSummary` per class.
    """

    spec: TileSetSpec
    classes: tuple[str, ...]
    rails: Rails
    overlaps: dict[str, float]
    slides: tuple[SlideImage, ...] = field(repr=False)
    slide: NDArray[np.int64] = field(repr=False)
    th_x: NDArray[np.int64] = field(repr=False)
    th_y: NDArray[np.int64] = field(repr=False)
    label: NDArray[np.int64] = field(repr=False)
    background: NDArray[np.float64] = field(repr=False)
    entropy: NDArray[np.float64] = field(repr=False)
    summary: tuple[ClassSummary, ...] = ()

    def __len__(self) -> int:
        return int(self.label.size)

    def counts(self) -> NDArray[np.int64]:
        """``(n_classes,)`` tiles per class."""
        return np.bincount(self.label, minlength=len(self.classes)).astype(np.int64)

    def tile(self, i: int) -> NDArray[np.uint8]:
        """Cut tile ``i``: ``(T, T, 3)`` uint8, from its class image (``masked``: the other
        class black) or from the slide (``raw``)."""
        s = self.slides[int(self.slide[i])]
        t = self.spec.tile
        y, x = int(self.th_y[i]), int(self.th_x[i])
        pixels = np.asarray(s.pixels[y : y + t, x : x + t])
        if self.spec.source == "raw":
            return pixels
        inside = np.asarray(s.tumor[y : y + t, x : x + t])
        if self.label[i] == 0:
            inside = ~inside
        return np.where(inside[..., None], pixels, np.uint8(0))

    def table_csv(self) -> str:
        """The tile table as CSV text: slide, th_x, th_y, class, label, background, entropy."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["slide", "th_x", "th_y", "class", "label", "background", "entropy"])
        for i in range(len(self)):
            w.writerow(
                [
                    self.slides[int(self.slide[i])].name,
                    int(self.th_x[i]),
                    int(self.th_y[i]),
                    self.classes[int(self.label[i])],
                    int(self.label[i]),
                    f"{self.background[i]:.6f}",
                    f"{self.entropy[i]:.6f}",
                ]
            )
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`table_csv` atomically."""
        return atomic_write_text(path, self.table_csv())

    def export_png(
        self, folder: str | os.PathLike[str], *, on_tile: Callable[[int], None] | None = None
    ) -> Path:
        """Write every tile as PNG in an ImageFolder layout: ``folder/<class>/<slide>_x_y.png``."""
        from slidesift.io.outputs import write_png

        root = Path(folder)
        for name in self.classes:
            (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(len(self)):
            name = self.slides[int(self.slide[i])].name
            cls = self.classes[int(self.label[i])]
            write_png(root / cls / f"{name}_{self.th_x[i]}_{self.th_y[i]}.png", self.tile(i))
            if on_tile is not None:
                on_tile(i)
        return root


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
