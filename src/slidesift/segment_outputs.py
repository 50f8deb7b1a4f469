"""Files a pathologist opens for one segmented slide, written atomically and in parallel.

The kinds (:data:`OUTPUT_KINDS`, the names ``--outputs`` takes), as ``<name>_<suffix>``:

- ``mask`` -> ``_mask.png``: the tumor mask at the thumbnail scale (1-bit, white on black);
- ``overlay`` -> ``_overlay.png``: the slide with the mask's outline (and the truth's, when
  known);
- ``errors`` -> ``_errors.png`` (only with truth): true positives green, false positives red,
  false negatives blue, over the dimmed slide;
- ``geojson`` -> ``_tumor.geojson``: the mask as level-0 polygons that QuPath imports;
- ``tiles`` -> ``_tiles.csv``: one row per tile (position, background, entropy, sifts,
  probabilities, label);
- ``locations`` -> ``_locations.png``: the tile location map (union of kept tiles, paper
  Fig. 1c).

The mask, the GeoJSON and the tile table are at the thumbnail's full resolution. The three
pictures (:data:`PREVIEW_KINDS`) are previews: the thumbnail shrunk by the smallest whole
factor ``k`` that brings its longer side to at most ``preview_px`` (:data:`PREVIEW_PX`, 2000:
a 6000-px thumbnail by 3, a 15000-px one by 8), each ``k x k`` block averaged, the masks drawn
on it sampled at each block's centre; the last ``< k`` rows and columns are left out.
``preview_px=None`` draws them at the thumbnail's full size (for a 6000-px slide about 10x
the encoding time and 8x the bytes, and no sharper than the GeoJSON on the slide in QuPath).

:func:`write_segmentation` encodes the files in a thread pool (PNG deflating, contour tracing
and resizing release the GIL); the bytes do not depend on the number of threads.
"""

from __future__ import annotations

import csv
import io
import math
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.geojson import mask_to_geojson, write_geojson
from slidesift.io.outputs import (
    FN,
    FP,
    OUTLINE,
    TP,
    TRUTH_OUTLINE,
    linear_lut,
    location_map_image,
    write_png,
)
from slidesift.segment import SegmentResult

__all__ = [
    "MIN_PREVIEW_PX",
    "OUTPUT_KINDS",
    "PREVIEW_KINDS",
    "PREVIEW_PX",
    "SUFFIXES",
    "OutputSpec",
    "error_map",
    "output_path",
    "overlay",
    "tile_table_csv",
    "write_segmentation",
]

#: Every kind of file, in the order they are listed and returned.
OUTPUT_KINDS = ("mask", "overlay", "errors", "geojson", "tiles", "locations")
#: Kind -> the file name after ``<name>_``.
SUFFIXES = {
    "mask": "mask.png",
    "overlay": "overlay.png",
    "errors": "errors.png",
    "geojson": "tumor.geojson",
    "tiles": "tiles.csv",
    "locations": "locations.png",
}
#: The pictures drawn at the preview size.
PREVIEW_KINDS = ("overlay", "errors", "locations")
#: Default longest side of the previews in px (the report shows them at <= 1200 px).
PREVIEW_PX = 2000
#: The smallest preview side accepted.
MIN_PREVIEW_PX = 16


