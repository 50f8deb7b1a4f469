"""Files a pathologist opens for one segmented slide, all written atomically.

- ``<name>_mask.png``: the tumor mask at the thumbnail scale (white on black);
- ``<name>_overlay.png``: the slide with the mask's outline (and the truth's, when known);
- ``<name>_errors.png`` (with truth): true positives green, false positives red, false
  negatives blue, over the dimmed slide;
- ``<name>_tumor.geojson``: the mask as level-0 polygons that QuPath imports;
- ``<name>_tiles.csv``: one row per tile (position, background, entropy, sifts, probabilities,
  label);
- ``<name>_locations.png``: the tile location map (union of kept tiles, paper Fig. 1c).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

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

__all__ = ["error_map", "overlay", "tile_table_csv", "write_segmentation"]


def _outline(image: NDArray[np.uint8], mask: NDArray[np.bool_], color: tuple[int, int, int],
             width: int) -> None:  # fmt: skip
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(image, contours, -1, color, width)


def overlay(
    pixels: NDArray[np.uint8], mask: NDArray[np.bool_], truth: NDArray[np.bool_] | None = None
) -> NDArray[np.uint8]:
    """The slide with the mask's outline (cyan) and the truth's (green): ``(H, W, 3)`` uint8."""
    out = np.ascontiguousarray(pixels, dtype=np.uint8).copy()
    width = max(1, round(max(out.shape[:2]) / 600))
    if truth is not None:
        _outline(out, np.asarray(truth, bool), TRUTH_OUTLINE, width)
    _outline(out, np.asarray(mask, bool), OUTLINE, width)
    return out


def error_map(
    pixels: NDArray[np.uint8], mask: NDArray[np.bool_], truth: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """TP green, FP red, FN blue over the slide dimmed to 40%: ``(H, W, 3)`` uint8."""
    dimmed = cv2.LUT(np.ascontiguousarray(pixels, np.uint8), linear_lut(0.4, 153.0))
    out = np.asarray(dimmed, dtype=np.uint8)
    m, t = np.asarray(mask, bool), np.asarray(truth, bool)
    out[m & t] = TP
    out[m & ~t] = FP
    out[~m & t] = FN
    return out


def tile_table_csv(result: SegmentResult, scale: tuple[float, float] | None = None) -> str:
    """One CSV row per tile: position (thumbnail and level-0 px), measures, sifts, p, label."""
    grid = result.grid
    xy = grid.th_xy()
    scale = scale or (1.0, 1.0)
    st = result.sifted
    probs = result.probs.reshape(-1, len(result.classes))
    labels = np.where(result.keep.ravel(), np.argmax(probs, axis=1), 0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["t_row", "t_col", "th_x", "th_y", "l0_x", "l0_y", "background", "entropy",
         "keep_background", "keep_rails", "keep", *[f"p_{c}" for c in result.classes], "label"]
    )  # fmt: skip
    kb, kr = st.keep_background.ravel(), st.keep_rails.ravel()
    bg, ent = st.stats.background.ravel(), st.stats.entropy.ravel()
    for i in range(len(grid)):
        t_row, t_col = divmod(i, grid.n_cols)
        w.writerow(
            [t_row, t_col, int(xy[i, 0]), int(xy[i, 1]), f"{xy[i, 0] * scale[0]:.1f}",
             f"{xy[i, 1] * scale[1]:.1f}", f"{bg[i]:.6f}", f"{ent[i]:.6f}", int(kb[i]),
             int(kr[i]), int(kb[i] and kr[i]), *[f"{v:.6f}" for v in probs[i]],
             result.classes[int(labels[i])]]
        )  # fmt: skip
    return buf.getvalue()


def _preview(image: NDArray[np.generic], longest: int, nearest: bool) -> NDArray[Any]:
    """``image`` shrunk so its longer side is at most ``longest`` (area, or nearest for masks)."""
    h, w = image.shape[:2]
    f = longest / max(h, w)
    if f >= 1:
        return np.asarray(image)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if nearest:
        small = cv2.resize(np.asarray(image, np.uint8), size, interpolation=cv2.INTER_NEAREST)
        return np.asarray(small > 0)
    return np.asarray(cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_AREA))


def write_segmentation(
    folder: str | os.PathLike[str],
    name: str,
    result: SegmentResult,
    truth: NDArray[np.bool_] | None = None,
    *,
    preview_longest: int = 3000,
) -> dict[str, Path]:
    """Write every output of one slide into ``folder``; returns kind -> path.

    The mask PNG (1 bit), GeoJSON and tile table are at full thumbnail resolution; the three
    RGB pictures (overlay, error map, location map) are previews at most ``preview_longest``
    px long (a 6000-px RGB PNG takes seconds to encode and is no easier to look at).
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    pixels = result.thumb.pixels if result.thumb is not None else result.pixels
    scale = result.thumb.scale if result.thumb is not None else (1.0, 1.0)
    small = _preview(pixels, preview_longest, nearest=False)
    mask_s = _preview(result.mask, preview_longest, nearest=True)
    truth_s = None if truth is None else _preview(truth, preview_longest, nearest=True)
    kept_s = _preview(result.grid.location_map(result.keep), preview_longest, nearest=True)
    out = {
        "mask": write_png(root / f"{name}_mask.png", result.mask),
        "overlay": write_png(root / f"{name}_overlay.png", overlay(small, mask_s, truth_s)),
        "locations": write_png(root / f"{name}_locations.png", location_map_image(small, kept_s)),
        "geojson": write_geojson(
            root / f"{name}_tumor.geojson", mask_to_geojson(result.mask, scale)
        ),
        "tiles": atomic_write_text(root / f"{name}_tiles.csv", tile_table_csv(result, scale)),
    }
    if truth_s is not None:
        out["errors"] = write_png(root / f"{name}_errors.png", error_map(small, mask_s, truth_s))
    return out
