"""Tile grids on a thumbnail: pure arithmetic from (T, overlap) to tile positions and coverage.

Frames: ``th_*`` thumbnail px; ``t_row, t_col`` the tile's index in the grid; ``l0_*`` level-0
px. Tile ``(t_row, t_col)`` covers thumbnail rows ``t_row * stride .. t_row * stride + T - 1``
and columns ``t_col * stride .. t_col * stride + T - 1``; tiles lie fully inside the image, so a
right/bottom margin narrower than a stride is not covered (as in the paper's code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError

__all__ = ["GridSpec", "TileGrid", "stride_for_overlap"]


def stride_for_overlap(tile: int, overlap: float) -> int:
    """Stride ``s = round(T * (1 - o))`` in px, at least 1.

    Parameters
    ----------
    tile
        Tile side T in px.
    overlap
        Fraction in ``[0, 1)`` that neighbouring tiles share (paper: 0.5 to 0.96).
    """
    if not (isinstance(overlap, (int, float)) and 0.0 <= overlap < 1.0):
        raise ConfigError("overlap", overlap, "a fraction in [0, 1), e.g. 0.8 for 80%")
    # floor(x + 0.5) with a guard against 400 * (1 - 0.8) = 79.99999999999999
    return max(1, math.floor(tile * (1.0 - overlap) + 0.5 + 1e-9))


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 1)


def _tile_side(tile: object) -> int:
    """``tile`` as a positive int, or :class:`ConfigError`."""
    if not _positive_int(tile):
        raise ConfigError("tile", tile, "a positive tile side in px, e.g. 400")
    return int(tile)


@dataclass(frozen=True)
class GridSpec:
    """How to lay tiles over any thumbnail: side ``tile`` and either ``overlap`` or ``stride``.

    The options before there is an image (:class:`TileGrid` is the grid over one). Validated
    here, once: a tile side of at least 1 px, an overlap in ``[0, 1)``, a positive stride.

    Attributes
    ----------
    tile
        Tile side T in thumbnail px.
    overlap
        Fraction of T that neighbours share; ignored when ``stride`` is given.
    stride
        Step between tiles in px, or ``None`` to derive it from ``overlap``.
    """

    tile: int = 400
    overlap: float = 0.8
    stride: int | None = None

    def __post_init__(self) -> None:
        _tile_side(self.tile)
        if self.stride is None:
            stride_for_overlap(self.tile, self.overlap)
        elif not _positive_int(self.stride):
            raise ConfigError("stride", self.stride, "a positive step in px")

    @property
    def step(self) -> int:
        """The stride in px: ``stride`` when given, else from ``overlap``."""
        if self.stride is not None:
            return int(self.stride)
        return stride_for_overlap(self.tile, self.overlap)

    def over(self, shape: tuple[int, int]) -> TileGrid:
        """The grid over an image of ``(H, W)`` px."""
        return TileGrid.from_stride(shape, tile=int(self.tile), stride=self.step)

    def to_dict(self) -> dict[str, Any]:
        """``tile`` and ``stride`` (or ``overlap``), for JSON/TOML."""
        if self.stride is not None:
            return {"tile": int(self.tile), "stride": int(self.stride)}
        return {"tile": int(self.tile), "overlap": float(self.overlap)}


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of side ``tile`` every ``stride`` px over an image of ``shape``.

    Make one with :meth:`from_overlap` or :meth:`from_stride`, which check the geometry.

    Attributes
    ----------
    shape
        ``(H, W)`` of the thumbnail in px.
    tile
        Tile side T in px.
    stride
        Step between neighbouring tiles in px.
    """

    shape: tuple[int, int]
    tile: int
    stride: int

    @classmethod
    def from_stride(cls, shape: tuple[int, int], *, tile: int, stride: int) -> TileGrid:
        """A grid with an explicit stride; raises :class:`ConfigError` on bad geometry."""
        h, w = int(shape[0]), int(shape[1])
        _tile_side(tile)
        if not _positive_int(stride):
            raise ConfigError("stride", stride, "a positive step in px")
        if tile > h or tile > w:
            raise ConfigError(
                "tile",
                tile,
                f"at most the thumbnail's shorter side ({min(h, w)} px of {w} x {h}); "
                "use a smaller tile or a larger downsample target N",
            )
        return cls((h, w), int(tile), int(stride))

    @classmethod
    def from_overlap(cls, shape: tuple[int, int], *, tile: int, overlap: float) -> TileGrid:
        """A grid whose stride is ``round(T * (1 - overlap))`` (:func:`stride_for_overlap`)."""
        _tile_side(tile)
        return cls.from_stride(shape, tile=tile, stride=stride_for_overlap(int(tile), overlap))

    @property
    def overlap(self) -> float:
        """Fraction of a tile's side shared with its neighbour, ``1 - stride / tile`` (>= 0)."""
        return max(0.0, 1.0 - self.stride / self.tile)

    @property
    def n_rows(self) -> int:
        """Tiles per column of the grid."""
        return (self.shape[0] - self.tile) // self.stride + 1

    @property
    def n_cols(self) -> int:
        """Tiles per row of the grid."""
        return (self.shape[1] - self.tile) // self.stride + 1

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)``: the shape of every per-tile array."""
        return (self.n_rows, self.n_cols)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    @property
    def block(self) -> int:
        """``gcd(tile, stride)``: the largest square that tiles every tile and every step."""
        return math.gcd(self.tile, self.stride)

    @property
    def covered_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the region the tiles cover, from the top-left corner."""
        return (
            (self.n_rows - 1) * self.stride + self.tile,
            (self.n_cols - 1) * self.stride + self.tile,
        )

    def th_xy(self) -> NDArray[np.int64]:
        """Top-left corners, ``(n_tiles, 2)`` int64 of ``(th_x, th_y)``, row-major order."""
        t_row, t_col = np.divmod(np.arange(len(self), dtype=np.int64), self.n_cols)
        return np.stack([t_col * self.stride, t_row * self.stride], axis=1)

    def l0_boxes(self, scale: tuple[float, float]) -> NDArray[np.float64]:
        """Tile boxes in level-0 px, ``(n_tiles, 4)`` of ``(l0_x, l0_y, l0_w, l0_h)``.

        Parameters
        ----------
        scale
            ``(sx, sy)`` level-0 px per thumbnail px (:attr:`slidesift.Thumb.scale`).
        """
        xy = self.th_xy().astype(np.float64)
        sx, sy = scale
        n = len(self)
        return np.column_stack(
            [xy[:, 0] * sx, xy[:, 1] * sy, np.full(n, self.tile * sx), np.full(n, self.tile * sy)]
        )

    def coverage_blocks(self, values: NDArray[np.generic]) -> NDArray[np.float64]:
        """:meth:`coverage` on the grid of ``b x b`` blocks (``b`` = :attr:`block`).

        Every tile edge falls on a multiple of ``b``, so coverage is constant on each block:
        this is the whole answer at ``1/b**2`` of the cost. Blocks past the covered region
        (a right/bottom margin) hold 0. Expand with :meth:`expand`.

        Returns
        -------
        numpy.ndarray
            ``(ceil(H / b), ceil(W / b))`` float64.
        """
        v = np.asarray(values, dtype=np.float64)
        if v.shape != self.grid_shape:
            raise ConfigError("values", v.shape, f"an array of shape {self.grid_shape}")
        b = self.block
        h, w = -(-self.shape[0] // b), -(-self.shape[1] // b)
        s, t = self.stride // b, self.tile // b
        diff = np.zeros((h + 1, w + 1), dtype=np.float64)
        r0 = np.arange(self.n_rows) * s
        c0 = np.arange(self.n_cols) * s
        # Corners of each tile's box: +v at (r0, c0) and (r0+t, c0+t), -v at the other two.
        # Within one corner the positions are distinct, so plain fancy-index adds are exact.
        for dr, dc, sign in ((0, 0, 1.0), (t, t, 1.0), (0, t, -1.0), (t, 0, -1.0)):
            diff[np.ix_(r0 + dr, c0 + dc)] += sign * v
        return np.cumsum(np.cumsum(diff, axis=0), axis=1)[:h, :w]

    def expand(self, blocks: NDArray[np.generic]) -> NDArray[Any]:
        """A block-grid array (:meth:`coverage_blocks`) at pixel resolution, ``(H, W)``."""
        b = self.block
        out = np.repeat(np.repeat(np.asarray(blocks), b, axis=0), b, axis=1)
        return out[: self.shape[0], : self.shape[1]]

    def coverage(self, values: NDArray[np.generic]) -> NDArray[np.float64]:
        """Per-pixel sum of the values of the tiles covering each pixel.

        A 2-D difference array on the block grid, expanded to pixels: O(tiles + pixels),
        whatever the overlap.

        Parameters
        ----------
        values
            ``(n_rows, n_cols)`` per-tile values (bool counts as 0/1).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` float64 on the thumbnail grid.
        """
        return np.asarray(self.expand(self.coverage_blocks(values)), dtype=np.float64)

    def location_map(self, keep: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """The union of the kept tiles (paper Fig. 1c): ``(H, W)`` bool on the thumbnail grid."""
        return np.asarray(self.expand(self.coverage_blocks(np.asarray(keep, bool)) > 0.5))
