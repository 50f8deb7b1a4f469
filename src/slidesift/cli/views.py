"""What several commands print: tables of sifts, tiles and rails, and the training progress.

Display only (rich); commands share these instead of importing one another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from slidesift.rails import RailsAtSize
from slidesift.sift_maps import SiftRun
from slidesift.tileset import TileSet
from slidesift.train_spec import EpochRecord, TrainCallbacks

__all__ = ["sift_table", "spread_table", "tiles_table", "training_progress"]


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
            f"(bal. {r.holdout_raw_balanced_accuracy:.3f}, {r.holdout_raw_tiles} tiles)  "
            f"masked: {r.masked_holdout_accuracy:.3f}"
            if r.holdout_raw_accuracy is not None
            else ""
        )
        console.print(
            f"epoch {r.epoch:3d}  loss {r.train_loss:.4f}  acc {r.train_accuracy:.3f}{held}  "
            f"{r.tiles_per_second:.0f} tiles/s"
        )

    return progress, TrainCallbacks(start, batch, evaluate, end)
