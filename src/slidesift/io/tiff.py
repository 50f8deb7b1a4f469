"""Write pyramidal, tiled TIFFs that OpenSlide reads (phantom slides, masks, test fixtures).

The writer streams: level 0 is produced one strip of tiles at a time by a caller's function
(:class:`BlockSource`), each strip is encoded and written at once, and halved into the next
level's strip buffer. Lower levels are encoded as their strips fill and parked, already
compressed, in a spill file beside the output until level 0 is complete (a TIFF writes one
level after another). Memory is bounded by one strip of tiles per level, never by the slide:
a 100,000 px wide RGB slide needs about 2 x 256 x 100,000 x 3 bytes of buffers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.io.atomic import atomic_write

__all__ = [
    "BlockSource",
    "halve",
    "pyramid_levels",
    "pyramid_shapes",
    "write_pyramidal_tiff",
    "write_tiled_pyramid",
]

Compression = Literal["jpeg", "deflate", "lzw", "none"]
_TIFF_COMPRESSION: dict[str, Any] = {"jpeg": "jpeg", "deflate": "zlib", "lzw": "lzw", "none": None}


class BlockSource(Protocol):
    """Produces level-0 pixels of a rectangle ``rows y0:y1, columns x0:x1``.

    Returns ``(y1 - y0, x1 - x0, C)`` or ``(y1 - y0, x1 - x0)`` uint8. The writer asks for each
    rectangle once, in row-major order of strips, possibly from several threads at once.
    """

    def __call__(self, y0: int, y1: int, x0: int, x1: int, /) -> NDArray[np.uint8]: ...


def halve(pixels: NDArray[np.uint8], *, nearest: bool = False) -> NDArray[np.uint8]:
    """Half-size image: 2 x 2 box mean (rounded), or every second pixel for label masks.

    Odd sides are completed by repeating the last row or column, so the result has
    ``ceil(H / 2) x ceil(W / 2)`` pixels.

    Parameters
    ----------
    pixels
        ``(H, W)`` or ``(H, W, C)`` uint8.
    nearest
        Take the top-left pixel of each 2 x 2 block (keeps label values).

    Returns
    -------
    numpy.ndarray
        ``(ceil(H/2), ceil(W/2)[, C])`` uint8.
    """
    if nearest:
        return np.ascontiguousarray(pixels[::2, ::2])
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (pixels.ndim - 2)
        pixels = np.pad(pixels, pad, mode="edge")
    acc = pixels[0::2, 0::2].astype(np.uint16)
    acc += pixels[1::2, 0::2]
    acc += pixels[0::2, 1::2]
    acc += pixels[1::2, 1::2]
    acc += 2
    acc >>= 2
    return acc.astype(np.uint8)


def pyramid_shapes(shape: tuple[int, int], *, tile: int = 256) -> list[tuple[int, int]]:
    """``(H, W)`` of level 0 and each halving until the longer side fits in one tile."""
    shapes = [shape]
    while max(shapes[-1]) > tile and min(shapes[-1]) >= 2:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def pyramid_levels(
    pixels: NDArray[np.uint8], *, tile: int = 256, nearest: bool = False
) -> list[NDArray[np.uint8]]:
    """Level 0 and its successive halvings (:func:`halve`) until the longer side fits a tile.

    Parameters
    ----------
    pixels
        ``(H, W)`` or ``(H, W, C)`` uint8 level 0.
    tile
        Stop once the longer side is at most this.
    nearest
        Halve label masks by subsampling instead of averaging.

    Returns
    -------
    list of numpy.ndarray
        Level 0 first.
    """
    levels = [pixels]
    for _ in pyramid_shapes(pixels.shape[:2], tile=tile)[1:]:
        levels.append(halve(levels[-1], nearest=nearest))
    return levels


def _encoder(
    compression: Compression, quality: int, rgb: bool
) -> Callable[[NDArray[np.uint8]], bytes]:
    """The tile codec, called exactly as tifffile calls it so the tags it writes match."""
    import imagecodecs

    if compression == "jpeg":
        if rgb:
            return lambda t: bytes(
                imagecodecs.jpeg_encode(
                    t, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2)
                )
            )
        return lambda t: bytes(imagecodecs.jpeg_encode(t, level=quality))
    if compression == "deflate":
        return lambda t: bytes(imagecodecs.zlib_encode(t.tobytes()))
    if compression == "lzw":
        return lambda t: bytes(imagecodecs.lzw_encode(t.tobytes()))
    return lambda t: t.tobytes()


@dataclass
class _Level:
    """One pyramid level below 0: a strip buffer filling up, and its tiles in the spill file."""

    shape: tuple[int, int]
    buffer: NDArray[np.uint8]
    filled: int = 0
    next_row: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)


class _Pyramid:
    """Encodes strips into tiles and pushes each strip down the pyramid."""

    def __init__(
        self,
        shapes: list[tuple[int, int]],
        channels: int,
        tile: int,
        encode: Callable[[NDArray[np.uint8]], bytes],
        nearest: bool,
        pad_mode: Literal["edge", "constant"],
        spill: BinaryIO,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.tile, self.encode, self.nearest, self.pad_mode = tile, encode, nearest, pad_mode
        self.spill, self.pool, self.channels = spill, pool, channels
        self.levels = [
            _Level(s, np.empty((tile, s[1], *(() if channels == 1 else (channels,))), np.uint8))
            for s in shapes[1:]
        ]

    def tiles_of(self, strip: NDArray[np.uint8]) -> list[bytes]:
        """Encoded tiles of one strip (at most ``tile`` rows), left to right."""
        t = self.tile
        h, w = strip.shape[:2]
        n_cols = -(-w // t)
        pad = [(0, t - h), (0, n_cols * t - w)] + [(0, 0)] * (strip.ndim - 2)
        if pad[0][1] or pad[1][1]:
            strip = np.pad(strip, pad, mode=self.pad_mode)
        parts = [np.ascontiguousarray(strip[:, c * t : (c + 1) * t]) for c in range(n_cols)]
        return list(self.pool.map(self.encode, parts))

    def push(self, depth: int, strip: NDArray[np.uint8]) -> None:
        """Halve a finished strip of level ``depth`` into level ``depth + 1``'s buffer."""
        if depth >= len(self.levels):
            return
        level = self.levels[depth]
        half = halve(strip, nearest=self.nearest)
        rows = half.shape[0]
        level.buffer[level.filled : level.filled + rows] = half
        level.filled += rows
        if level.filled == self.tile or level.next_row + level.filled == level.shape[0]:
            self._flush(depth)

    def _flush(self, depth: int) -> None:
        level = self.levels[depth]
        strip = level.buffer[: level.filled]
        for data in self.tiles_of(strip):
            level.chunks.append((self.spill.tell(), len(data)))
            self.spill.write(data)
        level.next_row += level.filled
        level.filled = 0
        self.push(depth + 1, strip)

    def spilled(self, depth: int) -> Iterator[bytes]:
        """The encoded tiles of level ``depth + 1``, read back from the spill file in order."""
        self.spill.flush()
        for offset, length in self.levels[depth].chunks:
            self.spill.seek(offset)
            yield self.spill.read(length)


