"""``slidesift demo``: the whole foundation on a built-in phantom, no data needed.

Makes a phantom cohort of six H&E-like slides (SVS-like pyramidal TIFFs with level-0 TIFF masks
and a manifest: four train, two test), fits entropy rails on a train slide's tumor, prints the
rails spread over tile sizes (paper Fig. 5), sifts a test slide and reports how much tumor the
kept tiles cover and how much other tissue they drop. Then it trains the lightweight CNN for a
few epochs on the train slides' tiles and scores the test slides' tiles after each epoch.

Sized for two CPU cores: thumbnails of N = 1200 px (about 8 um/px) and T = 96 px tiles instead
of the paper's 6000 and 400 (a 400-px tile trains at about 5 tiles/s on two cores).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from slidesift.cli.rails_cmd import spread_table
from slidesift.cli.sift_cmd import run_sift, summary_table
from slidesift.cli.train_cmd import summary_table as tiles_table
from slidesift.cli.train_cmd import training_progress
from slidesift.io.annotations import read_mask
from slidesift.io.slide import open_slide, read_thumb
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.rails import fit_rails, rails_spread, tumor_tile_entropies
from slidesift.sift import SiftSpec
from slidesift.tiles import TileGrid
from slidesift.train import TrainSpec, train

#: Epochs the demo trains (the paper: 75; two CPU cores afford a few at T = 96).
EPOCHS = 5

#: Demo geometry: the thumbnail's longer side, tile and overlap.
LONGEST = 1200
TILE = 96
OVERLAP = 0.8


def write_phantoms(out: Path, console: Console) -> dict[str, tuple[Path, Path]]:
    """Write the demo's phantom cohort (six PAIP-like slides); returns split -> (slide, truth)
    of the first slide of each split."""
    spec = CohortSpec(count=6, longest=(4000, 4000), subtypes=1, seed=1)
    with console.status("making a phantom cohort of six slides (slidesift phantom)"):
        manifest = make_cohort(spec, out, overwrite=True)
    made: dict[str, tuple[Path, Path]] = {}
    for entry in manifest:
        assert entry.split is not None and entry.annotation is not None
        made.setdefault(entry.split, (entry.slide, entry.annotation))
    console.print(f"phantom cohort: {out / 'manifest.csv'}")
    return made


@click.command()
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo-out"),
    show_default=True, help="Folder for the phantom slides, maps and tables.",
)  # fmt: skip
def demo(out_dir: Path) -> None:
    """Run the method on a built-in phantom cohort: rails, spread, sift, maps, training.

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
    console.print(spread_table(rails_spread([(thumb.pixels, tumor)], [24, 48, 96, 144, 192])))
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
    run_dir = train_demo_model(out_dir, console)
    console.print(
        f"done in {time.perf_counter() - start:.1f} s; open "
        f"[bold]{runs['background + rails'].outputs['overlay']}[/] to see the kept tiles; "
        f"checkpoints and log.csv in [bold]{run_dir}[/]"
    )


def train_demo_model(out_dir: Path, console: Console) -> Path:
    """Train the CNN for :data:`EPOCHS` epochs on the phantom cohort; returns the run folder."""
    from slidesift.cache import ThumbCache
    from slidesift.dataset import TileSetSpec
    from slidesift.prepare import prepare_tilesets

    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own folder: start afresh
    spec = TileSetSpec(tile=TILE, longest=LONGEST)
    with console.status("cutting training tiles (slidesift train)"):
        prepared = prepare_tilesets(
            out_dir / "phantom" / "manifest.csv", spec, cache=ThumbCache(out_dir / "cache")
        )
    console.print(tiles_table(prepared.train, f"training tiles (T={TILE}, N={LONGEST})"))
    progress, callbacks = training_progress(console)
    with progress:
        train(
            prepared.train,
            run_dir,
            TrainSpec(epochs=EPOCHS),
            holdout=prepared.holdout,
            callbacks=callbacks,
        )
    return run_dir
