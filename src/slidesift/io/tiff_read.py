"""Read the tiles of TIFF-family slides (Aperio SVS, generic pyramidal TIFF) without OpenSlide.

tifffile reads the layout once (tile offsets and sizes, JPEG tables, compression), the raw tiles
are read with ``pread`` and decoded by imagecodecs on the calling threads (it releases the GIL),
and the parts inside the requested region are pasted into it. :class:`slidesift.io.slide.Slide`
uses this reader where it gives OpenSlide's pixels exactly (``reader="auto"``); either reader can
be forced (``reader=`` or the ``SLIDESIFT_READER`` environment variable).

Frames: ``lv_*`` are pixels of one pyramid level; tiles are indexed ``(t_row, t_col)`` on that
level's tile grid, tile ``(r, c)`` covering level px ``[c * tw, (c + 1) * tw) x
[r * th, (r + 1) * th)``. Sizes are ``(w, h)``; arrays are indexed ``[row, col]``.

What is decoded, as OpenSlide 4 decodes it (``openslide-decode-tiff.c``, ``-jp2k.c``):

* JPEG, 3 samples, photometric RGB or YCbCr: libjpeg(-turbo) with the TIFF's JPEG tables and
  the JPEG colour space *forced* from the photometric tag (Aperio's JPEG tiles are RGB-coded
  and say so only there), default IDCT and fancy upsampling, as OpenSlide's direct path;
* JPEG 2000 with RGB components (Aperio compression 33005), through OpenJPEG;
* lossless tiles (none, LZW, Deflate; horizontal predictor), RGB or 8-bit grey (grey is
  repeated into R, G, B as libtiff's RGBA reader does).

Everything else (Aperio's YCbCr JPEG 2000 33003, which OpenSlide converts with its own tables;
16-bit, planar, alpha, rotated or non-tiled images; vendors other than ``aperio`` and
``generic-tiff``) is left to OpenSlide.

Where it equals OpenSlide: on levels whose downsample is an integer, OpenSlide paints tiles at
whole-pixel offsets, so its pixels are the tiles' pixels. On other levels (Aperio: 4.0001...)
it renders a sub-pixel offset by interpolation for regions that do not start at 0 (see
``docs/design.md``); there ``auto`` uses OpenSlide, while ``reader="tifffile"`` gives the
tiles' own pixels. ``auto`` also compares one 2 x 2-tile region per level with OpenSlide
before trusting the level (:meth:`TiffTiles.exact`), so a build of OpenSlide that decodes
differently is noticed and used instead.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, SlideReadError

__all__ = [
    "READERS",
    "READER_ENV",
    "TIFF_VENDORS",
    "IncompleteTile",
    "TiffTiles",
    "TileCache",
    "TiledLevel",
    "reader_choice",
]

#: Values of ``reader=``: ``auto`` picks tifffile where it equals OpenSlide.
READERS = ("auto", "tifffile", "openslide")
#: Environment variable giving the reader when ``reader=None`` (tests, benchmarks).
READER_ENV = "SLIDESIFT_READER"
#: OpenSlide vendors whose levels are plain tiled TIFF directories on a simple tile grid.
TIFF_VENDORS = frozenset({"aperio", "generic-tiff"})

#: TIFF compression tags of the lossless codecs decoded here.
_LOSSLESS = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate"}
_JPEG = 7
_APERIO_J2K_RGB = 33005
_PHOTOMETRIC_MINISBLACK, _PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 1, 2, 6

#: ``reference(level, lv_xy, size)``: OpenSlide's pixels of a region, ``(h, w, 3)`` uint8.
Reference = Callable[[int, tuple[int, int], tuple[int, int]], NDArray[np.uint8]]


def reader_choice(reader: str | None) -> str:
    """``reader``, or the ``SLIDESIFT_READER`` environment variable when ``None`` (else ``auto``).

    Raises
    ------
    ConfigError
        Not one of :data:`READERS`.
    """
    name = "reader"
    if reader is None:
        reader, name = os.environ.get(READER_ENV, "auto").strip().lower() or "auto", READER_ENV
    if reader not in READERS:
        raise ConfigError(name, reader, " | ".join(READERS))
    return reader


@dataclass(frozen=True)
class TiledLevel:
    """Where one pyramid level's tiles lie in the file and how they are decoded.

    Attributes
    ----------
    size
        ``(w, h)`` of the level in px.
    tile
        ``(tw, th)`` of a tile in px; edge tiles are stored whole and clipped when pasted.
    offsets, counts
        ``(rows, cols)`` int64: file offset and byte count of each tile; a count of 0 is a
        missing tile (white, as OpenSlide leaves Aperio's missing tiles transparent).
    codec
        ``jpeg``, ``jpeg2k``, ``none``, ``lzw`` or ``deflate``.
    colorspace
        JPEG only: ``RGB`` or ``YCBCR``, the JPEG colour space from the photometric tag.
    tables
        JPEG only: the shared tables (``JPEGTables``), or ``None``.
    samples
        1 (grey, lossless codecs only) or 3.
    predictor
        1 (none) or 2 (horizontal differencing), lossless codecs only.
    """

    size: tuple[int, int]
    tile: tuple[int, int]
    offsets: NDArray[np.int64]
    counts: NDArray[np.int64]
    codec: str
    colorspace: str | None
    tables: bytes | None
    samples: int
    predictor: int

    @property
    def tile_bytes(self) -> int:
        """Bytes of one decoded RGB tile."""
        return self.tile[0] * self.tile[1] * 3


def _level_of(page: Any, vendor: str) -> TiledLevel | str:
    """The layout of a tifffile page, or why it is left to OpenSlide."""
    spp, comp, phot = int(page.samplesperpixel), int(page.compression), int(page.photometric)
    if int(page.imagedepth) != 1 or int(page.tiledepth) != 1:
        return "volumetric tiles"
    if int(page.bitspersample) != 8 or int(page.sampleformat) != 1:
        return f"{page.bitspersample}-bit samples of format {page.sampleformat}"
    if page.extrasamples or int(page.tags.valueof(274, 1)) != 1 or int(page.fillorder) != 1:
        return "extra samples, orientation or fill order other than plain RGB"
    if spp == 3 and int(page.planarconfig) != 1:
        return "planar (separate) samples"
    colorspace = tables = None
    if comp == _JPEG and spp == 3 and phot in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        codec, colorspace = "jpeg", ("RGB" if phot == _PHOTOMETRIC_RGB else "YCBCR")
        tables = bytes(page.jpegtables) if page.jpegtables else None
    elif comp == _APERIO_J2K_RGB and vendor == "aperio" and spp == 3:
        codec = "jpeg2k"
    elif comp in _LOSSLESS and (spp, phot) in ((3, _PHOTOMETRIC_RGB), (1, _PHOTOMETRIC_MINISBLACK)):
        codec = _LOSSLESS[comp]
    else:
        return f"compression {comp} with photometric {phot} and {spp} samples"
    predictor = int(page.predictor)
    if predictor not in (1, 2) or (predictor == 2 and codec in ("jpeg", "jpeg2k")):
        return f"predictor {predictor}"
    tw, th = int(page.tilewidth), int(page.tilelength)
    w, h = int(page.imagewidth), int(page.imagelength)
    grid = (-(-h // th), -(-w // tw))
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if offsets.size != grid[0] * grid[1] or counts.size != offsets.size:
        return f"{offsets.size} tiles listed for a {grid[1]} x {grid[0]} grid"
    if vendor != "aperio" and not counts.all():
        return "missing (zero-length) tiles"  # only Aperio's are painted transparent
    return TiledLevel(
        (w, h), (tw, th), offsets.reshape(grid), counts.reshape(grid), codec, colorspace, tables,
        spp, predictor,
    )  # fmt: skip


class IncompleteTile(SlideReadError):
    """A JPEG tile that does not end as a JPEG stream ends: cut short, zero-filled or padded.

    ``reader="auto"`` reads such a region through OpenSlide instead, which fails on a damaged
    tile and reads a padded one; a forced tifffile reader raises it.
    """


class TileCache:
    """Decoded tiles shared by concurrent region reads, least recently claimed evicted first.

    A tile is decoded by the first thread that claims it; others wait for that result
    (:class:`concurrent.futures.Future`), so band reads running in parallel split the tiles
    between them and never decode one twice while it is cached.

    Parameters
    ----------
    max_bytes
        Decoded pixels kept; the oldest tiles go first once over (the newest always stays).

    Attributes
    ----------
    decoded
        Tiles claimed for decoding so far (cache misses).
    peak_bytes
        Most bytes held at once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.decoded = 0
        self.peak_bytes = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int, int], tuple[Future[Any], int]] = OrderedDict()
        self._bytes = 0

    def claim(self, key: tuple[int, int, int], nbytes: int) -> tuple[Future[Any], bool]:
        """The future of tile ``key = (level, t_row, t_col)``, and whether the caller decodes it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[0], False
            future: Future[Any] = Future()
            self._entries[key] = (future, nbytes)
            self._bytes += nbytes
            self.decoded += 1
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size
            return future, True

    def forget(self, key: tuple[int, int, int], future: Future[Any]) -> None:
        """Drop ``key`` if it still holds ``future`` (a failed decode is not cached)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is future:
                del self._entries[key]
                self._bytes -= entry[1]


