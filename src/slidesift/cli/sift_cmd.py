"""``slidesift sift``: downsample a slide, tile it, sift by background and rails, write maps."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from slidesift.cli.options import (
    downsample_options,
    grid_options,
    output_console,
    resolve_downsample,
    sift_options,
    sift_spec,
)
from slidesift.io.annotations import read_truth
from slidesift.io.atomic import atomic_write_text
from slidesift.io.outputs import location_map_image, write_png, write_tile_table
from slidesift.io.slide import Thumb, open_slide, read_thumb
from slidesift.rails import Rails, fit_rails, tumor_tile_entropies
from slidesift.sift import SiftResult, SiftSpec, measure_tiles, sift
from slidesift.tiles import TileGrid


@dataclass(frozen=True)
class SiftRun:
    """What one sift of one slide produced (for printing and for the demo)."""

    thumb: Thumb
    result: SiftResult
    outputs: dict[str, Path]


def read_slide_thumb(path: Path, downsample: dict[str, Any], console: Console) -> Thumb:
    """Open a slide and downsample it, with a status line while it reads."""
    with console.status(f"reading {path.name}"), open_slide(path) as slide:
        return read_thumb(slide, **downsample)


def make_grid(thumb: Thumb, tile: int, overlap: float, stride: int | None) -> TileGrid:
    """The grid the options ask for over a thumbnail."""
    shape = thumb.pixels.shape[:2]
    if stride is not None:
        return TileGrid.from_stride(shape, tile=tile, stride=stride)
    return TileGrid.from_overlap(shape, tile=tile, overlap=overlap)


def run_sift(
    slide_path: Path,
    out_dir: Path,
    *,
    downsample: dict[str, Any],
    tile: int,
    overlap: float,
    stride: int | None,
    spec: SiftSpec,
    rails: Rails | None,
    console: Console,
    thumb: Thumb | None = None,
) -> SiftRun:
    """Sift one slide and write its thumbnail, location maps, tile CSV and summary JSON.

    ``thumb``, when the caller already downsampled the slide, saves reading it again.
    """
    if thumb is None:
        thumb = read_slide_thumb(slide_path, downsample, console)
    grid = make_grid(thumb, tile, overlap, stride)
    with console.status(f"measuring {len(grid)} tiles"):
        stats = measure_tiles(thumb.pixels, grid, spec, workers=os.cpu_count() or 1)
    result = sift(stats, rails)
    kept_area = grid.location_map(result.keep)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = slide_path.stem
    outputs = {
        "thumbnail": write_png(out_dir / f"{stem}_thumb.png", thumb.pixels),
        "locations": write_png(out_dir / f"{stem}_locations.png", kept_area),
        "overlay": write_png(
            out_dir / f"{stem}_locations_overlay.png", location_map_image(thumb.pixels, kept_area)
        ),
        "tiles": write_tile_table(out_dir / f"{stem}_tiles.csv", result, thumb),
    }
    summary = {
        "slide": str(slide_path),
        "thumb_size": list(thumb.size),
        "scale": list(thumb.scale),
        "mpp": list(thumb.mpp) if thumb.mpp else None,
        "tile": grid.tile,
        "stride": grid.stride,
        "sift": spec.to_dict(),
        "rails": rails.to_dict() if rails else None,
        **result.summary(),
    }
    outputs["summary"] = atomic_write_text(
        out_dir / f"{stem}_summary.json", json.dumps(summary, indent=2) + "\n"
    )
    return SiftRun(thumb, result, outputs)


def summary_table(title: str, runs: dict[str, SiftRun]) -> Table:
    """A rich table of tiles kept by each sift, one row per slide."""
    table = Table(title=title)
    for col in ("slide", "thumbnail", "tiles", "kept: background", "kept: + rails", "kept %"):
        table.add_column(col, justify="right" if col != "slide" else "left")
    for name, run in runs.items():
        s = run.result.summary()
        w, h = run.thumb.size
        table.add_row(
            name,
            f"{w} x {h}",
            str(s["tiles"]),
            str(s["kept_background"]),
            str(s["kept"]),
            f"{100 * s['fraction_kept']:.1f}",
        )
    return table


@click.command("sift")
@click.argument("slide", type=click.Path(path_type=Path, exists=True))
@downsample_options
@grid_options
@sift_options
@click.option(
    "--rails",
    "rails_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Rails JSON (from `slidesift rails`) to sift by entropy.",
)
@click.option(
    "--truth",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Fit rails on this slide's own tumor (mask, ASAP XML or GeoJSON) instead.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("slidesift-out"),
    show_default=True,
    help="Folder for the maps, the tile CSV and the summary.",
)
def sift_command(
    slide: Path,
    longest: int | None,
    mpp: float | None,
    tile: int,
    overlap: float,
    stride: int | None,
    background: str,
    max_background: float,
    entropy: str,
    rails_path: Path | None,
    truth: Path | None,
    out_dir: Path,
) -> None:
    """Tile SLIDE and sift every tile by background and entropy rails.

    Writes SLIDE_thumb.png, SLIDE_locations.png (union of kept tiles, white on black),
    SLIDE_locations_overlay.png, SLIDE_tiles.csv (one row per tile) and SLIDE_summary.json.

    \b
    Examples (cohort of `slidesift phantom --out cohort --count 10`, rails.json fitted at the
    same -N and -T by `slidesift rails`, see its --help):
      slidesift sift cohort/slides/paip_006.svs -N 1500 -T 96 --rails rails.json --out maps
    Rails fitted on the slide's own truth (ASAP XML of `slidesift phantom --regime camelyon`;
    small lesions need a fine thumbnail, as in the paper's CAMELYON16 settings):
      slidesift sift nodes/slides/camelyon_000.tif -N 12000 -T 200 \\
        --truth nodes/annotations/camelyon_000.xml --out maps
    The paper's PAIP settings on your own slide:
      slidesift sift slide.svs -N 6000 -T 400 --overlap 0.8 --rails rails_400.json
    """
    console = output_console()
    spec = sift_spec(background, max_background, entropy)
    downsample = resolve_downsample(longest, mpp)
    rails: Rails | None = None
    thumb: Thumb | None = None
    if rails_path is not None and truth is not None:
        raise click.UsageError("give --rails or --truth, not both")
    if rails_path is not None:
        rails = Rails.load(rails_path)
        rails.require_tile(tile)  # before the slide is read, which may take minutes
    elif truth is not None:
        thumb = read_slide_thumb(slide, downsample, console)
        grid = make_grid(thumb, tile, overlap, stride)
        tumor = read_truth(truth, thumb)
        rails = fit_rails(
            tumor_tile_entropies(thumb.pixels, tumor, grid, spec), entropy=spec.entropy, tile=tile
        )
        console.print(f"fitted {rails} on {rails.n_tiles} tumor tiles")
    run = run_sift(
        slide,
        out_dir,
        downsample=downsample,
        tile=tile,
        overlap=overlap,
        stride=stride,
        spec=spec,
        rails=rails,
        console=console,
        thumb=thumb,
    )
    console.print(summary_table("sift", {slide.name: run}))
    console.print(f"maps and tables in [bold]{out_dir}[/]")
