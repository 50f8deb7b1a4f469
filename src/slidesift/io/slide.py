"""Open any slide (OpenSlide formats, TIFF, DICOM, PNG, JPEG) and read thumbnails.

Pipeline position::

    slide file --open_slide--> Slide --read_thumb(longest=N | mpp=X)--> Thumb

Frames: ``l0_*`` are level-0 pixels of the slide, ``lv_*`` pixels of a pyramid level, ``th_*``
pixels of the thumbnail. Sizes are ``(w, h)``; arrays are indexed ``[row, col]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import SlideReadError
from slidesift.io.dicom_read import READER as DICOM_READER
from slidesift.io.dicom_read import DicomLevels, is_dicom_folder, open_dicom
from slidesift.io.downsample import Downsample
from slidesift.io.limits import check_level_read, check_tile_sizes
from slidesift.io.plain_image import read_plain_image, rgba_to_rgb
from slidesift.io.resample import area_resample
from slidesift.io.slide_probe import probe_slide, probe_wanted
from slidesift.io.sniff import image_format
from slidesift.io.thumb import Thumb
from slidesift.io.thumb_meta import ThumbMeta, read_thumb_meta
from slidesift.io.tiff_read import IncompleteTile, TiffTiles, TileCache, reader_choice

__all__ = ["Slide", "Thumb", "open_slide", "read_thumb"]

_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class Slide:
    """An open slide: pyramid geometry, MPP and region reads as RGB arrays.

    Use :func:`open_slide` to make one. Thread-safe for reads (OpenSlide is, the tile reader
    reads with ``pread``; plain images are read from memory). Close it, or use it as a context
    manager.

    Levels of Aperio and generic TIFF slides are read from their tiles with tifffile and
    imagecodecs where that gives OpenSlide's pixels exactly, through OpenSlide elsewhere
    (:mod:`slidesift.io.tiff_read`; ``reader=`` forces either, :meth:`reader_for` says which).

    Attributes
    ----------
    path
        The file.
    format
        OpenSlide's vendor name (``aperio``, ``generic-tiff``, ...), ``dicom`` (read with
        wsidicom), or ``image`` / ``tiff`` for plain rasters read without OpenSlide.
    level_dimensions
        ``(w, h)`` per pyramid level, level 0 first.
    level_downsamples
        Level-0 px per level px, per level.
    mpp
        ``(x, y)`` microns per level-0 pixel, or ``None`` when the file carries none.
    thumb_meta
        The slidesift record of a thumbnail ``slidesift thumb`` wrote (its um/px is
        :attr:`mpp`), else ``None``.
    """

    def __init__(
        self,
        path: Path,
        fmt: str,
        level_dimensions: tuple[tuple[int, int], ...],
        level_downsamples: tuple[float, ...],
        mpp: tuple[float, float] | None,
        *,
        osr: Any = None,
        pixels: NDArray[np.uint8] | None = None,
        tiles: TiffTiles | None = None,
        dicom: DicomLevels | None = None,
        thumb_meta: ThumbMeta | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.level_dimensions = level_dimensions
        self.level_downsamples = level_downsamples
        self.mpp = mpp
        self.thumb_meta = thumb_meta
        self._osr = osr
        self._pixels = pixels
        self._tiles = tiles
        self._dicom = dicom

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(w, h)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def reader_for(self, level: int, reader: str | None = None) -> str:
        """Which reader :meth:`read_region` uses for ``level``.

        Parameters
        ----------
        level
            Pyramid level.
        reader
            ``auto`` (tifffile where it equals OpenSlide, checked once per level), ``tifffile``
            or ``openslide``; ``None``: the ``SLIDESIFT_READER`` environment variable, else
            ``auto``.

        Returns
        -------
        str
            ``tifffile``, ``openslide``; ``memory`` (plain images) and ``wsidicom`` (DICOM)
            whatever ``reader``.

        Raises
        ------
        SlideReadError
            ``tifffile`` forced on a level it cannot decode (the reason is given).
        """
        choice = reader_choice(reader)
        if self._pixels is not None or self._dicom is not None:
            return "memory" if self._dicom is None else DICOM_READER
        if choice == "tifffile":
            why = (
                self._tiles.why_not(level)
                if self._tiles is not None
                else f"a {self.format} slide, not one tifffile reads tile by tile"
            )
            if why is not None:
                raise SlideReadError(
                    self.path,
                    f"the tifffile reader cannot read level {level}: {why}",
                    "read it with reader='auto' or 'openslide'",
                )
            return "tifffile"
        tiles = self._tiles
        if choice == "auto" and tiles is not None and tiles.exact(level, self._openslide_region):
            return "tifffile"
        return "openslide"

    def read_region(
        self,
        level: int,
        lv_xy: tuple[int, int],
        size: tuple[int, int],
        *,
        reader: str | None = None,
        cache: TileCache | None = None,
    ) -> NDArray[np.uint8]:
        """Read a rectangle of one level as RGB.

        Parameters
        ----------
        level
            Pyramid level.
        lv_xy
            ``(x, y)`` top-left corner in that level's px.
        size
            ``(w, h)`` in that level's px. Parts outside the level read as white.
        reader
            As for :meth:`reader_for`.
        cache
            Decoded tiles shared between reads (tifffile reader only; see :func:`read_thumb`).

        Returns
        -------
        numpy.ndarray
            ``(h, w, 3)`` uint8 RGB. Transparent pixels (outside scanned areas) are white.

        Notes
        -----
        OpenSlide addresses regions in level-0 px. When a level's downsample is not an integer
        (Aperio pyramids: 4.0001...), ``lv_xy * downsample`` is rounded, and OpenSlide renders
        the remaining sub-pixel offset (at most ``0.5 / downsample`` px) by interpolation.
        The tifffile reader gives the tiles' own pixels there, so ``auto`` uses it only on
        levels with an integer downsample.
        """
        w, h = size
        if self._dicom is not None:
            return self._dicom.read_region(level, lv_xy, size)
        if self._pixels is None and self.reader_for(level, reader) == "tifffile":
            assert self._tiles is not None
            try:
                return self._tiles.read_region(level, lv_xy, size, cache=cache)
            except IncompleteTile:
                if reader_choice(reader) == "tifffile":
                    raise  # else OpenSlide judges the tile: an error if damaged, as before
        if self._pixels is not None:
            x, y = lv_xy
            out = np.full((h, w, 3), 255, dtype=np.uint8)
            src = self._pixels[max(0, y) : y + h, max(0, x) : x + w]
            out[max(0, -y) : max(0, -y) + src.shape[0], max(0, -x) : max(0, -x) + src.shape[1]] = (
                src
            )
            return out
        return self._openslide_region(level, lv_xy, size)

    def _openslide_region(
        self, level: int, lv_xy: tuple[int, int], size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        """``(h, w, 3)`` uint8 RGB of a region as OpenSlide renders it (transparent: white)."""
        w, h = size
        ds = self.level_downsamples[level]
        l0 = (round(lv_xy[0] * ds), round(lv_xy[1] * ds))
        try:
            rgba = np.asarray(self._osr.read_region(l0, level, (w, h)))
        except Exception as exc:  # openslide raises its own errors for corrupt tiles
            raise SlideReadError(
                self.path,
                f"decoding level {level} at {lv_xy} failed ({exc})",
                "the file is probably truncated or corrupt; re-export or re-download it",
            ) from exc
        return rgba_to_rgb(rgba)

    def band_cache(self, level: int, workers: int) -> TileCache | None:
        """A tile cache for ``workers`` threads reading ``level`` in bands of full rows.

        It holds ``workers + 2`` tile rows across the level (a 6000-px level of 256-px tiles:
        4.5 MiB a row), enough that band reads in parallel decode each tile once; ``None``
        where the level is not read from its tiles.
        """
        lv = None if self._tiles is None else self._tiles.levels[level]
        if lv is None or isinstance(lv, str):
            return None
        tiles_across = -(-lv.size[0] // lv.tile[0])
        return TileCache((workers + 2) * tiles_across * lv.tile_bytes)

    def close(self) -> None:
        """Release the file handle."""
        if self._osr is not None:
            self._osr.close()
            self._osr = None
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None
        if self._dicom is not None:
            self._dicom.close()
            self._dicom = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.mpp[0]:.4g} um/px" if self.mpp else "no MPP"
        return (
            f"Slide({str(self.path)!r}, format={self.format!r}, "
            f"levels={list(self.level_dimensions)}, {mpp})"
        )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SlideReadError(path, "no such file", "check the path (and the manifest, if any)")
    if path.is_dir() and not is_dicom_folder(path):
        raise SlideReadError(
            path, "is a directory", "pass the slide file (for MRXS the .mrxs; a DICOM folder)"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise SlideReadError(path, "the file is empty", "re-export or re-download it")


def open_slide(path: str | os.PathLike[str], *, probe: bool | None = None) -> Slide:
    """Open a whole-slide image or a plain image.

    Every format OpenSlide reads (Aperio SVS, generic pyramidal TIFF as in CAMELYON16,
    Hamamatsu NDPI, MIRAX, Philips, Leica, Ventana, ...) goes through OpenSlide; DICOM (a
    ``.dcm`` or a folder of them) through wsidicom (the ``dicom`` extra); plain
    PNG/JPEG/BMP and non-tiled TIFFs are read into memory.

    Parameters
    ----------
    path
        The slide file, or a folder of one DICOM slide's instances.
    probe
        Open a TIFF-family or unknown file with OpenSlide in a child process first
        (:mod:`~slidesift.io.slide_probe`: a crash on a damaged file is a ``SlideReadError``);
        ``None``: ``SLIDESIFT_SLIDE_PROBE``, else on.

    Returns
    -------
    Slide
        Open slide; close it or use ``with``.

    Raises
    ------
    SlideReadError
        Missing, empty, truncated, mislabelled or unsupported files, with a hint what to do.
    """
    import openslide

    p = Path(path)
    _check_file(p)
    kind = "dicom" if p.is_dir() else image_format(p)
    if kind == "dicom":
        dicom = open_dicom(p)
        dims, ds = dicom.level_dimensions, dicom.level_downsamples
        return Slide(p, "dicom", dims, ds, dicom.mpp, dicom=dicom)
    if kind in ("tiff", "unknown") and probe_wanted(probe):
        probe_slide(p)  # OpenSlide's C code reads the file from detect_format on
    vendor = openslide.OpenSlide.detect_format(str(p))
    if vendor is not None:
        return _open_openslide(p, vendor)
    if kind in ("png", "jpeg", "tiff") or (kind == "unknown" and p.suffix.lower() == ".bmp"):
        if p.suffix.lower() not in _PLAIN_SUFFIXES and kind != "tiff":
            raise SlideReadError(
                p,
                f"the file is a {kind.upper()} image but is named {p.suffix!r}",
                f"rename it to {p.stem}.{'jpg' if kind == 'jpeg' else kind} "
                "(slide extensions are reserved for whole-slide formats)",
            )
        return _open_plain(p, kind)
    raise SlideReadError(
        p,
        "not a format slidesift or OpenSlide can read",
        "supported: SVS, TIFF (pyramidal or plain), NDPI, MRXS, SCN, BIF, VMS, DICOM, PNG, JPEG",
    )


def _open_openslide(p: Path, vendor: str) -> Slide:
    import openslide

    try:
        osr = openslide.OpenSlide(str(p))
    except openslide.OpenSlideError as exc:
        raise SlideReadError(
            p,
            f"OpenSlide detected a {vendor} slide but could not open it ({exc})",
            "the file is probably truncated or corrupt; re-export or re-download it",
        ) from exc
    props = osr.properties
    try:
        check_tile_sizes(p, props, int(osr.level_count))  # before the first tile is decoded
    except SlideReadError:
        osr.close()
        raise
    mpp: tuple[float, float] | None = None
    try:
        mx = float(props["openslide.mpp-x"])
        my = float(props.get("openslide.mpp-y", mx))
        if mx > 0 and my > 0:
            mpp = (mx, my)
    except (KeyError, ValueError):
        mpp = None
    dims = tuple((int(w), int(h)) for w, h in osr.level_dimensions)
    downsamples = tuple(float(d) for d in osr.level_downsamples)
    tiles = TiffTiles.open(p, vendor, dims, downsamples)
    slide = Slide(p, vendor, dims, downsamples, mpp, osr=osr, tiles=tiles)
    # Touch the smallest level once so a truncated file fails here, with a clear message.
    lw, lh = slide.level_dimensions[-1]
    slide.read_region(slide.level_count - 1, (0, 0), (min(lw, 64), min(lh, 64)))
    return slide


def _open_plain(p: Path, kind: str) -> Slide:
    """A plain image as a one-level slide; a thumbnail's slidesift record gives its MPP."""
    pixels, mpp = read_plain_image(p, kind)
    h, w = pixels.shape[:2]
    meta = read_thumb_meta(p, kind, (w, h)) if kind in ("png", "jpeg") else None
    if meta is not None and meta.um_per_px is not None:
        mpp = meta.um_per_px
    fmt = "image" if kind != "tiff" else "tiff"
    return Slide(p, fmt, ((w, h),), (1.0,), mpp, pixels=pixels, thumb_meta=meta)


