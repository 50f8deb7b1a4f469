"""Make an early-style DICOM whole-slide instance into one wsidicom reads, in memory.

Early converters wrote VL Whole Slide Microscopy instances that state less than the standard
asks: no ``ImageType`` (so wsidicom cannot tell a pyramid level from a label), no
``DimensionOrganizationType`` and no per-frame positions (so nothing says where a frame goes),
no pixel spacing (wsidicom needs one to build a pyramid), and sometimes ``RGB`` as the
photometric interpretation of JPEG frames whose JFIF header says YCbCr. wsidicom turns such
files away. :func:`normalise` rewrites the header (never the frames' bytes) so it reads them:

* ``ImageType`` ``ORIGINAL\\PRIMARY\\VOLUME\\NONE`` (one instance: the slide's only level);
* frames in TILED_FULL order (row-major). A file that states TILED_FULL is row-major by the
  standard. A file that states nothing is put together both ways, row-major and column-major,
  and the order whose tile seams continue the image is taken; row-major, the standard's
  order, unless column-major is clearly (2x) the better fit;
* a placeholder pixel spacing where none is given; the slide's MPP is then reported as
  ``None``, never the placeholder; the imaged volume's size from the spacing where absent;
* ``YBR_FULL_422`` for JPEG Baseline frames labelled ``RGB`` that carry a JFIF header (JFIF
  defines its components as YCbCr; read as RGB the slide is green and pink).

Frames: ``(r, c)`` is a frame's row and column in the grid of ``rows x cols`` frames that
tiles the total pixel matrix, top-left first.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import SlideReadError

__all__ = [
    "MAX_LEGACY_BYTES",
    "PLACEHOLDER_SPACING_MM",
    "frame_order",
    "is_vl_wsi",
    "needs_normalising",
    "normalise",
    "pixel_spacing",
]

#: Pixel spacing (mm) written where the file gives none, so wsidicom can build its pyramid.
PLACEHOLDER_SPACING_MM = 0.001

#: A normalised instance is held in memory; larger early-style files are refused with a hint.
MAX_LEGACY_BYTES = 1 << 30

#: Grid rows (and columns) whose seams are compared when the frame order is not stated.
_SEAM_SAMPLES = 8

_VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


def needs_normalising(ds: Any) -> bool:
    """Whether wsidicom would turn this VL WSI header away (see the module notes).

    Parameters
    ----------
    ds
        The instance's header (a ``pydicom.Dataset``, pixel data not needed).
    """
    states_layout = "DimensionOrganizationType" in ds or "PerFrameFunctionalGroupsSequence" in ds
    sized = "ImagedVolumeWidth" in ds and "ImagedVolumeHeight" in ds
    return "ImageType" not in ds or not states_layout or not sized or pixel_spacing(ds) is None


def pixel_spacing(ds: Any) -> list[float] | None:
    """``[row, column]`` spacing in mm from the shared functional groups, or ``None``."""
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    except (AttributeError, IndexError):
        return None
    values = [float(v) for v in spacing]
    return values if len(values) == 2 and min(values) > 0 else None


def grid(ds: Any) -> tuple[int, int]:
    """``(rows, cols)`` of frames tiling the total pixel matrix."""
    rows = math.ceil(int(ds.TotalPixelMatrixRows) / int(ds.Rows))
    cols = math.ceil(int(ds.TotalPixelMatrixColumns) / int(ds.Columns))
    return rows, cols


def _place(order: str, k: int, rows: int, cols: int) -> tuple[int, int]:
    """``(r, c)`` of frame ``k`` in ``order`` (``row`` or ``column`` major)."""
    return (k // cols, k % cols) if order == "row" else (k % rows, k // rows)


def _seam_score(order: str, ds: Any, decode: Any) -> float:
    """Mean absolute step across sampled tile seams when frames are placed in ``order``.

    A correct placement continues the image across seams (a step like any neighbouring pixel
    pair); a wrong one puts unrelated tissue side by side.
    """
    rows, cols = grid(ds)
    th, tw = int(ds.Rows), int(ds.Columns)
    h, w = int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)
    frame_at = {_place(order, k, rows, cols): k for k in range(rows * cols)}
    rs = sorted({round(v) for v in np.linspace(0, rows - 1, min(rows, _SEAM_SAMPLES))})
    cs = sorted({round(v) for v in np.linspace(0, cols - 1, min(cols, _SEAM_SAMPLES))})
    steps: list[float] = []
    for r in rs:
        valid_h = min(th, h - r * th)
        for c in cs:
            here = decode(frame_at[(r, c)])
            if c + 1 < cols:
                right = decode(frame_at[(r, c + 1)])
                steps.append(float(np.abs(here[:valid_h, -1] - right[:valid_h, 0]).mean()))
            if r + 1 < rows:
                below = decode(frame_at[(r + 1, c)])
                valid_w = min(tw, w - c * tw)
                steps.append(float(np.abs(here[-1, :valid_w] - below[0, :valid_w]).mean()))
    return float(np.mean(steps)) if steps else 0.0


def frame_order(ds: Any) -> str:
    """``row`` or ``column``: how the frames of a single-level instance fill its grid.

    Parameters
    ----------
    ds
        The whole instance (``pydicom.Dataset`` with pixel data).

    Returns
    -------
    str
        ``row`` where the file states TILED_FULL, the grid is one row or column, or the seams
        do not clearly favour column-major; ``column`` otherwise.
    """
    rows, cols = grid(ds)
    if ds.get("DimensionOrganizationType") == "TILED_FULL" or rows == 1 or cols == 1:
        return "row"
    from pydicom.pixels.utils import pixel_array

    cache: dict[int, NDArray[np.int16]] = {}

    def decode(k: int) -> NDArray[np.int16]:
        if k not in cache:
            cache[k] = np.asarray(pixel_array(ds, index=k), dtype=np.int16)
        return cache[k]

    by_row = _seam_score("row", ds, decode)
    by_column = _seam_score("column", ds, decode)
    return "column" if by_column * 2 < by_row else "row"


def _jfif(frame: bytes) -> bool:
    """Whether a JPEG stream has a JFIF APP0 segment (components YCbCr by definition)."""
    return frame[:2] == b"\xff\xd8" and b"JFIF\x00" in frame[:64]


def normalise(path: Path) -> io.BytesIO:
    """Read an early-style VL WSI instance and write it again as wsidicom reads it.

    Parameters
    ----------
    path
        The ``.dcm`` file; its header has passed :func:`needs_normalising`.

    Returns
    -------
    io.BytesIO
        The rewritten instance (the same frames, reordered to row-major), at position 0.

    Raises
    ------
    SlideReadError
        A file over :data:`MAX_LEGACY_BYTES`, frames that do not fill the grid (truncated, or
        several focal planes without positions), or pixel data pydicom cannot parse.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.sequence import Sequence

    if path.stat().st_size > MAX_LEGACY_BYTES:
        raise SlideReadError(
            path,
            "an early-style DICOM WSI (no ImageType or frame layout) too large to fix in memory",
            "convert it to a pyramidal TIFF (e.g. with wsidicomizer or bfconvert), then retry",
        )
    damaged = "re-export or re-download it; the file is probably truncated or corrupt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            rows, cols = grid(ds)
            n = int(ds.get("NumberOfFrames", 1))
            encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated
            if encapsulated:
                frames = list(generate_frames(ds.PixelData, number_of_frames=n))
            else:
                size = len(ds.PixelData) // n
                frames = [ds.PixelData[k * size : (k + 1) * size] for k in range(n)]
        except SlideReadError:
            raise
        except Exception as exc:  # pydicom raises many kinds for damaged files
            raise SlideReadError(
                path, f"the DICOM pixel data cannot be parsed ({exc})", damaged
            ) from exc
        positioned = "PerFrameFunctionalGroupsSequence" in ds  # wsidicom places them
        if len(frames) != n or not all(frames) or (not positioned and n != rows * cols):
            raise SlideReadError(
                path,
                f"{len(frames)} of {n} frames, where its {cols} x {rows} grid of "
                f"{ds.Columns} x {ds.Rows}-px tiles needs {rows * cols}, and no frame positions",
                damaged,
            )
        if not positioned:
            order = frame_order(ds)
            slot = [0] * n
            for k in range(n):
                r, c = _place(order, k, rows, cols)
                slot[r * cols + c] = k
            frames = [frames[k] for k in slot]
            ds.PixelData = encapsulate(frames) if encapsulated else b"".join(frames)
            ds.DimensionOrganizationType = "TILED_FULL"
        if "ImageType" not in ds:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        if pixel_spacing(ds) is None:
            measures = Dataset()
            measures.PixelSpacing = [PLACEHOLDER_SPACING_MM, PLACEHOLDER_SPACING_MM]
            shared = Dataset()
            shared.PixelMeasuresSequence = Sequence([measures])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
        if "ImagedVolumeWidth" not in ds or "ImagedVolumeHeight" not in ds:
            mm_y, mm_x = pixel_spacing(ds) or [PLACEHOLDER_SPACING_MM] * 2
            ds.ImagedVolumeWidth = float(ds.TotalPixelMatrixColumns) * mm_x
            ds.ImagedVolumeHeight = float(ds.TotalPixelMatrixRows) * mm_y
        jpeg = ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        if jpeg and ds.PhotometricInterpretation == "RGB" and _jfif(frames[0]):
            ds.PhotometricInterpretation = "YBR_FULL_422"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    out.seek(0)
    return out


def is_vl_wsi(ds: Any) -> bool:
    """Whether a header is a VL Whole Slide Microscopy image."""
    return str(ds.get("SOPClassUID", "")) == _VL_WSI
