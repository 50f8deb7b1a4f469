"""Training tile sets as data: the options, the slides on their thumbnail grids, the table of tiles.

A :class:`TileSet` never holds tile pixels: it is a table of ``(slide, th_x, th_y, label)`` over
the slides' (cached) thumbnails and truth masks, and :meth:`TileSet.tile` cuts one tile, with
the other class's pixels set to black (``masked`` tiles), when the DataLoader asks for it.
:func:`slidesift.dataset.build_tileset` makes one from training slides.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.downsample import Downsample
from slidesift.rails import Rails
from slidesift.sift import SiftSpec
from slidesift.tile_truth import RawTileRule

__all__ = [
    "NON_TUMOR",
    "BalanceMode",
    "ClassMode",
    "ClassSummary",
    "SlideImage",
    "TileSet",
    "TileSetSpec",
    "TileSource",
    "class_image",
]

#: Name of class 0 in every tile set.
NON_TUMOR = "non-tumor"

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