def write_tiled_pyramid(
    path: str | os.PathLike[str],
    shape: tuple[int, int],
    source: BlockSource,
    *,
    channels: int = 3,
    mpp: float | None = None,
    tile: int = 256,
    compression: Compression = "jpeg",
    quality: int = 90,
    nearest: bool = False,
    flavor: Literal["generic", "aperio"] = "generic",
    max_levels: int | None = None,
    block_width: int = 4096,
    workers: int | None = None,
    on_rows: Callable[[int, int], None] | None = None,
) -> Path:
    """Stream a tiled pyramidal TIFF that OpenSlide opens, atomically, in bounded memory.

    Parameters
    ----------
    path
        Destination (``.tif``; ``.svs`` with ``flavor="aperio"``).
    shape
        ``(H, W)`` of level 0 in px.
    source
        Gives level-0 pixels of any rectangle (see :class:`BlockSource`).
    channels
        3 for RGB slides, 1 for masks.
    mpp
        Microns per level-0 px, stored in the resolution tags (and the Aperio description).
    tile
        Tile side in px (a multiple of 16).
    compression
        ``jpeg`` for slides; ``deflate``/``lzw``/``none`` for masks (lossless).
    quality
        JPEG quality.
    nearest
        Build lower levels by subsampling (label masks keep their values).
    flavor
        ``generic`` (CAMELYON16-like generic TIFF) or ``aperio`` (an SVS-like description, so
        OpenSlide reports vendor ``aperio`` and ``MPP``).
    max_levels
        Keep at most this many levels (``1`` writes a single-level tiled TIFF).
    block_width
        Columns asked of ``source`` at a time (rounded up to whole tiles).
    workers
        Threads rendering blocks and encoding tiles; default the CPU count.
    on_rows
        Called with ``(rows_done, rows_total)`` of level 0 after each strip (progress bars).

    Returns
    -------
    pathlib.Path
    """
    import tifffile

    if tile % 16 or tile <= 0:
        raise ConfigError("tile", tile, "TIFF tile sides must be positive multiples of 16")
    if channels not in (1, 3):
        raise ConfigError("channels", channels, "1 (mask) or 3 (RGB)")
    h, w = shape
    if h < 1 or w < 1:
        raise ConfigError("shape", shape, "positive (H, W)")
    shapes = pyramid_shapes(shape, tile=tile)[: max_levels or None]
    rgb = channels == 3
    encode = _encoder(compression, quality, rgb)
    block = max(tile, -(-block_width // tile) * tile)
    description = ""
    if flavor == "aperio":
        description = (
            f"Aperio Image Library v12.0.16\r\n{w}x{h} ({tile}x{tile}) JPEG/RGB Q={quality}"
            f"|AppMag = 20|MPP = {mpp if mpp else 0.5}"
        )
    bigtiff = h * w * channels > 2**31

    def page_args(level_w: int) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dtype": np.uint8,
            "tile": (tile, tile),
            "compression": _TIFF_COMPRESSION[compression],
            "compressionargs": {"level": quality} if compression == "jpeg" else {},
            "photometric": "rgb" if rgb else "minisblack",
            "metadata": None,
        }
        if mpp:
            level_mpp = mpp * w / level_w
            args |= {"resolution": (1e4 / level_mpp, 1e4 / level_mpp)}
            args |= {"resolutionunit": "CENTIMETER"}
        return args

    def write(tmp: Path) -> None:
        n_workers = workers or os.cpu_count() or 1
        with (
            ThreadPoolExecutor(n_workers) as pool,
            tempfile.TemporaryFile(dir=tmp.parent, prefix=".spill-") as spill,
            tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw,
        ):
            pyramid = _Pyramid(
                shapes, channels, tile, encode, nearest,
                "edge" if compression == "jpeg" else "constant", spill, pool,
            )  # fmt: skip

            def level0() -> Iterator[bytes]:
                for y0 in range(0, h, tile):
                    y1 = min(h, y0 + tile)
                    spans = [(x0, min(w, x0 + block)) for x0 in range(0, w, block)]
                    parts = pool.map(lambda s, a=y0, b=y1: source(a, b, s[0], s[1]), spans)
                    strip = np.concatenate([_checked(p, y1 - y0, s, channels) for p, s in
                                            zip(parts, spans, strict=True)], axis=1)  # fmt: skip
                    tiles = pyramid.tiles_of(strip)
                    # Push before yielding: the writer stops asking after the last tile.
                    pyramid.push(0, strip)
                    if on_rows is not None:
                        on_rows(y1, h)
                    yield from tiles

            shape0 = (h, w, 3) if rgb else (h, w)
            tw.write(
                level0(), shape=shape0, subfiletype=0, description=description or None,
                **page_args(w),
            )  # fmt: skip
            for depth, (lh, lw) in enumerate(shapes[1:]):
                tw.write(
                    pyramid.spilled(depth), shape=(lh, lw, 3) if rgb else (lh, lw),
                    subfiletype=1, **page_args(lw),
                )  # fmt: skip

    return atomic_write(path, write)


def _checked(
    part: NDArray[np.uint8], rows: int, span: tuple[int, int], channels: int
) -> NDArray[np.uint8]:
    """A source block, checked for the shape and dtype the writer asked for."""
    want = (rows, span[1] - span[0]) + ((channels,) if channels == 3 else ())
    if part.shape != want or part.dtype != np.uint8:
        raise ConfigError("source block", f"{part.dtype}{part.shape}", f"uint8{want}")
    return part


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    pixels: NDArray[np.uint8],
    *,
    mpp: float | None = None,
    tile: int = 256,
    compression: Compression = "jpeg",
    quality: int = 90,
    nearest: bool = False,
    flavor: Literal["generic", "aperio"] = "generic",
    max_levels: int | None = None,
) -> Path:
    """Write an in-memory image as a tiled pyramidal TIFF (see :func:`write_tiled_pyramid`).

    Parameters
    ----------
    path
        Destination (``.tif``; ``.svs`` with ``flavor="aperio"``).
    pixels
        ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8 for masks.
    mpp, tile, compression, quality, nearest, flavor, max_levels
        As in :func:`write_tiled_pyramid`.

    Returns
    -------
    pathlib.Path
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ConfigError("pixels", f"{pixels.dtype}{pixels.shape}", "uint8 (H, W) or (H, W, 3)")
    channels = 3 if pixels.ndim == 3 else 1

    def source(y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint8]:
        return pixels[y0:y1, x0:x1]

    return write_tiled_pyramid(
        path, pixels.shape[:2], source, channels=channels, mpp=mpp, tile=tile,
        compression=compression, quality=quality, nearest=nearest, flavor=flavor,
        max_levels=max_levels,
    )  # fmt: skip
