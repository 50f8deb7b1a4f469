"""Read DICOM whole-slide images (VL Whole Slide Microscopy) with wsidicom.

Pipeline position::

    .dcm file, or folder of .dcm instances --open_dicom--> DicomLevels --read_region--> RGB

A folder is the usual layout (one instance per pyramid level, plus label and overview); a
single ``.dcm`` holds one level or, from early converters, a whole slide in one instance that
states less than wsidicom needs: such files are normalised in memory first
(:mod:`slidesift.io.dicom_legacy`). :class:`slidesift.io.slide.Slide` wraps the result, so
``read_thumb`` and ``read_region`` work as for any slide, with reader ``wsidicom``.

Frames: ``lv_*`` are pixels of one pyramid level; sizes are ``(w, h)``, arrays ``[row, col]``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import SlideReadError, require
from slidesift.io.dicom_legacy import is_vl_wsi, needs_normalising, normalise, pixel_spacing

__all__ = ["READER", "DicomLevels", "is_dicom_folder", "open_dicom"]

#: The name :attr:`slidesift.io.slide.Thumb.reader` records for DICOM slides.
READER = "wsidicom"

_DAMAGED = "the file is probably truncated or corrupt; re-export or re-download it"


def _has_dicm(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with a DICOM file (``.dcm``, or the magic) among 64 files."""
    if not path.is_dir():
        return False
    files = sorted(p for p in path.iterdir() if p.is_file())[:64]
    return any(p.suffix.lower() == ".dcm" or _has_dicm(p) for p in files)


class DicomLevels:
    """An open DICOM whole-slide image: its levels' sizes, MPP and region reads.

    Thread-safe for reads (wsidicom locks its file streams).

    Attributes
    ----------
    path
        The file or folder.
    level_dimensions
        ``(w, h)`` per pyramid level, level 0 first.
    level_downsamples
        Level-0 px per level px, per level (the mean of x and y, as OpenSlide gives it).
    mpp
        ``(x, y)`` microns per level-0 pixel, or ``None`` when the files carry no spacing.
    """

    def __init__(self, wsi: Any, path: Path, mpp: tuple[float, float] | None) -> None:
        self._wsi = wsi
        self.path = path
        levels = list(wsi.levels)
        self.level_dimensions = tuple((int(lv.size.width), int(lv.size.height)) for lv in levels)
        self._numbers = tuple(int(lv.level) for lv in levels)  # wsidicom's log2 level numbers
        l0_w, l0_h = self.level_dimensions[0]
        self.level_downsamples = tuple(
            (l0_w / w + l0_h / h) / 2 for w, h in self.level_dimensions
        )
        self.mpp = mpp

    def read_region(
        self, level: int, lv_xy: tuple[int, int], size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        """Read a rectangle of one level as RGB.

        Parameters
        ----------
        level
            Pyramid level (index into :attr:`level_dimensions`).
        lv_xy
            ``(x, y)`` top-left corner in that level's px.
        size
            ``(w, h)`` in that level's px. Parts outside the level read as white.

        Returns
        -------
        numpy.ndarray
            ``(h, w, 3)`` uint8 RGB.

        Raises
        ------
        SlideReadError
            A frame that cannot be decoded.
        """
        (x, y), (w, h) = lv_xy, size
        lv_w, lv_h = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        x0, y0, x1, y1 = max(0, x), max(0, y), min(lv_w, x + w), min(lv_h, y + h)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = self._wsi.read_region(
                    (x0, y0), self._numbers[level], (x1 - x0, y1 - y0), as_array=True
                )
        except Exception as exc:  # wsidicom and its decoders raise many kinds
            raise SlideReadError(
                self.path, f"decoding level {level} at {lv_xy} failed ({exc})", _DAMAGED
            ) from exc
        arr = np.asarray(got)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = arr[:, :, :3]
        return out

    def close(self) -> None:
        """Release the files."""
        self._wsi.close()


def _header(path: Path) -> Any:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # InvalidDicomError, EOFError, struct errors, ...
        raise SlideReadError(path, f"the DICOM header cannot be read ({exc})", _DAMAGED) from exc


def _open_wsi(path: Path, stream: io.BytesIO | None) -> Any:
    from wsidicom import WsiDicom

    if stream is None:
        return WsiDicom.open(str(path))
    from upath import UPath
    from wsidicom.file import WsiDicomFileSource
    from wsidicom.file.io.wsidicom_io import WsiDicomReadIO

    # Named on no local file system: wsidicom reopens local paths by name to scan their frames,
    # which would read the original bytes rather than the normalised ones.
    name = UPath(f"memory:/slidesift-normalised/{path.name}")
    return WsiDicom(WsiDicomFileSource([WsiDicomReadIO(stream, name)]))


def open_dicom(path: Path) -> DicomLevels:
    """Open a DICOM whole-slide image: a ``.dcm`` file or a folder of instances.

    Parameters
    ----------
    path
        The file or folder.

    Returns
    -------
    DicomLevels
        The open slide; close it.

    Raises
    ------
    MissingExtraError
        wsidicom is not installed (``pip install 'slidesift[dicom]'``).
    SlideReadError
        A DICOM that is no whole-slide image (a CT, say), a damaged or truncated file, or a
        folder without a whole-slide level; the reason and a hint are given.
    """
    require("wsidicom", "dicom", "reading DICOM whole-slide images")
    stream = None
    spacing_given = True
    if not path.is_dir():
        header = _header(path)
        if not is_vl_wsi(header):
            modality = header.get("Modality", "") or "non-slide"
            raise SlideReadError(
                path,
                f"a DICOM {modality} image, not a whole-slide image (VL Whole Slide Microscopy)",
                "pass a slide: a .dcm of SOP class 1.2.840.10008.5.1.4.1.1.77.1.6, or its folder",
            )
        if needs_normalising(header):
            spacing_given = pixel_spacing(header) is not None
            stream = normalise(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wsi = _open_wsi(path, stream)
    except Exception as exc:  # wsidicom raises its own errors and pydicom's
        what = "folder" if path.is_dir() else "file"
        raise SlideReadError(
            path,
            f"wsidicom found no readable whole-slide level in the {what} ({exc})",
            "pass the folder of one slide's .dcm instances, or a single-level .dcm; "
            "a damaged file must be re-exported",
        ) from exc
    mpp = None
    spacing = wsi.levels[0].pixel_spacing
    if spacing_given and spacing is not None:
        mpp = (float(spacing.width) * 1000.0, float(spacing.height) * 1000.0)
    levels = DicomLevels(wsi, path, mpp)
    try:  # touch the smallest level so a damaged file fails here, with a clear message
        lw, lh = levels.level_dimensions[-1]
        levels.read_region(len(levels.level_dimensions) - 1, (0, 0), (min(lw, 64), min(lh, 64)))
    except SlideReadError:
        levels.close()
        raise
    return levels

