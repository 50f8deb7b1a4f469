"""``slidesift segment``: masks, overlays, GeoJSON and scores for a slide or a manifest."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from slidesift.checkpoint import NOT_CHECKPOINT_KINDS, load_checkpoint
from slidesift.cli.options import (
    hold_output_folder,
    make_outputs,
    make_spec,
    output_console,
    output_options,
    segment_options,
)
from slidesift.cli.views import cohort_lines, fmt_score, scores_table
from slidesift.errors import CheckpointError, ConfigError
from slidesift.evaluate import SlideOutcome, evaluate_slides, summary
from slidesift.io.atomic import atomic_write_text
from slidesift.io.sniff import file_kind
from slidesift.manifest import ManifestEntry, read_manifest
from slidesift.results import ENSEMBLE_FILE, write_results
from slidesift.segment import SegmentSpec


def _entries(target: Path, truth: Path | None, split: str | None) -> list[ManifestEntry]:
    if target.suffix.lower() == ".csv":
        m = read_manifest(target)
        return [e for e in m if split is None or e.split == split]
    return [ManifestEntry(target.resolve(), truth.resolve() if truth else None)]


@click.command("segment")
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--truth",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Ground truth of a single slide (mask, ASAP XML, GeoJSON).",
)
@click.option("--split", default=None, help="Only manifest rows of this split (e.g. test).")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("segment-out"),
    show_default=True,
)
@click.option(
    "--ablate",
    is_flag=True,
    help="Also run the paper's ablations (rails, smoothing, shrink) into ablation.json.",
)
@click.option(
    "--ensemble",
    "ensemble",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Another checkpoint of the same classes; repeat. Slide votes add the tile label "
    "counts of all models (ensemble.csv); masks come from CHECKPOINT.",
)
@output_options
@segment_options
def segment_command(
    checkpoint: Path,
    target: Path,
    truth: Path | None,
    split: str | None,
    out: Path,
    ablate: bool,
    ensemble: tuple[Path, ...],
    outputs: str,
    preview_px: int,
    **options: Any,
) -> None:
    """Segment one slide, or every slide of a manifest, with a trained checkpoint.

    Writes per slide, into OUT/<slide>/: mask PNG, overlay PNG, error map (with truth), QuPath
    GeoJSON (level-0 px), the tile table and the tile location map (--outputs picks some); the
    three pictures at most 2000 px long (--preview-px); for the cohort scores.csv and
    summary.json.

    \b
    Examples (run of `slidesift train cohort/manifest.csv --out run -N 1500 -T 96 --epochs 5`
    on the cohort of `slidesift phantom --out cohort --count 10`):
      slidesift segment run/epoch_005.safetensors cohort/manifest.csv --split test --round-stride
    One slide, its truth scored, the mask smoothed:
      slidesift segment run/epoch_005.safetensors cohort/slides/paip_006.svs \\
        --truth cohort/masks/paip_006_mask.tif --smooth 25 --out paip_006
    The paper's ablations (ablation.json), and the votes of three epochs:
      slidesift segment run/epoch_005.safetensors cohort/manifest.csv --split test \\
        --ablate --out ablation
      slidesift segment run/epoch_005.safetensors cohort/manifest.csv --split test \\
        --ensemble run/epoch_004.safetensors --ensemble run/epoch_003.safetensors --out ensemble
    Only the mask and the QuPath GeoJSON (fastest); or every picture at full size:
      slidesift segment run/epoch_005.safetensors cohort/manifest.csv --split test \\
        --outputs mask,geojson --out seg_geojson
      slidesift segment run/epoch_005.safetensors cohort/slides/paip_006.svs --preview-px 0 \\
        --out paip_006_full
    """
    hold_output_folder(out)
    console = output_console()
    chosen = make_outputs(outputs, preview_px)
    try:
        ck = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        if file_kind(checkpoint) not in NOT_CHECKPOINT_KINDS:
            raise
        raise CheckpointError(
            checkpoint,
            exc.reason,
            "the checkpoint comes first: slidesift segment CHECKPOINT SLIDE|MANIFEST",
        ) from exc
    spec = make_spec(**options)
    entries = _entries(target, truth, split)
    if not entries:
        raise ConfigError("split", split, "a split that some manifest rows have")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("segmenting", total=len(entries))
        outcomes = evaluate_slides(
            entries, ck, spec, out=out, on_slide=lambda o: bar.advance(task), outputs=chosen
        )
    console.print(scores_table(outcomes, f"{checkpoint.name} on {len(outcomes)} slide(s)"))
    figures = summary(outcomes, ck.classes)
    if any(o.scores is not None for o in outcomes):
        for line in cohort_lines(figures):
            console.print(line)
    if not math.isnan(figures["classification_accuracy"]):
        console.print(f"slide classification accuracy {figures['classification_accuracy']:.3f}")
    console.print(f"inference: {outcomes[0].inference}")
    write_results(out, outcomes, figures)
    if ablate:
        _ablation(console, entries, ck, spec, out)
    if ensemble:
        _ensemble(console, entries, (checkpoint, *ensemble), outcomes, spec, out)
    console.print(f"outputs in [bold]{out}[/]")


def _ensemble(
    console: Console,
    entries: list[ManifestEntry],
    paths: tuple[Path, ...],
    first: list[SlideOutcome],
    spec: SegmentSpec,
    out: Path,
) -> None:
    """Vote with several models (label counts added); print the votes, write ensemble.csv."""
    from slidesift.evaluate import ensemble_csv, ensemble_votes

    models = [load_checkpoint(p) for p in paths]
    classes = models[0].classes
    for path, other in zip(paths[1:], models[1:], strict=True):
        if other.classes != classes:
            raise ConfigError("ensemble", str(path), f"a checkpoint with classes {classes}")
    per_model = [first]
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ensemble models", total=len(entries) * (len(models) - 1))
        for other in models[1:]:
            per_model.append(
                evaluate_slides(entries, other, spec, on_slide=lambda o: bar.advance(task))
            )
    votes = ensemble_votes(per_model)
    names = [p.stem for p in paths]
    if len(set(names)) < len(names):  # epoch_007 of two runs: say which run
        names = [f"{p.parent.name}/{p.stem}" for p in paths]
    table = Table(title=f"ensemble of {len(models)} models (tile label counts added)")
    for col in ("slide", "label", *names, "ensemble"):
        table.add_column(col)
    for v in votes:
        table.add_row(v.name, v.label or "", *(x or "-" for x in v.votes), v.vote or "-")
    console.print(table)
    judged = [v for v in votes if v.label in classes[1:]]
    if judged and len(classes) > 2:
        right = sum(v.vote == v.label for v in judged)
        console.print(f"ensemble slide classification accuracy {right / len(judged):.3f}")
    atomic_write_text(out / ENSEMBLE_FILE, ensemble_csv(votes, names))


def _ablation(
    console: Console, entries: list[ManifestEntry], ck: Any, spec: SegmentSpec, out: Path
) -> None:
    """Run and print the Table 3 shaped ablation; write ablation.json."""
    from slidesift.ablate import ablate, write_ablation

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ablations", total=len(entries))
        rows = ablate(entries, ck, spec, on_slide=lambda e: bar.advance(task))
    table = Table(title="ablations (cohort means)")
    for col in ("condition", "Jaccard", "precision", "recall"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for r in rows:
        f = r.figures
        table.add_row(
            r.condition, fmt_score(f["jaccard"]), fmt_score(f["precision"]), fmt_score(f["recall"])
        )
    console.print(table)
    write_ablation(out, rows)
