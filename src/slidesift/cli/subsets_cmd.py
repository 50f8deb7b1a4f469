"""``slidesift subsets``: the paper's train/test subsets of a cohort manifest."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from slidesift.cli.options import hold_output_folder, output_console
from slidesift.manifest import read_manifest
from slidesift.subsets import make_subsets, write_subsets


@click.command("subsets")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("subsets"),
    show_default=True,
    help="Folder for subset_<j>.csv.",
)
@click.option("-k", "k", type=int, default=3, show_default=True, help="Number of subsets.")
@click.option(
    "--test-fraction",
    type=float,
    default=18 / 47,
    show_default="18/47",
    help="Share of slides in test (the minority label's test slides stay unique).",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of each label's training slides put in val (epochs are chosen on val; 0: the "
    "paper's train/test only).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def subsets(
    manifest: Path, out: Path, k: int, test_fraction: float, val_fraction: float, seed: int
) -> None:
    """Split a cohort into k train/test subsets keeping label proportions (paper: 3 x 29/18).

    Every subset tests different slides of the rarest label, so each of them is tested once.

    \b
    Example (cohort of `slidesift phantom --out cohort --count 10`; writes subsets/subset_1.csv
    and subsets/subset_2.csv, each a manifest for `slidesift train`, see its --help):
      slidesift subsets cohort/manifest.csv --out subsets -k 2
    With a validation split in each (train/val/test):
      slidesift subsets cohort/manifest.csv --out subsets -k 2 --val-fraction 0.25
    """
    hold_output_folder(out)
    console = output_console()
    m = read_manifest(manifest)
    made = make_subsets(
        list(m), k, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed
    )
    paths = write_subsets(out, made)
    table = Table(title=f"{k} subsets of {len(m)} slides")
    table.add_column("subset")
    for label in m.labels or [""]:
        table.add_column(f"{label or 'unlabelled'} train / val / test", justify="right")
    for path, sub in zip(paths, made, strict=True):
        row = [path.name]
        for label in m.labels or [""]:
            train = sum(1 for e in sub.split("train") if (e.label or "") == label)
            val = sum(1 for e in sub.split("val") if (e.label or "") == label)
            test = sum(1 for e in sub.split("test") if (e.label or "") == label)
            row.append(f"{train} / {val} / {test}")
        table.add_row(*row)
    console.print(table)
    console.print(f"written to [bold]{out}[/]")
