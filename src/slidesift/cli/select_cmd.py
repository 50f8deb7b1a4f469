"""``slidesift select``: score every epoch of a run on validation slides and pick the best."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from slidesift.cli.options import make_spec, output_console, segment_options
from slidesift.cli.views import fmt_score, run_selection, selection_table
from slidesift.errors import ConfigError, SelectionOnTestWarning
from slidesift.manifest import ManifestEntry, read_manifest
from slidesift.select import write_selection


@click.command("select")
@click.argument("run", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--split",
    default=None,
    help="Rows to choose on [default: val rows of MANIFEST, else of RUN/manifest.csv (train "
    "--val-fraction), else test rows, with a warning].",
)
@click.option(
    "--metric",
    type=click.Choice(["jaccard", "dice", "precision", "recall"]),
    default="jaccard",
    show_default=True,
    help="Cohort mean to maximise.",
)
@click.option(
    "--min-accuracy",
    type=float,
    default=0.6,
    show_default=True,
    help="Skip epochs at or below this slide classification accuracy (subtypes).",
)
@segment_options
def select_command(
    run: Path, manifest: Path, split: str | None, metric: str, min_accuracy: float, **options: Any
) -> None:
    """Score every epoch of a training run on the validation slides and pick the best.

    Epochs whose slide classification accuracy is at or below --min-accuracy (60%) are skipped.
    Choosing on test slides (the paper's protocol) works but is warned about: the chosen
    epoch's test scores are then optimistic.

    \b
    Example (run of `slidesift train cohort/manifest.csv --out run ...`; writes
    run/selection.json):
      slidesift select run cohort/manifest.csv --metric jaccard --round-stride
    """
    console = output_console()
    entries, source = selection_rows(run, manifest, split)
    if split is None and entries and entries[0].split == "test":
        console.print(
            "[yellow]warning:[/] no val rows (in the manifest or RUN/manifest.csv): choosing on "
            "the test slides, the paper's protocol; their scores are then optimistic. Draw a "
            "val split with `slidesift train --val-fraction 0.2` or `slidesift subsets "
            "--val-fraction`."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionOnTestWarning)  # said above, in words
        sel = run_selection(
            console, run, entries, make_spec(**options), metric=metric, min_accuracy=min_accuracy
        )
    split = entries[0].split or split
    console.print(
        selection_table(sel, f"epochs of {run} on {len(entries)} {split} slides ({source})")
    )
    if sel.best is None:
        raise click.ClickException("no epoch qualified (classification accuracy too low)")
    best = sel.best
    console.print(
        f"best by mean {metric}: epoch {best.epoch} ({fmt_score(best.figures['mean_' + metric])}) "
        f"-> {best.path}"
    )
    write_selection(run, sel, metric)


def selection_rows(run: Path, manifest: Path, split: str | None) -> tuple[list[ManifestEntry], str]:
    """The rows to choose an epoch on, and where they came from.

    ``split`` given: those rows of ``manifest``. Otherwise ``val`` rows of ``manifest``, else
    the ``val`` rows of ``RUN/manifest.csv`` (written by ``train --val-fraction``), else the
    ``test`` rows of ``manifest``.
    """
    m = read_manifest(manifest)
    if split is not None:
        entries = m.split(split)
        if not entries:
            raise ConfigError("split", split, "a split that some manifest rows have")
        return entries, manifest.name
    if m.split("val"):
        return m.split("val"), manifest.name
    drawn = run / "manifest.csv"
    if drawn.exists() and read_manifest(drawn).split("val"):
        return read_manifest(drawn).split("val"), f"{run.name}/manifest.csv"
    if not m.split("test"):
        raise ConfigError("split", None, "val or test rows in the manifest (none found)")
    return m.split("test"), manifest.name
