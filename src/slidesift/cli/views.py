"""What several commands print: tables of sifts, tiles and rails, and the training progress.

Display only (rich); commands share these instead of importing one another.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from slidesift.cohort import CohortResult, SlideRun, run_cohort
from slidesift.evaluate import SlideOutcome
from slidesift.manifest import ManifestEntry
from slidesift.rails import RailsAtSize
from slidesift.segment import SegmentSpec
from slidesift.select import Selection, select_epoch
from slidesift.sift_maps import SiftRun
from slidesift.tileset import TileSet
from slidesift.train_spec import EpochRecord, TrainCallbacks

__all__ = [
    "cohort_lines",
    "cohort_with_progress",
    "failures_table",
    "fmt_score",
    "print_cohort",
    "run_selection",
    "scores_table",
    "selection_table",
    "sift_table",
    "spread_table",
    "tiles_table",
    "training_progress",
]


def sift_table(title: str, runs: dict[str, SiftRun]) -> Table:
    """A rich table of tiles kept by each sift, one row per slide."""
    table = Table(title=title)
    for col in ("slide", "thumbnail", "tiles", "kept: background", "kept: + rails", "kept %"):
        table.add_column(col, justify="right" if col != "slide" else "left")
    for name, run in runs.items():
        s = run.result.summary()
        w, h = run.thumb.size
        table.add_row(
            name,
            f"{w} x {h}",
            str(s["tiles"]),
            str(s["kept_background"]),
            str(s["kept"]),
            f"{100 * s['fraction_kept']:.1f}",
        )
    return table


def tiles_table(tiles: TileSet, title: str) -> Table:
    """Per class: slides, overlap, tiles cut, kept by each sift, kept after balancing."""
    table = Table(title=title)
    for col in ("class", "slides", "overlap", "cut", "kept: background", "kept: rails", "final"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for s in tiles.summary:
        bg, rails = s.fractions()
        table.add_row(
            s.name,
            str(s.slides),
            f"{s.overlap:.0%}",
            str(s.cut),
            f"{s.kept_background} ({bg:.0%})",
            f"{s.kept_rails} ({rails:.0%})",
            str(s.final),
        )
    return table


def spread_table(rows: list[RailsAtSize]) -> Table:
    """The Fig. 5 diagnostic as a table: rails and spread per tile size."""
    table = Table(title="entropy rails of tumor tiles vs tile size")
    for col in ("tile", "tumor tiles", "lo (bits)", "hi (bits)", "spread"):
        table.add_column(col, justify="right")
    for row in rows:
        if row.rails is None:
            table.add_row(str(row.tile), "0", "-", "-", "-")
        else:
            r = row.rails
            table.add_row(
                str(row.tile), str(r.n_tiles), f"{r.lo:.3f}", f"{r.hi:.3f}", f"{r.spread:.3f}"
            )
    return table


def training_progress(console: Console) -> tuple[Progress, TrainCallbacks]:
    """A transient bar per epoch and one printed line per finished epoch."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task: dict[str, Any] = {}

    def start(epoch: int, n_batches: int) -> None:
        task["id"] = progress.add_task(f"epoch {epoch}", total=n_batches, status="")

    def batch(epoch: int, b: int, loss: float) -> None:
        progress.update(task["id"], advance=1, status=f"loss {loss:.3f}")

    def evaluate(epoch: int, n_batches: int) -> None:
        progress.update(task["id"], status="scoring held-out tiles")

    def end(r: EpochRecord, path: Path) -> None:
        progress.remove_task(task["id"])
        held = (
            f"  held-out raw tiles: acc {r.holdout_raw_accuracy:.3f} "
            f"(bal. {r.holdout_raw_balanced_accuracy:.3f}, {r.holdout_raw_tiles} tiles)"
            if r.holdout_raw_accuracy is not None
            else ""
        )
        if r.masked_holdout_accuracy is not None:  # the CNN's tiles, other class blacked out
            held += f"  masked: {r.masked_holdout_accuracy:.3f}"
        console.print(
            f"epoch {r.epoch:3d}  loss {r.train_loss:.4f}  acc {r.train_accuracy:.3f}{held}  "
            f"{r.tiles_per_second:.0f} tiles/s"
        )

    return progress, TrainCallbacks(start, batch, evaluate, end)


def fmt_score(v: float) -> str:
    """A score with three decimals, ``-`` for NaN (no truth, nothing to score)."""
    return "-" if math.isnan(v) else f"{v:.3f}"


def cohort_lines(figures: dict[str, float]) -> list[str]:
    """The cohort means, and beside them the tile oracle, all tissue and the sift ceiling."""
    f = figures
    lines = [
        f"mean Jaccard {fmt_score(f['mean_jaccard'])}, precision {fmt_score(f['mean_precision'])}, "
        f"recall {fmt_score(f['mean_recall'])}; nonzero ({int(f['nonzero_slides'])} slides) "
        f"Jaccard {fmt_score(f['nonzero_jaccard'])}"
    ]
    if not math.isnan(f.get("mean_oracle_jaccard", math.nan)):
        lines.append(
            f"beside it: tile oracle Jaccard {fmt_score(f['mean_oracle_jaccard'])} (precision "
            f"{fmt_score(f['mean_oracle_precision'])}, "
            f"recall {fmt_score(f['mean_oracle_recall'])}), "
            f"all tissue called tumor {fmt_score(f['mean_all_tissue_jaccard'])}, sift ceiling "
            f"{fmt_score(f['mean_sift_ceiling'])} (truth under kept tiles)"
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
            else [
                fmt_score(s.jaccard),
                fmt_score(s.dice),
                fmt_score(s.precision),
                fmt_score(s.recall),
            ]
        )
        table.add_row(o.name, o.label or "", o.vote or "-", *vals, str(o.kept_tiles))
    return table


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
            fmt_score(f["mean_jaccard"]),
            fmt_score(f["mean_precision"]),
            fmt_score(f["mean_recall"]),
            fmt_score(f["nonzero_jaccard"]),
            fmt_score(f["classification_accuracy"]),
            "yes" if e.eligible else "no",
        )
    return table


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


def failures_table(rows: list[SlideRun]) -> Table:
    """Per failed slide: its name, the error's type and its message."""
    table = Table(title=f"{len(rows)} failed slide(s)", title_style="bold red")
    table.add_column("slide")
    table.add_column("error")
    table.add_column("message", overflow="fold")
    for r in rows:
        table.add_row(r.name, r.error_type, r.error)
    return table


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
