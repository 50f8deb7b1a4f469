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
        self.level_downsamples = tuple((l0_w / w + l0_h / h) / 2 for w, h in self.level_dimensions)
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


def _pixel_data_end(path: Path) -> tuple[int, int]:
    """``(end, size)``: where the pixel data ends by its own lengths, and the file's size.

    Walks the encapsulated items (8 bytes read per frame) or takes the native length, so a
    file cut inside its frames is caught on opening: libjpeg decodes a cut frame without
    complaint, grey where the data stopped. ``end`` is 0 for a file without pixel data.
    """
    import pydicom

    size = path.stat().st_size
    with path.open("rb") as fh:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is None or not syntax.is_little_endian:
            return 0, size
        head = fh.read(12)
        if head[:4] != b"\xe0\x7f\x10\x00":  # (7FE0,0010) Pixel Data
            return 0, size
        if syntax.is_implicit_VR:
            length, pos = int.from_bytes(head[4:8], "little"), fh.tell() - 4
        else:
            length, pos = int.from_bytes(head[8:12], "little"), fh.tell()
        if length != 0xFFFFFFFF:
            return pos + length, size
        while pos + 8 <= size:  # items (FFFE,E000), then the delimiter (FFFE,E0DD)
            fh.seek(pos)
            item = fh.read(8)
            pos += 8
            if item[:4] == b"\xfe\xff\xdd\xe0":
                return pos, size
            pos += int.from_bytes(item[4:8], "little")
        return pos + 8, size  # no delimiter within the file


def _check_complete(path: Path) -> None:
    """Refuse an empty file, an unreadable header, or pixel data cut short."""
    if path.stat().st_size == 0:
        raise SlideReadError(path, "the file is empty", "re-export or re-download it")
    try:
        end, size = _pixel_data_end(path)
    except Exception as exc:  # InvalidDicomError, EOFError, struct errors, ...
        raise SlideReadError(path, f"the DICOM header cannot be read ({exc})", _DAMAGED) from exc
    if end > size:
        raise SlideReadError(
            path, f"the file is cut short: its pixel data ends at byte {end} of {size}", _DAMAGED
        )


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
    file = path
    if path.is_dir():  # one instance in a folder is opened as that file (it may need fixing)
        files = [p for p in sorted(path.iterdir()) if p.is_file() and _has_dicm(p)]
        file = files[0] if len(files) == 1 else path
        for instance in files:
            _check_complete(instance)
    else:
        _check_complete(file)
    if not file.is_dir():
        header = _header(file)
        if "SOPClassUID" not in header:
            raise SlideReadError(file, "the DICOM header names no SOP class", _DAMAGED)
        if not is_vl_wsi(header):
            modality = header.get("Modality", "") or str(header.SOPClassUID)
            raise SlideReadError(
                file,
                f"a DICOM {modality} image, not a whole-slide image (VL Whole Slide Microscopy)",
                "pass a slide: a .dcm of SOP class 1.2.840.10008.5.1.4.1.1.77.1.6, or its folder",
            )
        if needs_normalising(header):
            spacing_given = pixel_spacing(header) is not None
            stream = normalise(file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wsi = _open_wsi(file, stream)
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
