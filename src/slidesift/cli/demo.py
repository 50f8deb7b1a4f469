"""``slidesift demo``: the whole method on a built-in phantom cohort, no data needed.

1. Makes a phantom cohort of six H&E-like slides (SVS-like pyramidal TIFFs with level-0 TIFF
   masks and a manifest: four train, two test).
2. Fits entropy rails on a train slide's tumor, prints the rails spread over tile sizes (paper
   Fig. 5), sifts a test slide and reports how much tumor the kept tiles cover and how much
   other tissue they drop.
3. Trains the lightweight CNN for a few epochs (a checkpoint per epoch).
4. Selects the best epoch by mean Jaccard on the test slides.
5. Segments and scores the test slides with it on a local Dask cluster and prints the scores.
6. Writes the HTML report and ends with the path to open.

Sized for two CPU cores: thumbnails of N = 1200 px (about 8 um/px) and T = 96 px tiles instead
of the paper's 6000 and 400 (a 400-px tile trains at about 8 tiles/s on two cores), and
:data:`EPOCHS` epochs instead of 75.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from slidesift.cli.options import hold_output_folder, output_console
from slidesift.cli.views import sift_table, spread_table, tiles_table, training_progress
from slidesift.io.annotations import read_mask
from slidesift.io.downsample import Downsample
from slidesift.io.slide import open_slide, read_thumb
from slidesift.manifest import read_manifest
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.rails import fit_rails, write_spread
from slidesift.report import SPREAD_NAME, write_report
from slidesift.segment import SegmentSpec
from slidesift.select import SelectionOnTestWarning
from slidesift.sift import SiftSpec
from slidesift.sift_maps import sift_slide
from slidesift.tiles import GridSpec, TileGrid
from slidesift.train import train
from slidesift.train_spec import TrainSpec
from slidesift.tumor_rails import rails_spread, tumor_tile_entropies

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
    """Run the whole method on a built-in phantom cohort, from slides to an HTML report.

    Phantom cohort -> entropy rails and their spread -> sift -> training -> model selection
    -> segmentation and scores of the test slides (Dask) -> report.html. About 2 minutes on
    two CPU cores.

    \b
    Example:
      slidesift demo --out demo-out
    """
    hold_output_folder(out_dir)
    console = output_console()
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
    spread = rails_spread([(thumb.pixels, tumor)], [24, 48, 96, 144, 192])
    console.print(spread_table(spread))
    console.print(f"fitted {rails} on {rails.n_tiles} tumor tiles -> {rails_path}")

    test_slide, test_mask = slides["test"]
    runs = {}
    for label, used in (("background only", None), ("background + rails", rails)):
        with console.status(f"sifting {test_slide.name}"):
            runs[label] = sift_slide(
                test_slide, out_dir / ("no-rails" if used is None else "rails"),
                downsample=Downsample(longest=LONGEST), grid=GridSpec(TILE, OVERLAP),
                spec=spec, rails=used,
            )  # fmt: skip
    console.print(sift_table(f"sift of {test_slide.name}", runs))

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
    seg_dir = select_and_segment(out_dir, run_dir, console)
    write_spread(seg_dir / SPREAD_NAME, spread)
    with console.status("writing the HTML report (slidesift report)"):
        report_path = write_report(seg_dir, run=run_dir, title="slidesift demo")
    console.print(
        f"done in {time.perf_counter() - start:.0f} s. Checkpoints and log.csv: [bold]{run_dir}"
        f"[/]; per-slide masks, overlays and QuPath GeoJSON: [bold]{seg_dir}[/]"
    )
    console.print(f"open the report: [bold]{report_path}[/]")


def select_and_segment(out_dir: Path, run_dir: Path, console: Console) -> Path:
    """Pick the best epoch on the test slides (warned about), then segment and score them on Dask.

    Returns the cohort output folder.
    """
    from slidesift.cli.views import (
        cohort_with_progress,
        print_cohort,
        run_selection,
        selection_table,
    )
    from slidesift.select import write_selection

    entries = [e for e in read_manifest(out_dir / "phantom" / "manifest.csv") if e.split == "test"]
    spec = SegmentSpec(round_stride=True)  # stride 16: the dense shared-feature path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionOnTestWarning)  # said below, in words
        selection = run_selection(console, run_dir, entries, spec)
    console.print(selection_table(selection, f"model selection on {len(entries)} test slides"))
    console.print(
        "[yellow]note:[/] six slides leave none for a val split, so the demo chooses its epoch on "
        "the test slides (the paper's protocol) and their scores below are optimistic; on your "
        "cohort, choose on val (`slidesift train --val-fraction 0.2`, then `slidesift select`)."
    )
    write_selection(run_dir, selection, "jaccard")
    if selection.best is None:  # every epoch at or below 60% slide classification accuracy
        raise click.ClickException("no epoch qualified")
    best = selection.best.path
    seg_dir = out_dir / "segment"
    shutil.rmtree(seg_dir, ignore_errors=True)
    result = cohort_with_progress(console, best, entries, spec=spec, out=seg_dir)
    print_cohort(console, result, f"{best.name} on the {len(entries)} test slides")
    return seg_dir


def train_demo_model(out_dir: Path, console: Console) -> Path:
    """Train the CNN for :data:`EPOCHS` epochs on the phantom cohort; returns the run folder."""
    from slidesift.cache import ThumbCache
    from slidesift.prepare import prepare_tilesets
    from slidesift.tileset import TileSetSpec

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
