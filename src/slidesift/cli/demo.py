"""``slidesift demo``: the whole foundation on a built-in phantom, no data needed.

Makes two H&E-like phantom slides (pyramidal TIFFs with ASAP XML and a TIFF mask), fits entropy
rails on the first one's tumor, prints the rails spread over tile sizes (paper Fig. 5), sifts the
second slide and reports how much tumor the kept tiles cover and how much other tissue they drop.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from slidesift.cli.rails_cmd import spread_table
from slidesift.cli.sift_cmd import run_sift, summary_table
from slidesift.io.annotations import mask_to_polygons, read_asap_xml, read_mask, write_asap_xml
from slidesift.io.slide import open_slide, read_thumb
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.phantom import he_like_image
from slidesift.rails import fit_rails, rails_spread, tumor_tile_entropies
from slidesift.sift import SiftSpec
from slidesift.tiles import TileGrid

#: Demo geometry: level 0 of each phantom, the thumbnail's longer side, tile and overlap.
L0_SHAPE = (3000, 4000)
LONGEST = 2000
TILE = 100
OVERLAP = 0.8


def write_phantoms(out: Path, console: Console) -> dict[str, tuple[Path, Path]]:
    """Write the demo's two phantom slides with their ground truth; returns name -> paths."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, tuple[Path, Path]] = {}
    for name, seed in (("train", 1), ("test", 2)):
        with console.status(f"making phantom slide {name}"):
            pixels, tumor = he_like_image(L0_SHAPE, seed=seed, nucleus_px=6.0)
            slide = write_pyramidal_tiff(out / f"{name}.tif", pixels, mpp=1.0)
            if name == "train":
                truth = write_asap_xml(out / f"{name}.xml", mask_to_polygons(tumor, (1.0, 1.0)))
            else:
                truth = write_pyramidal_tiff(
                    out / f"{name}_mask.tif", tumor.astype(np.uint8), compression="deflate",
                    nearest=True,
                )  # fmt: skip
        made[name] = (slide, truth)
    return made


@click.command()
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo-out"),
    show_default=True, help="Folder for the phantom slides, maps and tables.",
)  # fmt: skip
def demo(out_dir: Path) -> None:
    """Run the method's first half on a built-in phantom: rails, spread, sift, maps.

    \b
    Example:
      slidesift demo --out demo-out
    """
    console = Console(highlight=False)
    start = time.perf_counter()
    spec = SiftSpec()
    slides = write_phantoms(out_dir / "phantom", console)

    train_slide, train_xml = slides["train"]
    with open_slide(train_slide) as slide:
        thumb = read_thumb(slide, longest=LONGEST)
    tumor = read_asap_xml(train_xml, thumb)
    console.print(
        f"train slide: {thumb.size[0]} x {thumb.size[1]} thumbnail, "
        f"{100 * tumor.mean():.1f}% tumor from {train_xml.name}"
    )
    grid = TileGrid.from_overlap(thumb.pixels.shape[:2], tile=TILE, overlap=OVERLAP)
    rails = fit_rails(
        tumor_tile_entropies(thumb.pixels, tumor, grid, spec), entropy=spec.entropy, tile=TILE
    )
    rails_path = rails.save(out_dir / "rails.json")
    console.print(spread_table(rails_spread([(thumb.pixels, tumor)], [25, 50, 100, 150, 200])))
    console.print(f"fitted {rails} on {rails.n_tiles} tumor tiles -> {rails_path}")

    test_slide, test_mask = slides["test"]
    runs = {}
    for label, used in (("background only", None), ("background + rails", rails)):
        runs[label] = run_sift(
            test_slide, out_dir / ("no-rails" if used is None else "rails"),
            downsample={"longest": LONGEST}, tile=TILE, overlap=OVERLAP, stride=None,
            spec=spec, rails=used, console=console,
        )  # fmt: skip
    console.print(summary_table(f"sift of {test_slide.name}", runs))

    truth = read_mask(test_mask, runs["background + rails"].thumb)
    table = Table(title="what the kept tiles cover (test slide)")
    for col in ("sift", "tumor covered %", "other tissue covered %"):
        table.add_column(col, justify="right" if col != "sift" else "left")
    for label, run in runs.items():
        area = run.result.stats.grid.location_map(run.result.keep)
        tissue = run.thumb.pixels.mean(axis=2) < 225
        other = tissue & ~truth
        table.add_row(
            label,
            f"{100 * (area & truth).sum() / max(1, truth.sum()):.1f}",
            f"{100 * (area & other).sum() / max(1, other.sum()):.1f}",
        )
    console.print(table)
    console.print(
        f"done in {time.perf_counter() - start:.1f} s; open "
        f"[bold]{runs['background + rails'].outputs['overlay']}[/] to see the kept tiles"
    )