def _kind_names(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"mask,geojson"`` or ``["mask", "geojson"]`` as kinds in :data:`OUTPUT_KINDS` order."""
    valid = f"names from {', '.join(OUTPUT_KINDS)}, or all; comma-separated"
    raw = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in raw):
        raise ConfigError("outputs", value, valid)
    names = [n.strip().lower() for n in raw if n.strip()]
    wanted = set(OUTPUT_KINDS) if "all" in names else set(names)
    unknown = sorted(wanted - set(OUTPUT_KINDS))
    if unknown:
        raise ConfigError("outputs", ",".join(unknown), valid)
    if not wanted:
        raise ConfigError("outputs", value, f"at least one kind: {valid}")
    return tuple(k for k in OUTPUT_KINDS if k in wanted)


@dataclass(frozen=True)
class OutputSpec:
    """Which files :func:`write_segmentation` writes, and how large its previews are.

    Attributes
    ----------
    kinds
        Names from :data:`OUTPUT_KINDS` (or ``"all"``); given as a tuple or a comma-separated
        string, kept in :data:`OUTPUT_KINDS` order. ``errors`` is written only for slides with
        truth.
    preview_px
        Longest side of the previews (overlay, errors, locations) in px, at least 16; ``None``:
        the thumbnail's full size.

    Raises
    ------
    ConfigError
        An unknown kind (the message lists the valid ones), no kind at all, or a preview side
        under 16 px.
    """

    kinds: tuple[str, ...] = OUTPUT_KINDS
    preview_px: int | None = PREVIEW_PX

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _kind_names(self.kinds))
        px = self.preview_px
        if px is not None and (
            isinstance(px, bool) or not isinstance(px, (int, np.integer)) or px < MIN_PREVIEW_PX
        ):
            raise ConfigError(
                "preview_px", px, f"a side of at least {MIN_PREVIEW_PX} px, or None for full size"
            )
        if px is not None:
            object.__setattr__(self, "preview_px", int(px))

    @classmethod
    def of(cls, outputs: OutputSpec | str | Iterable[str] | None = None) -> OutputSpec:
        """``outputs`` as an :class:`OutputSpec`: ``None`` is the default (every kind, previews
        at :data:`PREVIEW_PX`); names (``"mask,geojson"``) keep the default preview size."""
        if outputs is None:
            return cls()
        if isinstance(outputs, OutputSpec):
            return outputs
        return cls(_kind_names(outputs))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (a cohort slide's fingerprint holds them)."""
        return {"kinds": list(self.kinds), "preview_px": self.preview_px}


def output_path(folder: str | os.PathLike[str], name: str, kind: str) -> Path:
    """Where :func:`write_segmentation` writes ``kind`` of slide ``name`` in ``folder``."""
    return Path(folder) / f"{name}_{SUFFIXES[kind]}"


def _outline(image: NDArray[np.uint8], mask: NDArray[np.bool_], color: tuple[int, int, int],
             width: int) -> None:  # fmt: skip
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(image, contours, -1, color, width)


def overlay(
    pixels: NDArray[np.uint8], mask: NDArray[np.bool_], truth: NDArray[np.bool_] | None = None
) -> NDArray[np.uint8]:
    """The slide with the mask's outline (cyan) and the truth's (green): ``(H, W, 3)`` uint8.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB.
    mask, truth
        ``(H, W)`` bool.
    """
    out = np.ascontiguousarray(pixels, dtype=np.uint8).copy()
    width = max(1, round(max(out.shape[:2]) / 600))
    if truth is not None:
        _outline(out, np.asarray(truth, bool), TRUTH_OUTLINE, width)
    _outline(out, np.asarray(mask, bool), OUTLINE, width)
    return out


#: ``(256, 1, 3)`` lookup table: error code (1 FP, 2 FN, 3 TP) -> RGB.
_ERROR_COLOURS = np.zeros((256, 1, 3), np.uint8)
_ERROR_COLOURS[1:4, 0] = (FP, FN, TP)


def error_map(
    pixels: NDArray[np.uint8], mask: NDArray[np.bool_], truth: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """TP green, FP red, FN blue over the slide dimmed to 40%: ``(H, W, 3)`` uint8.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 RGB.
    mask, truth
        ``(H, W)`` bool.
    """
    out = np.asarray(cv2.LUT(np.ascontiguousarray(pixels, np.uint8), linear_lut(0.4, 153.0)))
    m = np.ascontiguousarray(mask, bool).view(np.uint8)
    t = np.ascontiguousarray(truth, bool).view(np.uint8)
    code = m + (t << 1)  # 0 neither, 1 FP, 2 FN, 3 TP
    # each code's colour through a 3-channel lookup table: 8x faster than palette[code]
    colours = cv2.LUT(cv2.merge([code, code, code]), _ERROR_COLOURS)
    cv2.copyTo(colours, code, out)  # colour where code != 0
    return np.asarray(out, np.uint8)


def _csv_cell(text: str) -> str:
    """``text`` as the csv module writes one cell (quoted when it must be)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def tile_table_csv(result: SegmentResult, scale: tuple[float, float] | None = None) -> str:
    """One CSV row per tile: position (thumbnail and level-0 px), measures, sifts, p, label.

    Parameters
    ----------
    result
        The segmented slide (``len(result.grid)`` tiles).
    scale
        ``(sx, sy)`` level-0 px per thumbnail px (default ``(1, 1)``).

    Returns
    -------
    str
        A header and ``len(result.grid)`` rows, ``\\n``-terminated.
    """
    grid = result.grid
    xy = grid.th_xy()
    sx, sy = scale or (1.0, 1.0)
    st = result.sifted
    probs = result.probs.reshape(-1, len(result.classes))
    labels = np.where(result.keep.ravel(), np.argmax(probs, axis=1), 0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["t_row", "t_col", "th_x", "th_y", "l0_x", "l0_y", "background", "entropy",
         "keep_background", "keep_rails", "keep", *[f"p_{c}" for c in result.classes], "label"]
    )  # fmt: skip
    kb = np.asarray(st.keep_background, bool).ravel()
    kr = np.asarray(st.keep_rails, bool).ravel()
    t_row, t_col = np.divmod(np.arange(len(grid)), grid.n_cols)
    names = [_csv_cell(c) for c in result.classes]
    columns = [
        t_row.tolist(), t_col.tolist(), xy[:, 0].tolist(), xy[:, 1].tolist(),
        (xy[:, 0] * sx).tolist(), (xy[:, 1] * sy).tolist(),
        st.stats.background.ravel().tolist(), st.stats.entropy.ravel().tolist(),
        kb.astype(int).tolist(), kr.astype(int).tolist(), (kb & kr).astype(int).tolist(),
        *(probs[:, j].tolist() for j in range(probs.shape[1])),
        [names[i] for i in labels.tolist()],
    ]  # fmt: skip
    # one %-template a row: 5x faster than csv.writer with an f-string per cell, same text
    row = "%d,%d,%d,%d,%.1f,%.1f,%.6f,%.6f,%d,%d,%d" + ",%.6f" * probs.shape[1] + ",%s\n"
    buf.write("".join(row % cells for cells in zip(*columns, strict=True)))
    return buf.getvalue()


def _preview_factor(shape: tuple[int, ...], longest: int | None) -> int:
    """The smallest whole ``k`` that brings the longer side to ``<= longest`` (1: full size)."""
    h, w = shape[:2]
    if longest is None:
        return 1
    return max(1, min(math.ceil(max(h, w) / longest), h, w))


def _shrink(pixels: NDArray[np.uint8], k: int) -> NDArray[np.uint8]:
    """``(H, W, 3)`` -> ``(H // k, W // k, 3)``: each ``k x k`` block's mean.

    A whole factor takes OpenCV's fast area path (3x faster than a fractional one).
    """
    if k == 1:
        return pixels
    h, w = pixels.shape[0] // k, pixels.shape[1] // k
    return np.asarray(cv2.resize(pixels[: h * k, : w * k], (w, h), interpolation=cv2.INTER_AREA))


def _sample(mask: NDArray[np.bool_], k: int) -> NDArray[np.bool_]:
    """``(H, W)`` -> ``(H // k, W // k)``: the pixel at each ``k x k`` block's centre."""
    if k == 1:
        return np.asarray(mask, bool)
    h, w = mask.shape[0] // k, mask.shape[1] // k
    c = k // 2
    return np.ascontiguousarray(mask[c : h * k : k, c : w * k : k], dtype=bool)


class _Previews:
    """The preview-sized slide and masks, made once by the first job that asks (thread-safe)."""

    def __init__(
        self,
        pixels: NDArray[np.uint8],
        result: SegmentResult,
        truth: NDArray[np.bool_] | None,
        longest: int | None,
    ) -> None:
        self._args = (pixels, result, truth, longest)
        self._lock = threading.Lock()
        self._made: tuple[Any, ...] | None = None

    def get(self) -> tuple[Any, ...]:
        """``(pixels, mask, truth or None, kept area)`` at the preview size."""
        with self._lock:
            if self._made is None:
                pixels, result, truth, longest = self._args
                k = _preview_factor(pixels.shape, longest)
                self._made = (
                    _shrink(np.ascontiguousarray(pixels, np.uint8), k),
                    _sample(result.mask, k),
                    None if truth is None else _sample(truth, k),
                    _sample(result.grid.location_map(result.keep), k),
                )
            return self._made


def _cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _run(jobs: dict[str, Callable[[], Path]], threads: int | None) -> dict[str, Path]:
    """Run every job (on ``threads`` threads; 1: here, one after another); kind -> path."""
    n = min(len(jobs), threads or _cores())
    if n <= 1:
        return {kind: job() for kind, job in jobs.items()}
    with ThreadPoolExecutor(n, thread_name_prefix="slidesift-write") as pool:
        futures = {kind: pool.submit(job) for kind, job in jobs.items()}
        return {kind: f.result() for kind, f in futures.items()}


def write_segmentation(
    folder: str | os.PathLike[str],
    name: str,
    result: SegmentResult,
    truth: NDArray[np.bool_] | None = None,
    *,
    outputs: OutputSpec | str | Iterable[str] | None = None,
    threads: int | None = None,
) -> dict[str, Path]:
    """Write the chosen outputs of one slide into ``folder``, each atomically; kind -> path.

    Parameters
    ----------
    folder
        The slide's folder (made when missing).
    name
        The slide's name: the files are ``<name>_<suffix>`` (:data:`SUFFIXES`).
    result
        The segmented slide; its thumbnail's pixels (before stain normalisation) are drawn.
    truth
        ``(H, W)`` bool on the thumbnail grid, or ``None``; the error map needs it.
    outputs
        Which files and the preview size: an :class:`OutputSpec`, or kind names
        (``"mask,geojson"``, ``["overlay"]``, ``"all"``) with previews at
        :data:`PREVIEW_PX`. Default: every kind, previews at :data:`PREVIEW_PX`.
    threads
        Threads that encode the files (default: the cores this process may use; 1 writes them
        one after another). The bytes are the same for any number.

    Returns
    -------
    dict
        Kind -> path of each file written, in :data:`OUTPUT_KINDS` order (no ``errors``
        without truth).

    Raises
    ------
    ConfigError
        ``outputs`` names an unknown kind.
    OutputError
        A file cannot be written.

    Notes
    -----
    A file of a kind not written this time (not chosen, or ``errors`` without truth) that an
    earlier call left under this name is removed, so the folder never mixes two runs' files.
    """
    spec = OutputSpec.of(outputs)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    pixels = result.thumb.pixels if result.thumb is not None else result.pixels
    scale = result.thumb.scale if result.thumb is not None else (1.0, 1.0)
    kinds = [k for k in spec.kinds if k != "errors" or truth is not None]
    for kind in OUTPUT_KINDS:
        if kind not in kinds:
            output_path(root, name, kind).unlink(missing_ok=True)
    small = _Previews(pixels, result, truth, spec.preview_px)

    def path(kind: str) -> Path:
        return output_path(root, name, kind)

    def errors() -> Path:
        p, m, t, _ = small.get()
        return write_png(path("errors"), error_map(p, m, t))

    makers: dict[str, Callable[[], Path]] = {  # the slowest first: the pool ends sooner
        "geojson": lambda: write_geojson(path("geojson"), mask_to_geojson(result.mask, scale)),
        "overlay": lambda: write_png(path("overlay"), overlay(*small.get()[:3])),
        "errors": errors,
        "locations": lambda: write_png(
            path("locations"), location_map_image(small.get()[0], small.get()[3])
        ),
        "tiles": lambda: atomic_write_text(path("tiles"), tile_table_csv(result, scale)),
        "mask": lambda: write_png(path("mask"), result.mask),
    }
    written = _run({k: job for k, job in makers.items() if k in kinds}, threads)
    return {k: written[k] for k in OUTPUT_KINDS if k in written}
