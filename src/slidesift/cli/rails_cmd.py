"""``slidesift rails``: fit entropy rails on tumor tiles; show their spread over tile sizes."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from slidesift.cli.options import (
    downsample_options,
    output_console,
    resolve_downsample,
    sift_options,
    sift_spec,
)
from slidesift.cli.views import spread_table
from slidesift.errors import ConfigError
from slidesift.io.annotations import read_truth
from slidesift.io.slide import open_slide, read_thumb
from slidesift.rails import write_spread
from slidesift.tumor_rails import rails_spread


@click.command()
@click.option(
    "--slide", "-s", "slides", multiple=True, required=True,
    type=click.Path(path_type=Path, exists=True),
    help="A training slide; repeat for several (pair each with a --truth).",
)  # fmt: skip
@click.option(
    "--truth", "-t", "truths", multiple=True, required=True,
    type=click.Path(path_type=Path, exists=True),
    help="Its tumor ground truth: mask image, ASAP XML or GeoJSON (same order as --slide).",
)  # fmt: skip
@downsample_options
@sift_options
@click.option("--tile", "-T", type=int, default=400, show_default=True, help="Tile side in px.")
@click.option(
    "--overlap", type=float, default=0.5, show_default=True, help="Overlap of the tumor tiles."
)
@click.option(
    "--spread", "spread_sizes", default=None,
    help="Comma-separated tile sizes to report the rails spread for (paper Fig. 5).",
)  # fmt: skip
@click.option(
    "--out", "out_path", type=click.Path(path_type=Path), default=None,
    help="Write the rails at --tile to this JSON file.",
)  # fmt: skip
@click.option(
    "--spread-out", "spread_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Write the rails spread rows (every --spread size) to this JSON file, for "
    "`slidesift report --rails-spread`.",
)  # fmt: skip
def rails(
    slides: tuple[Path, ...],
    truths: tuple[Path, ...],
    longest: int | None,
    mpp: float | None,
    background: str,
    max_background: float,
    entropy: str,
    tile: int,
    overlap: float,
    spread_sizes: str | None,
    out_path: Path | None,
    spread_out: Path | None,
) -> None:
    """Fit entropy rails (min and max entropy of tumor tiles) over training slides.

    \b
    Examples (cohort of `slidesift phantom --out cohort --count 10`; truth as TIFF mask or
    QuPath GeoJSON):
      slidesift rails -s cohort/slides/paip_000.svs -t cohort/masks/paip_000_mask.tif \\
        -s cohort/slides/paip_001.svs -t cohort/annotations/paip_001.geojson \\
        -N 1500 -T 96 --out rails.json
    The spread of the rails against tile size, for `slidesift report --rails-spread`:
      slidesift rails -s cohort/slides/paip_000.svs -t cohort/masks/paip_000_mask.tif \\
        -N 1500 -T 96 --spread 64,96,128,192 --spread-out rails_spread.json
    Lymph nodes with ASAP XML truth (`slidesift phantom --out nodes --regime camelyon ...`):
      slidesift rails -s nodes/slides/camelyon_000.tif -t nodes/annotations/camelyon_000.xml \\
        -N 12000 -T 200 --spread 100,150,200,300,400
    """
    if len(slides) != len(truths):
        raise click.UsageError(f"{len(slides)} --slide but {len(truths)} --truth; pair them")
    console = output_console()
    spec = sift_spec(background, max_background, entropy)
    downsample = resolve_downsample(longest, mpp)
    images: list[tuple[np.ndarray, np.ndarray]] = []
    for slide_path, truth in zip(slides, truths, strict=True):
        with console.status(f"reading {slide_path.name}"), open_slide(slide_path) as slide:
            thumb = read_thumb(slide, **downsample.to_dict())
        images.append((thumb.pixels, read_truth(truth, thumb)))
    sizes = [tile]
    if spread_sizes:
        try:
            sizes = sorted({int(s) for s in spread_sizes.split(",") if s.strip()} | {tile})
        except ValueError as exc:
            raise click.BadParameter(f"{spread_sizes!r} is not a list of integers") from exc
    smallest = min(min(pixels.shape[:2]) for pixels, _ in images)
    if tile > smallest:
        raise ConfigError(
            "tile",
            tile,
            f"at most the smallest thumbnail side ({smallest} px); lower -T or raise -N",
        )
    rows = rails_spread(images, sizes, overlap=overlap, spec=spec)
    console.print(spread_table(rows))
    if spread_out is not None:
        write_spread(spread_out, rows)
        console.print(f"rails spread written to [bold]{spread_out}[/]")
    at_tile = next(r for r in rows if r.tile == tile)
    if at_tile.rails is None:
        raise click.ClickException(f"no tumor tile of {tile} px survived the background sift")
    console.print(f"T={tile}: {at_tile.rails}")
    if out_path is not None:
        at_tile.rails.save(out_path)
        console.print(f"rails written to [bold]{out_path}[/]")
