"""The sift engine: background fraction and Shannon entropy of every tile of a grid at once.

Pipeline position::

    Thumb.pixels --TileGrid--> measure_tiles --> TileStats --sift(rails)--> SiftResult (keep)

How it is fast and exact: every tile of a grid is a union of ``b x b`` blocks with
``b = gcd(T, stride)``. One pass over the pixels histograms each block (a compiled loop); a
sliding window over block rows and prefix sums over block columns then give each tile's exact
256-bin histograms with a few vector operations per tile row. Memory holds one window of block
rows, not the whole block grid. Every statistic is a function of the histograms, so the
result equals the naive per-tile computation (:func:`measure_tiles_reference`) exactly.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.rails import EntropyMode, Rails
from slidesift.tiles import TileGrid

__all__ = [
    "SiftResult",
    "SiftSpec",
    "TileStats",
    "background_from_histograms",
    "entropy_bits",
    "measure_tiles",
    "measure_tiles_reference",
    "sift",
    "to_gray",
    "warm_up",
]

BackgroundMode = Literal["gray-limits", "peak-frequency"]


@dataclass(frozen=True)
class SiftSpec:
    """How tiles are measured and which count as background (METHOD.md section 3).

    Attributes
    ----------
    background
        ``gray-limits``: a pixel is background when its 8-bit grey value is below ``gray_low``
        or above ``gray_high``. ``peak-frequency`` (for stain-normalised images): the
        background count is the population of the tile's ``peak_k`` most frequent grey values.
    gray_low, gray_high
        Grey limits; the paper's 15 and 235.
    max_background
        A tile is dropped when its background fraction exceeds this (paper: 0.5, majority).
    peak_k
        Number of most frequent grey values summed by ``peak-frequency``.
    entropy
        ``rgb``: entropy over all RGB values of the tile (the paper's code); ``gray``: over its
        grey values. Both are at most 8 bits.
    """

    background: BackgroundMode = "gray-limits"
    gray_low: int = 15
    gray_high: int = 235
    max_background: float = 0.5
    peak_k: int = 5
    entropy: EntropyMode = "rgb"

    def __post_init__(self) -> None:
        if self.background not in ("gray-limits", "peak-frequency"):
            raise ConfigError("background", self.background, "'gray-limits' or 'peak-frequency'")
        if self.entropy not in ("rgb", "gray"):
            raise ConfigError("entropy", self.entropy, "'rgb' (paper) or 'gray'")
        if not 0 <= self.gray_low <= self.gray_high <= 255:
            raise ConfigError(
                "gray_low/gray_high", (self.gray_low, self.gray_high), "0 <= low <= high <= 255"
            )
        if not 0.0 <= self.max_background <= 1.0:
            raise ConfigError("max_background", self.max_background, "a fraction in [0, 1]")
        if not 1 <= self.peak_k <= 256:
            raise ConfigError("peak_k", self.peak_k, "an integer in [1, 256]")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON/TOML."""
        return asdict(self)


@dataclass(frozen=True)
class TileStats:
    """Per-tile measurements over a grid; arrays are ``(n_rows, n_cols)``, ``[t_row, t_col]``.

    Attributes
    ----------
    grid
        The grid measured.
    spec
        How it was measured.
    background
        float64 background fraction in ``[0, 1]``.
    entropy
        float64 Shannon entropy in bits, ``[0, 8]``.
    """

    grid: TileGrid
    spec: SiftSpec
    background: NDArray[np.float64]
    entropy: NDArray[np.float64]

    @property
    def keep_background(self) -> NDArray[np.bool_]:
        """Tiles whose background fraction is at most ``spec.max_background``."""
        return np.asarray(self.background <= self.spec.max_background)


@dataclass(frozen=True)
class SiftResult:
    """Which tiles survive the background sift and the entropy rails.

    Attributes
    ----------
    stats
        The measurements.
    rails
        The rails applied, or ``None`` (background only, the paper's "no rails" ablation).
    keep_background, keep_rails
        ``(n_rows, n_cols)`` bool: passes each test on its own.
    """

    stats: TileStats
    rails: Rails | None
    keep_background: NDArray[np.bool_]
    keep_rails: NDArray[np.bool_] = field(repr=False)

    @property
    def keep(self) -> NDArray[np.bool_]:
        """``(n_rows, n_cols)`` bool: tiles that pass both sifts."""
        return np.asarray(self.keep_background & self.keep_rails)

    def summary(self) -> dict[str, float | int]:
        """Counts and fractions kept by each sift, for printing and reports."""
        n = int(self.keep.size)
        n_bg = int(self.keep_background.sum())
        n_both = int(self.keep.sum())
        return {
            "tiles": n,
            "kept_background": n_bg,
            "kept": n_both,
            "fraction_kept_background": n_bg / n if n else 0.0,
            "fraction_kept_rails_of_background": n_both / n_bg if n_bg else 0.0,
            "fraction_kept": n_both / n if n else 0.0,
        }


def to_gray(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """8-bit grey of RGB pixels: ITU-R BT.601 luma rounded as OpenCV computes it.

    Parameters
    ----------
    rgb
        ``(..., W, 3)`` uint8.

    Returns
    -------
    numpy.ndarray
        ``(..., W)`` uint8.
    """
    if rgb.ndim == 2:
        return rgb
    flat = rgb.reshape(-1, rgb.shape[-2], 3) if rgb.ndim != 3 else rgb
    gray = cv2.cvtColor(np.ascontiguousarray(flat), cv2.COLOR_RGB2GRAY)
    return np.asarray(gray, dtype=np.uint8).reshape(rgb.shape[:-1])


@lru_cache(maxsize=8)
def _xlog2x(total: int) -> NDArray[np.float64]:
    """``c * log2(c)`` for ``c = 0 .. total`` (``0 log 0 = 0``)."""
    c = np.arange(total + 1, dtype=np.float64)
    out = np.zeros_like(c)
    out[1:] = c[1:] * np.log2(c[1:])
    return out


def entropy_bits(hist: NDArray[np.integer[Any]]) -> NDArray[np.float64]:
    """Shannon entropy in bits of each histogram: ``H = -sum p log2 p``.

    Parameters
    ----------
    hist
        ``(..., 256)`` integer counts; every histogram must have the same total ``N > 0``.

    Returns
    -------
    numpy.ndarray
        ``(...)`` float64, computed as ``log2 N - sum(c log2 c) / N``.
    """
    h = np.asarray(hist)
    total = int(h[(0,) * (h.ndim - 1)].sum()) if h.size else 1
    table = _xlog2x(total)
    ent = np.log2(total) - table[h].sum(axis=-1) / total
    return np.asarray(np.maximum(ent, 0.0), dtype=np.float64)


def background_from_histograms(
    gray_hist: NDArray[np.integer[Any]], spec: SiftSpec
) -> NDArray[np.float64]:
    """Background fraction of each tile from its grey histogram ``(..., 256)``."""
    h = np.asarray(gray_hist)
    total = h.sum(axis=-1)
    if spec.background == "gray-limits":
        count = h[..., : spec.gray_low].sum(axis=-1) + h[..., spec.gray_high + 1 :].sum(axis=-1)
    else:
        count = np.sort(h, axis=-1)[..., -spec.peak_k :].sum(axis=-1)
    return np.asarray(count / np.maximum(total, 1), dtype=np.float64)


def _check_pixels(pixels: NDArray[np.uint8], grid: TileGrid) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ConfigError("pixels", f"{pixels.dtype}{pixels.shape}", "(H, W, 3) uint8 RGB")
    if pixels.shape[:2] != grid.shape:
        raise ConfigError("grid", grid.shape, f"a grid made for the image shape {pixels.shape[:2]}")


def measure_tiles(
    pixels: NDArray[np.uint8],
    grid: TileGrid,
    spec: SiftSpec | None = None,
    *,
    workers: int = 1,
) -> TileStats:
    """Background fraction and entropy of every tile of ``grid`` over ``pixels``.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB thumbnail, ``[th_y, th_x]``.
    grid
        Tile grid over the same ``(H, W)``.
    spec
        Measurement options; default :class:`SiftSpec()`.
    workers
        Threads, each taking a contiguous band of tile rows (the compiled loop releases the
        GIL). Default 1: one core.

    Returns
    -------
    TileStats
        ``(n_rows, n_cols)`` arrays, equal to :func:`measure_tiles_reference`'s.
    """
    spec = spec or SiftSpec()
    _check_pixels(pixels, grid)
    n_rows, n_cols = grid.grid_shape
    background = np.empty((n_rows, n_cols), dtype=np.float64)
    entropy = np.empty((n_rows, n_cols), dtype=np.float64)
    n_parts = max(1, min(int(workers), n_rows))
    bounds = np.linspace(0, n_rows, n_parts + 1).astype(int)
    parts = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]

    def run(part: tuple[int, int]) -> None:
        _measure_rows(pixels, grid, spec, part, background, entropy)

    if len(parts) == 1:
        run(parts[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            list(pool.map(run, parts))
    return TileStats(grid, spec, background, entropy)


_WARMED: dict[SiftSpec, threading.Thread] = {}
_WARMED_LOCK = threading.Lock()


def warm_up(spec: SiftSpec | None = None) -> threading.Thread:
    """Load :func:`measure_tiles`' compiled kernels for ``spec`` on a background thread.

    numba loads a cached kernel on its first call in a process: about 0.5 s on a 2-core VM,
    five times the sift of a 6000-px slide itself. Started before a slide is read, the load
    overlaps the read (decoding and the slide probe release the GIL). Once per ``spec`` and
    process; the thread measures two small images, one that the grid covers exactly and one
    that it does not (their pixel rows reach the kernel as contiguous and as strided arrays,
    two compiled signatures), and :func:`measure_tiles` stays correct whether it has finished
    or not (numba serialises compilation).

    Parameters
    ----------
    spec
        The measurement options the slides will be sifted with (they decide which kernel and
        which compiled signature); default :class:`SiftSpec()`.

    Returns
    -------
    threading.Thread
        The (daemon) loading thread, started; join it to wait for the load.
    """
    spec = spec or SiftSpec()
    with _WARMED_LOCK:
        thread = _WARMED.get(spec)
        if thread is None:
            thread = threading.Thread(
                target=_measure_small, args=(spec,), name="slidesift-sift-warm-up", daemon=True
            )
            thread.start()
            _WARMED[spec] = thread
    return thread


def _measure_small(spec: SiftSpec) -> None:
    """Measure a 64 x 64 and a 64 x 72 image at T 32, stride 16 (grid widths 64 and 64 px)."""
    for width in (64, 72):
        tiny = np.full((64, width, 3), 128, np.uint8)
        measure_tiles(tiny, TileGrid.from_stride(tiny.shape[:2], tile=32, stride=16), spec)


def _measure_rows(
    pixels: NDArray[np.uint8],
    grid: TileGrid,
    spec: SiftSpec,
    rows: tuple[int, int],
    background: NDArray[np.float64],
    entropy: NDArray[np.float64],
) -> None:
    """Fill tile rows ``rows[0] .. rows[1] - 1`` of the outputs (one sliding window).

    Per block row the engine keeps two integer arrays: the entropy histograms
    ``(n_blocks, 256)`` and the background statistic, either grey histograms
    ``(n_blocks, 256)`` or, for grey limits with RGB entropy, background counts ``(n_blocks, 1)``.
    """
    from slidesift._kernels import block_row_histograms, block_row_rgb_and_limits

    b = grid.block
    k = grid.stride // b  # block rows per tile step
    m = grid.tile // b  # block rows per tile side
    cov_h, cov_w = grid.covered_shape
    n_blocks = cov_w // b
    with_rgb = spec.entropy == "rgb"
    counts_only = with_rgb and spec.background == "gray-limits"
    region = pixels[:cov_h, :cov_w]
    cache: dict[int, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}

    def block_row(i: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        if i not in cache:
            band = region[i * b : (i + 1) * b]
            flat, gray = band.reshape(b, cov_w * 3), to_gray(band)
            rgb_h = np.zeros((n_blocks, 256), dtype=np.int64)
            if counts_only:
                counts = np.zeros((n_blocks, 1), dtype=np.int64)
                block_row_rgb_and_limits(
                    flat, gray, b, n_blocks, spec.gray_low, spec.gray_high, rgb_h, counts[:, 0]
                )
                cache[i] = (rgb_h, counts)
            else:
                gray_h = np.zeros((n_blocks, 256), dtype=np.int64)
                block_row_histograms(flat, gray, b, n_blocks, rgb_h, gray_h, with_rgb)
                cache[i] = (rgb_h if with_rgb else gray_h, gray_h)
        return cache[i]

    def window_sum(first: int, last: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        ent: NDArray[np.int64] | None = None
        bg: NDArray[np.int64] | None = None
        for i in range(first, last):
            e, g = block_row(i)
            ent = e.copy() if ent is None else ent + e
            bg = g.copy() if bg is None else bg + g
        assert ent is not None and bg is not None
        return ent, bg

    col_first = np.arange(grid.n_cols) * k
    first_row, end_row = rows
    win_ent, win_bg = window_sum(first_row * k, first_row * k + m)
    for t_row in range(first_row, end_row):
        top = t_row * k
        if t_row > first_row:
            if k >= m:
                win_ent, win_bg = window_sum(top, top + m)
            else:
                add_e, add_b = window_sum(top - k + m, top + m)
                sub_e, sub_b = window_sum(top - k, top)
                win_ent += add_e - sub_e
                win_bg += add_b - sub_b
            for i in [i for i in cache if i < top]:
                del cache[i]
        entropy[t_row] = entropy_bits(_tile_sums(win_ent, col_first, m))
        if counts_only:
            counts = _tile_sums(win_bg, col_first, m)[:, 0]
            background[t_row] = counts / float(grid.tile * grid.tile)
        else:
            background[t_row] = background_from_histograms(_tile_sums(win_bg, col_first, m), spec)


def _tile_sums(
    window: NDArray[np.int64], col_first: NDArray[np.int64], m: int
) -> NDArray[np.int64]:
    """Sum ``m`` block columns from each ``col_first``: ``(n_cols, window.shape[1])``."""
    prefix = np.zeros((window.shape[0] + 1, window.shape[1]), dtype=np.int64)
    np.cumsum(window, axis=0, out=prefix[1:])
    return prefix[col_first + m] - prefix[col_first]


def tile_histograms_reference(
    pixels: NDArray[np.uint8], grid: TileGrid, spec: SiftSpec | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The naive per-tile histograms: ``(n_rows, n_cols, 256)`` entropy and grey histograms.

    The obvious loop over tiles with :func:`numpy.bincount`; the reference the engine is
    tested against.
    """
    spec = spec or SiftSpec()
    _check_pixels(pixels, grid)
    t = grid.tile
    ent = np.empty((*grid.grid_shape, 256), dtype=np.int64)
    gray = np.empty_like(ent)
    for t_row in range(grid.n_rows):
        for t_col in range(grid.n_cols):
            y, x = t_row * grid.stride, t_col * grid.stride
            tile = pixels[y : y + t, x : x + t]
            g = np.bincount(to_gray(tile).ravel(), minlength=256)
            gray[t_row, t_col] = g
            ent[t_row, t_col] = (
                np.bincount(tile.ravel(), minlength=256) if spec.entropy == "rgb" else g
            )
    return ent, gray


def measure_tiles_reference(
    pixels: NDArray[np.uint8], grid: TileGrid, spec: SiftSpec | None = None
) -> TileStats:
    """:func:`measure_tiles` computed tile by tile from :func:`tile_histograms_reference`."""
    spec = spec or SiftSpec()
    ent, gray = tile_histograms_reference(pixels, grid, spec)
    return TileStats(grid, spec, background_from_histograms(gray, spec), entropy_bits(ent))


def sift(stats: TileStats, rails: Rails | None = None) -> SiftResult:
    """Apply the background sift and, when given, the entropy rails.

    Parameters
    ----------
    stats
        Measurements from :func:`measure_tiles`.
    rails
        Entropy rails fitted on tumor tiles (:func:`slidesift.rails.fit_rails`), or ``None``
        to sift by background only.

    Returns
    -------
    SiftResult

    Raises
    ------
    ConfigError
        The rails were fitted in another entropy mode or at another tile size.
    """
    keep_bg = stats.keep_background
    if rails is None:
        keep_rails = np.ones_like(keep_bg)
    else:
        if rails.entropy != stats.spec.entropy:
            raise ConfigError(
                "entropy",
                stats.spec.entropy,
                f"the rails were fitted on {rails.entropy!r} entropy; measure tiles the same way",
            )
        rails.require_tile(stats.grid.tile)
        keep_rails = rails.admits(stats.entropy)
    return SiftResult(stats, rails, keep_bg, keep_rails)