class TiffTiles:
    """The levels of one TIFF-family slide that are read straight from their tiles.

    Make one with :meth:`open`. Thread-safe: raw tiles are read with ``pread`` (or under a
    lock where the platform has none) and decoded on the calling thread.

    Parameters
    ----------
    path
        The slide file.
    levels
        Per OpenSlide level: its :class:`TiledLevel`, or why it is not read here.
    downsamples
        OpenSlide's level downsamples (level-0 px per level px).
    """

    def __init__(
        self,
        path: Path,
        levels: list[TiledLevel | str],
        downsamples: tuple[float, ...],
    ) -> None:
        self.path = path
        self.levels = levels
        self.downsamples = downsamples
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()  # the file position, where there is no pread
        self._probe_lock = threading.Lock()
        self._exact: dict[int, bool] = {}

    @classmethod
    def open(
        cls,
        path: Path,
        vendor: str,
        level_dimensions: tuple[tuple[int, int], ...],
        level_downsamples: tuple[float, ...],
    ) -> TiffTiles | None:
        """The tile reader of a slide OpenSlide opened, or ``None`` for non-TIFF vendors.

        Each OpenSlide level is matched to the one tiled TIFF directory of its size; a level
        with none or several such directories is left to OpenSlide.
        """
        if vendor not in TIFF_VENDORS:
            return None
        import tifffile

        levels: list[TiledLevel | str] = []
        try:
            with tifffile.TiffFile(path) as tif:
                pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
                for w, h in level_dimensions:
                    same = [p for p in pages if (p.imagewidth, p.imagelength) == (w, h)]
                    if len(same) != 1:
                        levels.append(f"{len(same)} tiled TIFF directories of {w} x {h} px")
                    else:
                        levels.append(_level_of(same[0], vendor))
        except Exception:  # what tifffile cannot parse, OpenSlide still reads
            return None
        return cls(path, levels, level_downsamples)

    def why_not(self, level: int) -> str | None:
        """Why ``level`` is not read from its tiles, or ``None`` when it is."""
        lv = self.levels[level]
        return lv if isinstance(lv, str) else None

    def exact(self, level: int, reference: Reference) -> bool:
        """Whether reading ``level`` here gives OpenSlide's pixels exactly.

        True for a readable level with an integer downsample whose 2 x 2 tiles around the
        level's centre (the whole level when smaller) equal ``reference``'s; checked once per
        level.
        """
        lv = self.levels[level]
        if isinstance(lv, str) or self.downsamples[level] != round(self.downsamples[level]):
            return False
        with self._probe_lock:
            known = self._exact.get(level)
            if known is None:
                (w, h), (tw, th) = lv.size, lv.tile
                x0, y0 = max(0, (w // 2) // tw * tw - tw), max(0, (h // 2) // th * th - th)
                size = (min(w, x0 + 2 * tw) - x0, min(h, y0 + 2 * th) - y0)
                expected = reference(level, (x0, y0), size)
                try:
                    known = bool(np.array_equal(self.read_region(level, (x0, y0), size), expected))
                except SlideReadError:
                    known = False  # OpenSlide read it, so it reads the level
                self._exact[level] = known
            return known

    def read_region(
        self,
        level: int,
        lv_xy: tuple[int, int],
        size: tuple[int, int],
        *,
        cache: TileCache | None = None,
    ) -> NDArray[np.uint8]:
        """A rectangle of one level as RGB, from its tiles.

        Parameters
        ----------
        level
            Pyramid level (one :meth:`why_not` accepts).
        lv_xy
            ``(x, y)`` top-left corner in that level's px; may be negative.
        size
            ``(w, h)`` in that level's px.
        cache
            Decoded tiles shared with other reads (bands of one thumbnail); ``None`` decodes
            every tile the region touches.

        Returns
        -------
        numpy.ndarray
            ``(h, w, 3)`` uint8 RGB; outside the level and in missing tiles white.

        Raises
        ------
        SlideReadError
            A tile that cannot be read or decoded (truncated or corrupt file).
        """
        lv = self.levels[level]
        if isinstance(lv, str):
            raise SlideReadError(self.path, f"level {level} is not read from its tiles ({lv})")
        (x, y), (w, h) = lv_xy, size
        out = np.empty((h, w, 3), dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, lv.size[0]), min(y + h, lv.size[1])
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            out.fill(255)
        if x0 >= x1 or y0 >= y1:
            return out
        tw, th = lv.tile
        wanted: list[tuple[int, int, Future[Any]]] = []
        for r in range(y0 // th, (y1 - 1) // th + 1):
            for c in range(x0 // tw, (x1 - 1) // tw + 1):
                if cache is None:
                    future: Future[Any] = Future()
                    mine = True
                else:
                    future, mine = cache.claim((level, r, c), lv.tile_bytes)
                if mine:  # decode now, so threads wanting the same tiles share them out
                    self._fill(future, level, lv, r, c, cache)
                wanted.append((r, c, future))
        for r, c, future in wanted:
            tile = future.result()
            ty, tx = r * th, c * tw
            ys, ye, xs, xe = max(y0, ty), min(y1, ty + th), max(x0, tx), min(x1, tx + tw)
            dst = out[ys - y : ye - y, xs - x : xe - x]
            if tile is None:
                dst[...] = 255
            else:
                dst[...] = tile[ys - ty : ye - ty, xs - tx : xe - tx]
        return out

    def _fill(
        self,
        future: Future[Any],
        level: int,
        lv: TiledLevel,
        r: int,
        c: int,
        cache: TileCache | None,
    ) -> None:
        """Decode tile ``(r, c)`` into ``future`` (its exception, if it fails)."""
        try:
            future.set_result(self._tile(level, lv, r, c))
        except BaseException as exc:
            if cache is not None:
                cache.forget((level, r, c), future)
            future.set_exception(exc)

    def _tile(self, level: int, lv: TiledLevel, r: int, c: int) -> NDArray[np.uint8] | None:
        """Tile ``(r, c)`` as ``(th, tw, 3)`` uint8 RGB, or ``None`` when missing."""
        count = int(lv.counts[r, c])
        if count == 0:
            return None
        offset = int(lv.offsets[r, c])
        data = self._pread(offset, count)
        where = f"level {level} tile (row {r}, col {c}) at byte {offset}"
        if len(data) != count:
            raise SlideReadError(
                self.path,
                f"{where}: {count} bytes listed, {len(data)} in the file",
                "the file is probably truncated; re-export or re-download it",
            )
        if lv.codec == "jpeg" and not data.endswith(b"\xff\xd9"):
            # libjpeg only warns on a stream cut short (and imagecodecs hides warnings); OpenSlide
            # makes every warning an error, so such a tile is OpenSlide's to judge.
            raise IncompleteTile(
                self.path,
                f"{where}: the JPEG stream does not end with an EOI marker",
                "the file is probably truncated or corrupt; re-export or re-download it",
            )
        try:
            tile = _decode(lv, data)
        except Exception as exc:  # imagecodecs raises a codec-specific error per format
            raise SlideReadError(
                self.path,
                f"decoding {where} failed ({exc})",
                "the file is probably truncated or corrupt; re-export or re-download it",
            ) from exc
        return tile

    def _pread(self, offset: int, count: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self._fh.fileno(), count, offset)
        with self._lock:  # pragma: no cover - platforms without pread (Windows)
            self._fh.seek(offset)
            return self._fh.read(count)

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def _decode(lv: TiledLevel, data: bytes) -> NDArray[np.uint8]:
    """One stored tile as ``(th, tw, 3)`` uint8 RGB, decoded as OpenSlide decodes it."""
    import imagecodecs

    tw, th = lv.tile
    if lv.codec == "jpeg":
        # As openslide-decode-tiff.c: tables first, then the JPEG colour space forced from the
        # photometric tag (Aperio's RGB-coded tiles carry no marker saying so).
        tile = imagecodecs.jpeg8_decode(
            data, tables=lv.tables, colorspace=lv.colorspace, outcolorspace="RGB"
        )
    elif lv.codec == "jpeg2k":
        tile = imagecodecs.jpeg2k_decode(data)
    else:
        raw: bytes | bytearray = data
        if lv.codec == "lzw":
            raw = imagecodecs.lzw_decode(data)
        elif lv.codec == "deflate":
            raw = imagecodecs.zlib_decode(data)
        n = th * tw * lv.samples
        if len(raw) < n:
            raise ValueError(f"{len(raw)} bytes decoded, {n} needed")
        tile = np.frombuffer(raw, dtype=np.uint8, count=n).reshape(th, tw, lv.samples)
        if lv.predictor == 2:
            tile = np.cumsum(tile, axis=1, dtype=np.uint8)  # undo horizontal differencing
        if lv.samples == 1:
            tile = np.repeat(tile, 3, axis=2)
    if tile.shape != (th, tw, 3) or tile.dtype != np.uint8:
        raise ValueError(f"decoded {tile.dtype}{tile.shape}, expected uint8({th}, {tw}, 3)")
    out: NDArray[np.uint8] = tile
    return out
