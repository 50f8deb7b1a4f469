"""``slidesift demo``: the whole foundation on a built-in phantom, no data needed.

Makes a phantom cohort of two H&E-like slides (SVS-like pyramidal TIFFs with level-0 TIFF masks
and a manifest), fits entropy rails on the train slide's tumor, prints the rails spread over tile
sizes (paper Fig. 5), sifts the test slide and reports how much tumor the kept tiles cover and
how much other tissue they drop.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from slidesift.cli.rails_cmd import spread_table
from slidesift.cli.sift_cmd import run_sift, summary_table
from slidesift.io.annotations import read_mask
from slidesift.io.slide import open_slide, read_thumb
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.rails import fit_rails, rails_spread, tumor_tile_entropies
from slidesift.sift import SiftSpec
from slidesift.tiles import TileGrid

#: Demo geometry: the thumbnail's longer side, tile and overlap.
LONGEST = 2000
TILE = 100
OVERLAP = 0.8


def write_phantoms(out: Path, console: Console) -> dict[str, tuple[Path, Path]]:
    """Write the demo's phantom cohort (two PAIP-like slides); returns split -> (slide, truth)."""
    spec = CohortSpec(count=2, longest=(6000, 6000), subtypes=1, seed=1)
    with console.status("making a phantom cohort of two slides (slidesift phantom)"):
        manifest = make_cohort(spec, out, overwrite=True)
    made: dict[str, tuple[Path, Path]] = {}
    for entry in manifest:
        assert entry.split is not None and entry.annotation is not None
        made[entry.split] = (entry.slide, entry.annotation)
    console.print(f"phantom cohort: {out / 'manifest.csv'}")
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

    train_slide, train_truth = slides["train"]
    with open_slide(train_slide) as slide:
        thumb = read_thumb(slide, longest=LONGEST)
    tumor = read_mask(train_truth, thumb)
    console.print(
        f"train slide: {thumb.size[0]} x {thumb.size[1]} thumbnail, "
        f"{100 * tumor.mean():.1f}% tumor from {train_truth.name}"
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
