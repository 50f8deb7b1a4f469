"""``slidesift evaluate``: segment and score a manifest's slides on Dask, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slidesift.cli.options import (
    hold_output_folder,
    make_outputs,
    make_spec,
    output_console,
    output_options,
    segment_options,
)
from slidesift.cli.views import cohort_with_progress, print_cohort
from slidesift.cohort import CohortError
from slidesift.errors import ConfigError, ManifestError
from slidesift.io.sniff import SLIDE_KINDS, file_kind
from slidesift.manifest import ManifestEntry, read_manifest


def _entries(manifest: Path, split: str | None) -> list[ManifestEntry]:
    entries = [e for e in read_manifest(manifest) if split is None or e.split == split]
    if not entries:
        raise ConfigError("split", split, "a split that some manifest rows have")
    return entries


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
    "0 runs in this process without Dask, reading the next slide and writing the last one "
    "while this one is classified (the way to feed one GPU).",
)
@click.option("--force", is_flag=True, help="Recompute slides an earlier run finished.")
@output_options
@segment_options
def evaluate_command(
    checkpoint: Path,
    manifest: Path,
    split: str | None,
    out: Path,
    scheduler: str | None,
    workers: int | None,
    force: bool,
    outputs: str,
    preview_px: int,
    **options: Any,
) -> None:
    """Segment and score every slide of a manifest, one Dask task per slide.

    Each slide's outputs (mask, overlay, error map, QuPath GeoJSON, tile table, location map;
    --outputs picks some, --preview-px sizes the pictures) go to OUT/<slide>/ with outcome.json
    written last; the cohort's to OUT/scores.csv (with each slide's status and error) and
    OUT/summary.json. A slide that fails is reported and the others go on; the exit code is 1
    only when every slide failed. Rerun the same command after an interruption: finished
    slides are kept (--force recomputes them, and so do other --outputs or --preview-px).

    \b
    Examples:
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --split test --out seg
    In this process, no Dask (with a GPU: the model stays on it), every split, smoothed:
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --workers 0 \\
        --smooth 25 --out seg_all
    On a running cluster (dask scheduler; dask worker tcp://127.0.0.1:8786):
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --split test \\
        --scheduler tcp://127.0.0.1:8786 --out seg_cluster
    Scores and QuPath GeoJSON only, no pictures (fastest):
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --split test \\
        --outputs mask,geojson,tiles --out seg_fast
    """
    hold_output_folder(out)
    console = output_console()
    chosen = make_outputs(outputs, preview_px)
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
        outputs=chosen,
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
