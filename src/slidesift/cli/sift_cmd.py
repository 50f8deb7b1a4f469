"""``slidesift sift``: downsample a slide, tile it, sift by background and rails, write maps."""

from __future__ import annotations

from pathlib import Path

import click

from slidesift.cli.options import (
    downsample_options,
    grid_options,
    hold_output_folder,
    output_console,
    resolve_downsample,
    sift_options,
    sift_spec,
)
from slidesift.cli.views import sift_table
from slidesift.io.annotations import read_truth
from slidesift.io.slide import Thumb
from slidesift.rails import Rails, fit_rails
from slidesift.sift_maps import read_slide_thumb, sift_slide
from slidesift.tiles import GridSpec
from slidesift.tumor_rails import tumor_tile_entropies


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
    hold_output_folder(out_dir)
    console = output_console()
    spec = sift_spec(background, max_background, entropy)
    downsample = resolve_downsample(longest, mpp)
    grid = GridSpec(tile, overlap, stride)
    rails: Rails | None = None
    thumb: Thumb | None = None
    if rails_path is not None and truth is not None:
        raise click.UsageError("give --rails or --truth, not both")
    if rails_path is not None:
        rails = Rails.load(rails_path)
        rails.require_tile(tile)  # before the slide is read, which may take minutes
    elif truth is not None:
        with console.status(f"reading {slide.name}"):
            thumb = read_slide_thumb(slide, downsample)
        tumor = read_truth(truth, thumb)
        tiles = grid.over(thumb.pixels.shape[:2])
        rails = fit_rails(
            tumor_tile_entropies(thumb.pixels, tumor, tiles, spec), entropy=spec.entropy, tile=tile
        )
        console.print(f"fitted {rails} on {rails.n_tiles} tumor tiles")
    with console.status("sifting") as status:
        run = sift_slide(
            slide, out_dir, downsample=downsample, grid=grid, spec=spec, rails=rails, thumb=thumb,
            on_status=status.update,
        )  # fmt: skip
    console.print(sift_table("sift", {slide.name: run}))
    console.print(f"maps and tables in [bold]{out_dir}[/]")
