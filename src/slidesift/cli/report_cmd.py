"""``slidesift report``: one self-contained HTML page of a cohort run."""

from __future__ import annotations

from pathlib import Path

import click

from slidesift.cli.options import output_console
from slidesift.report import MAX_IMAGE_PX, write_report


@click.command("report")
@click.argument("cohort", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--run", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
    help="Training run folder (log.csv, run.json, selection.json): adds training curves.",
)  # fmt: skip
@click.option(
    "--rails-spread", "rails_spread", default=None,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Rails spread JSON from `slidesift rails --spread-out` [default: rails_spread.json in "
    "RUN, then in COHORT, when there].",
)  # fmt: skip
@click.option(
    "--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="The HTML file to write [default: COHORT/report.html].",
)  # fmt: skip
@click.option("--title", default=None, help="Page title [default: slidesift report: COHORT].")
@click.option(
    "--max-image-px", type=click.IntRange(min=16), default=MAX_IMAGE_PX, show_default=True,
    help="Shrink slide pictures longer than this before embedding them.",
)  # fmt: skip
def report(
    cohort: Path,
    run: Path | None,
    rails_spread: Path | None,
    output: Path | None,
    title: str | None,
    max_image_px: int,
) -> None:
    """Write one self-contained HTML report of a cohort output folder.

    COHORT is the --out folder of `slidesift evaluate` or `slidesift segment` (scores.csv,
    summary.json, the per-slide pictures, ablation.json). The page holds the cohort summary, a
    sortable metrics table, each slide's overlay, error map and tile locations, the rails spread
    against tile size and the training curves; every picture is embedded, so the file opens
    anywhere without a network. The --out folder of `slidesift sweep` (sweep.json) gets the
    sweep's page instead: test scores by N and T (the paper's Table 2) and their heatmap.

    \b
    Examples (seg of `slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv
    --split test --out seg`, run of `slidesift train`; see `slidesift --help`):
      slidesift report seg
      slidesift report seg --run run --output seg_report.html
    With the rails spread of `slidesift rails ... --spread-out rails_spread.json`:
      slidesift report seg --run run --rails-spread rails_spread.json
    A sweep's table and heatmap (sweep of `slidesift sweep cohort/manifest.csv --out sweep`):
      slidesift report sweep
    """
    console = output_console()
    with console.status("writing the report"):
        path = write_report(
            cohort,
            output,
            run=run,
            rails_spread=rails_spread,
            title=title,
            max_image_px=max_image_px,
        )
    size = path.stat().st_size / 1e6
    console.print(f"report written ({size:.1f} MB); open it in a browser:")
    click.echo(str(path))
