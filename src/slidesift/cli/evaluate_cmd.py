"""``slidesift evaluate``: segment and score a manifest's slides on Dask, resumably."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from slidesift.cli.options import output_console
from slidesift.cli.segment_cmd import cohort_lines, make_spec, scores_table, segment_options
from slidesift.cohort import CohortError, CohortResult, SlideRun, run_cohort
from slidesift.errors import ConfigError, ManifestError
from slidesift.io.sniff import SLIDE_KINDS, file_kind
from slidesift.manifest import ManifestEntry, read_manifest


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.3f}"


def failures_table(rows: list[SlideRun]) -> Table:
    """Per failed slide: its name, the error's type and its message."""
    table = Table(title=f"{len(rows)} failed slide(s)", title_style="bold red")
    table.add_column("slide")
    table.add_column("error")
    table.add_column("message", overflow="fold")
    for r in rows:
        table.add_row(r.name, r.error_type, r.error)
    return table


def _entries(manifest: Path, split: str | None) -> list[ManifestEntry]:
    entries = [e for e in read_manifest(manifest) if split is None or e.split == split]
    if not entries:
        raise ConfigError("split", split, "a split that some manifest rows have")
    return entries


def cohort_with_progress(
    console: Console, checkpoint: Path, entries: list[ManifestEntry], **kw: Any
) -> CohortResult:
    """:func:`run_cohort` under a progress bar."""
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(entries))

        def advance(row: SlideRun) -> None:
            bar.update(task, advance=1, description=f"{row.name}: {row.status}")

        return run_cohort(checkpoint, entries, on_slide=advance, **kw)


def print_cohort(console: Console, result: CohortResult, title: str) -> None:
    """The scores table, the cohort means, the failures and where the files are."""
    f = result.figures
    console.print(scores_table(result.outcomes, title))
    if any(o.scores is not None for o in result.outcomes):
        for line in cohort_lines(f):
            console.print(line)
    if not math.isnan(f["classification_accuracy"]):
        console.print(f"slide classification accuracy {f['classification_accuracy']:.3f}")
    inference = sorted({o.inference for o in result.outcomes})
    if inference:
        console.print(f"inference: {', '.join(inference)}")
    console.print(
        f"{f['slides']} slide(s): {f['ok']} computed, {f['resumed']} resumed from an earlier "
        f"run, {f['failed']} failed"
    )
    if result.failures:
        console.print(failures_table(result.failures))
    console.print(
        f"outputs in [bold]{result.out}[/] (scores.csv, summary.json, one folder a slide)"
    )


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--split", default=None, help="Only manifest rows of this split (e.g. test).")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("evaluate-out"),
    show_default=True,
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run on an existing Dask cluster (tcp://host:8786); its workers must see the "
    "checkpoint, the slides and --out at the same paths. Default: a local cluster.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes of the local cluster [default: one a slide, at most one a core]; "
    "0 runs in this process without Dask.",
)
@click.option("--force", is_flag=True, help="Recompute slides an earlier run finished.")
@segment_options
def evaluate_command(
    checkpoint: Path,
    manifest: Path,
    split: str | None,
    out: Path,
    scheduler: str | None,
    workers: int | None,
    force: bool,
    **options: Any,
) -> None:
    """Segment and score every slide of a manifest, one Dask task per slide.

    Each slide's outputs (mask, overlay, error map, QuPath GeoJSON, tile table, location map)
    go to OUT/<slide>/ with outcome.json written last; the cohort's to OUT/scores.csv (with
    each slide's status and error) and OUT/summary.json. A slide that fails is reported and
    the others go on; the exit code is 1 only when every slide failed. Rerun the same
    command after an interruption: finished slides are kept (--force recomputes them).

    \b
    Examples:
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --split test --out seg
    In this process, no Dask, every split, the mask smoothed:
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --workers 0 \\
        --smooth 25 --out seg_all
    On a running cluster (dask scheduler; dask worker tcp://127.0.0.1:8786):
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --split test \\
        --scheduler tcp://127.0.0.1:8786 --out seg_cluster
    """
    console = output_console()
    try:
        entries = _entries(manifest, split)
    except ManifestError as exc:
        if file_kind(manifest) not in SLIDE_KINDS:
            raise
        command = f"slidesift segment {checkpoint} {manifest}"  # with the user's own paths
        hint = f"evaluate runs the slides of a manifest CSV; for this one slide: {command}"
        raise ManifestError(manifest, exc.problems, hint) from exc
    result = cohort_with_progress(
        console, checkpoint, entries, spec=make_spec(**options), out=out,
        scheduler=scheduler, workers=workers, force=force,
    )  # fmt: skip
    print_cohort(console, result, f"{checkpoint.name} on {len(entries)} slide(s)")
    failed = result.failures
    if failed and len(failed) == len(result.rows):
        raise CohortError(
            f"all {len(failed)} slide(s) failed; the first: {failed[0].error_type}: "
            f"{failed[0].error}"
        )
    if failed:
        console.print(
            f"[bold yellow]warning:[/] {len(failed)} of {len(result.rows)} slide(s) failed "
            "(listed above and in scores.csv / summary.json); the means cover the others. "
            "Fix them and rerun: finished slides are kept."
        )