def _target_size(slide: Slide, longest: int | None, mpp: float | None) -> tuple[int, int]:
    """``(w, h)`` to read ``slide`` at; a thumbnail read at the very target asked: its size.

    A thumbnail written at ``mpp`` has whole px, so its recorded um/px is near the target, not
    on it; a size recomputed from it can differ by a px (and resample the pixels again). Read
    at the target it was written at, it is used as it is.
    """
    target = Downsample(longest=longest, mpp=mpp)
    if slide.thumb_meta is not None and slide.thumb_meta.asked == target:
        return slide.dimensions
    return target.target_size(
        slide.dimensions, slide.mpp[0] if slide.mpp else None, slide.path.name
    )


def read_thumb(
    slide: Slide,
    *,
    longest: int | None = None,
    mpp: float | None = None,
    workers: int | None = None,
    reader: str | None = None,
) -> Thumb:
    """Downsample a slide so its longer side is at most ``longest`` px, or to ``mpp`` um/px.

    Reads the smallest pyramid level that is still at least as large as the target, then
    area-averages it band by band, so memory stays bounded by the output (a 100k-px level 0 is
    never read whole). A slide smaller than the target is returned at level 0, never upsampled;
    likewise an ``mpp`` finer than the scan is clamped to level 0.

    Parameters
    ----------
    slide
        An open slide (:func:`open_slide`).
    longest
        Target length of the longer side in px (the paper's N: 6000 for PAIP2020, 15000 for
        CAMELYON16).
    mpp
        Target resolution in microns per px (needs MPP metadata).
    workers
        Threads decoding bands at once; default: up to 4, one per CPU.
    reader
        ``auto``, ``tifffile`` or ``openslide`` (see :meth:`Slide.reader_for`); ``None``: the
        ``SLIDESIFT_READER`` environment variable, else ``auto``. Where ``auto`` picks
        tifffile the pixels are OpenSlide's, bit for bit.

    Returns
    -------
    Thumb
        Pixels ``(H, W, 3)`` uint8 plus the exact level-0 scale factors.

    Raises
    ------
    SlideReadError
        The level to read exceeds ``SLIDESIFT_MAX_READ_PIXELS`` (no pyramid level near the
        target; :func:`slidesift.io.limits.check_level_read`), or a tile is damaged.

    Notes
    -----
    The bands are the same whichever reader decodes them, so equal level pixels give equal
    thumbnails. The tifffile reader keeps decoded tiles in a cache of ``workers + 2`` tile
    rows of the level, so tiles cut by band edges are decoded once.
    """
    dst_w, dst_h = _target_size(slide, longest, mpp)
    level = 0
    for i, (w, h) in enumerate(slide.level_dimensions):
        if w >= dst_w and h >= dst_h:
            level = i
    lv_w, lv_h = slide.level_dimensions[level]
    check_level_read(slide.path, level, (lv_w, lv_h), (dst_w, dst_h))
    n_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    choice = reader_choice(reader)
    used = slide.reader_for(level, choice)
    cache = slide.band_cache(level, n_workers) if used == "tifffile" else None

    def read_rows(y0: int, y1: int) -> NDArray[np.uint8]:
        return slide.read_region(level, (0, y0), (lv_w, y1 - y0), reader=choice, cache=cache)

    pixels = area_resample(read_rows, (lv_w, lv_h), (dst_w, dst_h), workers=n_workers)
    l0_w, l0_h = slide.dimensions
    scale = (l0_w / dst_w, l0_h / dst_h)
    th_mpp = (slide.mpp[0] * scale[0], slide.mpp[1] * scale[1]) if slide.mpp else None
    normalized = slide.thumb_meta.normalizer_key if slide.thumb_meta is not None else None
    return Thumb(
        pixels, (l0_w, l0_h), scale, level, th_mpp, str(slide.path), used, normalized=normalized
    )
