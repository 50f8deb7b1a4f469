"""Sift one slide and write its maps: the ``slidesift sift`` stage as a library function.

Files, all written atomically into one folder and named after the slide's stem (this module
owns their names and formats):

- ``<stem>_thumb.png``: the thumbnail;
- ``<stem>_locations.png``: the union of kept tiles, white on black (paper Fig. 1c);
- ``<stem>_locations_overlay.png``: the slide with everything outside the kept tiles dimmed;
- ``<stem>_tiles.csv``: one row per tile (:func:`write_tile_table`);
- ``<stem>_summary.json``: the thumbnail's scale, the options and the counts kept.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slidesift.io.atomic import atomic_write_json, atomic_write_text
from slidesift.io.downsample import Downsample
from slidesift.io.outputs import location_map_image, write_png
from slidesift.io.slide import Thumb, open_slide, read_thumb
from slidesift.rails import Rails
from slidesift.sift import SiftResult, SiftSpec, measure_tiles, sift
from slidesift.tiles import GridSpec

__all__ = ["SiftRun", "sift_slide", "write_tile_table"]

#: Column names of ``<stem>_tiles.csv``.
TILE_COLUMNS = (
    "t_row", "t_col", "th_x", "th_y", "l0_x", "l0_y", "background", "entropy",
    "keep_background", "keep_rails", "keep",
)  # fmt: skip


@dataclass(frozen=True)
class SiftRun:
    """What one sift of one slide produced.

    Attributes
    ----------
    thumb
        The downsampled slide.
    result
        Per-tile measures and decisions.
    outputs
        Kind (``thumbnail``, ``locations``, ``overlay``, ``tiles``, ``summary``) -> file.
    """

    thumb: Thumb
    result: SiftResult
    outputs: dict[str, Path]


def read_slide_thumb(path: str | os.PathLike[str], downsample: Downsample) -> Thumb:
    """Open a slide and downsample it."""
    with open_slide(path) as slide:
        return read_thumb(slide, **downsample.to_dict())


def sift_slide(
    slide_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    downsample: Downsample,
    grid: GridSpec,
    spec: SiftSpec,
    rails: Rails | None,
    thumb: Thumb | None = None,
    on_status: Callable[[str], None] | None = None,
) -> SiftRun:
    """Sift one slide and write its thumbnail, location maps, tile CSV and summary JSON.

    Parameters
    ----------
    slide_path
        The slide; its stem names the files.
    out_dir
        Folder for the files (made when missing).
    downsample, grid, spec
        Thumbnail scale, tile geometry, background and entropy options.
    rails
        Entropy rails, or ``None`` for the background sift alone.
    thumb
        The slide already downsampled at ``downsample`` (saves reading it again).
    on_status
        Called with a short line before each long step (for a status display).
    """
    status = on_status or (lambda _line: None)
    slide_path, out = Path(slide_path), Path(out_dir)
    if thumb is None:
        status(f"reading {slide_path.name}")
        thumb = read_slide_thumb(slide_path, downsample)
    tiles = grid.over(thumb.pixels.shape[:2])
    status(f"measuring {len(tiles)} tiles")
    stats = measure_tiles(thumb.pixels, tiles, spec, workers=os.cpu_count() or 1)
    result = sift(stats, rails)
    kept_area = tiles.location_map(result.keep)
    out.mkdir(parents=True, exist_ok=True)
    stem = slide_path.stem
    outputs = {
        "thumbnail": write_png(out / f"{stem}_thumb.png", thumb.pixels),
        "locations": write_png(out / f"{stem}_locations.png", kept_area),
        "overlay": write_png(
            out / f"{stem}_locations_overlay.png", location_map_image(thumb.pixels, kept_area)
        ),
        "tiles": write_tile_table(out / f"{stem}_tiles.csv", result, thumb),
    }
    summary = {
        "slide": str(slide_path),
        "thumb_size": list(thumb.size),
        "scale": list(thumb.scale),
        "mpp": list(thumb.mpp) if thumb.mpp else None,
        "downsample": downsample.to_dict(),
        "tile": tiles.tile,
        "stride": tiles.stride,
        "sift": spec.to_dict(),
        "rails": rails.to_dict() if rails else None,
        **result.summary(),
    }
    outputs["summary"] = atomic_write_json(out / f"{stem}_summary.json", summary)
    return SiftRun(thumb, result, outputs)


def write_tile_table(path: str | os.PathLike[str], result: SiftResult, thumb: Thumb) -> Path:
    """Write one CSV row per tile: grid index, position in both frames, measures, decisions.

    Columns: :data:`TILE_COLUMNS`.
    """
    grid = result.stats.grid
    xy = grid.th_xy()
    boxes = grid.l0_boxes(thumb.scale)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TILE_COLUMNS)
    bg = result.stats.background.ravel()
    ent = result.stats.entropy.ravel()
    kb = result.keep_background.ravel()
    kr = result.keep_rails.ravel()
    for i in range(len(grid)):
        t_row, t_col = divmod(i, grid.n_cols)
        writer.writerow(
            [t_row, t_col, int(xy[i, 0]), int(xy[i, 1]), f"{boxes[i, 0]:.1f}", f"{boxes[i, 1]:.1f}",
             f"{bg[i]:.6f}", f"{ent[i]:.6f}", int(kb[i]), int(kr[i]), int(kb[i] and kr[i])]
        )  # fmt: skip
    return atomic_write_text(path, buf.getvalue())
