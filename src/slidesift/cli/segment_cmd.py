"""``slidesift segment`` and ``slidesift select``: masks, scores, and the best epoch."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from slidesift.checkpoint import NOT_CHECKPOINT_KINDS, load_checkpoint
from slidesift.cli.options import output_console
from slidesift.errors import CheckpointError, ConfigError
from slidesift.evaluate import SlideOutcome, evaluate_slides, summary, write_outcomes
from slidesift.io.atomic import atomic_write_text
from slidesift.io.sniff import file_kind
from slidesift.manifest import ManifestEntry, read_manifest
from slidesift.segment import SegmentSpec
from slidesift.select import Selection, SelectionOnTestWarning

F = TypeVar("F", bound=Callable[..., Any])


def segment_options(f: F) -> F:
    """Options of a :class:`SegmentSpec`, shared by ``segment`` and ``select``."""
    d = SegmentSpec()
    for option in reversed(
        [
            click.option(
                "--overlap",
                type=float,
                default=d.overlap,
                show_default=True,
                help="Tile overlap (paper: 0.8).",
            ),
            click.option(
                "--stride", type=int, default=None, help="Explicit stride (overrides --overlap)."
            ),
            click.option(
                "--round-stride",
                is_flag=True,
                help="Round the stride to a multiple of 16 so the fast dense path applies.",
            ),
            click.option(
                "--mode",
                type=click.Choice(["union", "dominant", "mean"]),
                default=None,
                help="Assembly [default: mean for binary models, dominant for subtypes].",
            ),
            click.option(
                "--smooth",
                type=int,
                default=0,
                show_default=True,
                help="Opening kernel diameter in thumbnail px (paper: 50-150 at N=6000).",
            ),
            click.option(
                "--shrink",
                type=float,
                default=0.0,
                show_default=True,
                help="Shrink each region about its centroid by this fraction.",
            ),
            click.option("--no-rails", is_flag=True, help="Sift by background only (ablation)."),
            click.option(
                "--inference",
                type=click.Choice(["auto", "dense", "tiles", "torch"]),
                default="auto",
                show_default=True,
                help="auto: CUDA torch, else dense ONNX where exact, else ONNX per tile.",
            ),
        ]
    ):
        f = option(f)
    return f


def make_spec(
    overlap: float,
    stride: int | None,
    round_stride: bool,
    mode: str | None,
    smooth: int,
    shrink: float,
    no_rails: bool,
    inference: str,
) -> SegmentSpec:
    """A :class:`SegmentSpec` from the shared options."""
    return SegmentSpec(
        overlap=overlap,
        stride=stride,
        round_stride=round_stride,
        mode=mode,  # type: ignore[arg-type]
        smooth=smooth,
        shrink=shrink,
        rails=not no_rails,
        inference=inference,  # type: ignore[arg-type]
    )


def _entries(target: Path, truth: Path | None, split: str | None) -> list[ManifestEntry]:
    if target.suffix.lower() == ".csv":
        m = read_manifest(target)
        return [e for e in m if split is None or e.split == split]
    return [ManifestEntry(target.resolve(), truth.resolve() if truth else None)]


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.3f}"


def cohort_lines(figures: dict[str, float]) -> list[str]:
    """The cohort means, and beside them the tile oracle, all tissue and the sift ceiling."""
    f = figures
    lines = [
        f"mean Jaccard {_fmt(f['mean_jaccard'])}, precision {_fmt(f['mean_precision'])}, "
        f"recall {_fmt(f['mean_recall'])}; nonzero ({int(f['nonzero_slides'])} slides) "
        f"Jaccard {_fmt(f['nonzero_jaccard'])}"
    ]
    if not math.isnan(f.get("mean_oracle_jaccard", math.nan)):
        lines.append(
            f"beside it: tile oracle Jaccard {_fmt(f['mean_oracle_jaccard'])} (precision "
            f"{_fmt(f['mean_oracle_precision'])}, recall {_fmt(f['mean_oracle_recall'])}), "
            f"all tissue called tumor {_fmt(f['mean_all_tissue_jaccard'])}, sift ceiling "
            f"{_fmt(f['mean_sift_ceiling'])} (truth under kept tiles)"
        )
    return lines


def scores_table(outcomes: list[SlideOutcome], title: str) -> Table:
    """Per slide: vote, Jaccard, Dice, precision, recall, kept tiles."""
    table = Table(title=title)
    for col in ("slide", "label", "vote", "Jaccard", "Dice", "precision", "recall", "tiles"):
        table.add_column(col, justify="left" if col in ("slide", "label", "vote") else "right")
    for o in outcomes:
        s = o.scores
        vals = (
            ["-"] * 4
            if s is None
            else [_fmt(s.jaccard), _fmt(s.dice), _fmt(s.precision), _fmt(s.recall)]
        )
        table.add_row(o.name, o.label or "", o.vote or "-", *vals, str(o.kept_tiles))
    return table


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
@segment_options
def segment_command(
    checkpoint: Path,
    target: Path,
    truth: Path | None,
    split: str | None,
    out: Path,
    ablate: bool,
    ensemble: tuple[Path, ...],
    **options: Any,
) -> None:
    """Segment one slide, or every slide of a manifest, with a trained checkpoint.

    Writes per slide: mask PNG, overlay PNG, error map (with truth), QuPath GeoJSON (level-0
    px), the tile table and the tile location map; for the cohort scores.csv and summary.json.

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
    """
    console = output_console()
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
        outcomes = evaluate_slides(entries, ck, spec, out=out, on_slide=lambda o: bar.advance(task))
    console.print(scores_table(outcomes, f"{checkpoint.name} on {len(outcomes)} slide(s)"))
    figures = summary(outcomes, ck.classes)
    if any(o.scores is not None for o in outcomes):
        for line in cohort_lines(figures):
            console.print(line)
    if not math.isnan(figures["classification_accuracy"]):
        console.print(f"slide classification accuracy {figures['classification_accuracy']:.3f}")
    console.print(f"inference: {outcomes[0].inference}")
    write_outcomes(out / "scores.csv", outcomes)
    atomic_write_text(out / "summary.json", json.dumps(figures, indent=2) + "\n")
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
    atomic_write_text(out / "ensemble.csv", ensemble_csv(votes, names))


def _ablation(
    console: Console, entries: list[ManifestEntry], ck: Any, spec: SegmentSpec, out: Path
) -> None:
    """Run and print the Table 3 shaped ablation; write ablation.json."""
    from dataclasses import asdict

    from slidesift.ablate import ablate

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ablations", total=len(entries))
        rows = ablate(entries, ck, spec, on_slide=lambda e: bar.advance(task))
    table = Table(title="ablations (cohort means)")
    for col in ("condition", "Jaccard", "precision", "recall"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for r in rows:
        f = r.figures
        table.add_row(r.condition, _fmt(f["jaccard"]), _fmt(f["precision"]), _fmt(f["recall"]))
    console.print(table)
    atomic_write_text(out / "ablation.json", json.dumps([asdict(r) for r in rows], indent=2) + "\n")


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
        f"best by mean {metric}: epoch {best.epoch} ({_fmt(best.figures['mean_' + metric])}) "
        f"-> {best.path}"
    )
    write_selection(run / "selection.json", sel, metric)


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


def run_selection(
    console: Console,
    run: Path,
    entries: list[ManifestEntry],
    spec: SegmentSpec,
    *,
    metric: str = "jaccard",
    min_accuracy: float = 0.6,
) -> Selection:
    """:func:`select_epoch` under a progress bar (one step an epoch)."""
    from slidesift.select import select_epoch

    with Progress(console=console, transient=True) as bar:
        n = len(list(run.glob("epoch_*.safetensors")))
        task = bar.add_task("scoring epochs", total=n)
        return select_epoch(
            run,
            entries,
            spec,
            metric=metric,
            min_accuracy=min_accuracy,
            on_epoch=lambda e: bar.advance(task),
        )


def selection_table(sel: Selection, title: str) -> Table:
    """One row an epoch: cohort means, classification accuracy, whether it could be chosen."""
    table = Table(title=title)
    for col in ("epoch", "Jaccard", "precision", "recall", "nonzero Jaccard", "class. acc.",
                "used"):  # fmt: skip
        table.add_column(col, justify="right")
    for e in sel.epochs:
        f = e.figures
        best = sel.best is not None and e.epoch == sel.best.epoch
        table.add_row(
            f"{e.epoch}{' *' if best else ''}",
            _fmt(f["mean_jaccard"]),
            _fmt(f["mean_precision"]),
            _fmt(f["mean_recall"]),
            _fmt(f["nonzero_jaccard"]),
            _fmt(f["classification_accuracy"]),
            "yes" if e.eligible else "no",
        )
    return table


def write_selection(path: Path, sel: Selection, metric: str) -> Path:
    """``selection.json``: the metric, the best checkpoint and every epoch's figures."""
    doc = {
        "metric": metric,
        "best": None if sel.best is None else str(sel.best.path),
        "epoch": None if sel.best is None else sel.best.epoch,
        "epochs": [{"epoch": e.epoch, "eligible": e.eligible, **e.figures} for e in sel.epochs],
    }
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
