"""``slidesift sweep``: one model per downsample N and tile side T, each scored (paper Table 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slidesift.cli.options import hold_output_folder, make_spec, output_console, segment_options
from slidesift.errors import SweepError
from slidesift.sweep import SweepResult, SweepSpec, run_sweep
from slidesift.tileset import TileSetSpec


def _numbers(kind: Callable[[str], Any], what: str) -> Callable[..., tuple[Any, ...]]:
    """A click callback: ``1500,3000`` -> ``(1500, 3000)``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[Any, ...]:
        if value is None:
            return ()
        try:
            return tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r}: a comma-separated list of {what}") from None

    return parse


def _floor(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    """``--min-accuracy``: a fraction, or ``none`` for no floor."""
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a fraction such as 0.6, or none") from None


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _cell_line(cell: dict[str, Any], metric: str) -> str:
    key, status = cell.get("key"), cell.get("status")
    if status == "failed":
        return f"[red]{key}: failed[/] ({cell.get('error_type')}: {cell.get('error')})"
    test, val = cell.get("test") or {}, cell.get("val") or {}
    seconds = cell.get("train_seconds") or 0.0
    return (
        f"{key}: {'[dim]resumed[/] ' if status == 'resumed' else ''}epoch {cell.get('epoch')} "
        f"(val {metric} {_fmt(val.get(metric))}); test Jaccard {_fmt(test.get('jaccard'))}, "
        f"precision {_fmt(test.get('precision'))}, recall {_fmt(test.get('recall'))}; "
        f"{(cell.get('tiles') or {}).get('train', '?')} training tiles, {seconds:.0f} s training"
    )


def grid_table(result: SweepResult) -> Table:
    """Test figure by N (rows) and T (columns), the best cell marked."""
    spec = result.spec
    table = Table()
    table.add_column(spec.axis if spec.axis == "N" else "um/px", justify="right")
    for t in spec.ts:
        table.add_column(f"T {t}", justify="right")
    best = result.best
    by_key = {c["key"]: c for c in result.cells}
    rows = spec.ns or spec.mpps
    for r, values in zip(rows, result.table(), strict=True):
        cells = []
        for t, v in zip(spec.ts, values, strict=True):
            cell = by_key[next(c.key for c in spec.cells if c.row == r and c.t == t)]
            if cell.get("status") == "failed":
                cells.append("[red]failed[/]")
            elif best is not None and cell is best:
                cells.append(f"[bold green]{_fmt(v)} *[/]")
            else:
                cells.append(_fmt(v))
        table.add_row(f"{r:g}" if isinstance(r, float) else str(r), *cells)
    return table


def _run(console: Console, manifest: Path, out: Path, spec: SweepSpec, **kw: Any) -> SweepResult:
    """:func:`run_sweep` under a progress bar: one step a cell, the running cell's stage."""
    progress = Progress(
        TextColumn("[bold]cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[stage]}"), console=console, transient=True,
    )  # fmt: skip
    with progress:
        task = progress.add_task("cells", total=len(spec.cells), stage="starting")

        def cell_done(cell: dict[str, Any]) -> None:
            progress.console.print(_cell_line(cell, spec.metric))
            progress.update(task, advance=1)

        def stage(key: str, text: str) -> None:
            progress.update(task, stage=f"{key}: {text}")

        return run_sweep(manifest, out, spec, on_cell=cell_done, on_stage=stage, **kw)


@click.command("sweep")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--N", "-N", "ns", metavar="LIST", default=None, callback=_numbers(int, "px"),
    help="Rows: downsample targets, the slide's longer side in px (paper: 3500,4500,6000,8000 "
    "for PAIP2020).",
)  # fmt: skip
@click.option(
    "--mpp", "mpps", metavar="LIST", default=None, callback=_numbers(float, "um/px"),
    help="Rows as resolutions in um/px instead of --N (the slides need MPP metadata).",
)  # fmt: skip
@click.option(
    "--T", "-T", "ts", metavar="LIST", required=True, callback=_numbers(int, "px"),
    help="Columns: tile sides in px, each at least 94 (paper: 100 to 650).",
)  # fmt: skip
@click.option(
    "--out", "-o", type=click.Path(path_type=Path, file_okay=False), default=Path("sweep"),
    show_default=True, help="Sweep folder: sweep.json, sweep.csv, sweep_heatmap.png, cells/.",
)  # fmt: skip
@click.option(
    "--epochs", type=click.IntRange(min=1), default=10, show_default=True,
    help="Epochs per cell. 10, not train's 75: a sweep trains a model per cell, and each "
    "cell's epoch is chosen on val anyway (the paper's CAMELYON16 runs overfit after ~25); "
    "give 75 for the paper's budget.",
)  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Weights, tiles, val draw.")
@click.option(
    "--val-fraction", type=float, default=0.25, show_default=True,
    help="When the manifest has no val rows: this share of each label's training slides is "
    "drawn once as val (OUT/manifest.csv) for every cell to choose its epoch on.",
)  # fmt: skip
@click.option(
    "--metric", type=click.Choice(["jaccard", "dice", "precision", "recall"]),
    default="jaccard", show_default=True,
    help="Cohort mean that chooses each cell's epoch on val (and marks the best cell).",
)  # fmt: skip
@click.option(
    "--min-accuracy", default="0.6", show_default=True, callback=_floor, metavar="FLOAT|none",
    help="Epochs at or below this slide classification accuracy on val are not chosen; none: "
    "every epoch qualifies (short sweeps, whose first epochs may call no slide tumor).",
)  # fmt: skip
@click.option(
    "--tile-source", type=click.Choice(["masked", "raw"]), default="masked", show_default=True,
    help="Training tiles as the paper cuts them, or as segmentation sees them (see train).",
)  # fmt: skip
@segment_options
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True,
    help="0: the cells one after another in this process; more: a Dask local cluster of "
    "that many processes, one cell each, the cores shared among them.",
)  # fmt: skip
@click.option(
    "--scheduler", metavar="ADDRESS", default=None,
    help="Run the cells on an existing Dask cluster (tcp://host:8786); its workers must see "
    "the manifest, the slides, --out and --cache at the same paths.",
)  # fmt: skip
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--force", is_flag=True,
    help="Compute every cell anew (also when OUT holds a sweep of other options).",
)  # fmt: skip
@click.option(
    "--cache", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Thumbnail cache folder [default: $SLIDESIFT_CACHE or ~/.cache/slidesift].",
)  # fmt: skip
def sweep_command(
    manifest: Path,
    ns: tuple[int, ...],
    mpps: tuple[float, ...],
    ts: tuple[int, ...],
    out: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    val_fraction: float,
    metric: str,
    min_accuracy: float | None,
    tile_source: str,
    workers: int,
    scheduler: str | None,
    device: str,
    force: bool,
    cache: Path | None,
    **options: Any,
) -> None:
    """Train and score one model per downsample N and tile side T: the paper's Table 2.

    Each cell (N, T) trains the lightweight CNN on the manifest's training slides, chooses its
    epoch on the val slides (drawn once with --val-fraction when the manifest has none) and
    scores the test slides once with that epoch. Cells go to OUT/cells/N<N>_T<T>/ (the run,
    cell.json last); OUT/sweep.json and OUT/sweep.csv gather them after each cell, and
    OUT/sweep_heatmap.png draws the test figure by N and T. A cell that fails (a tile larger
    than the thumbnails, no tile left by the sifts) is recorded and the others go on.

    Rerun the same command after an interruption: finished cells are kept, an unfinished
    cell's training resumes from its last epoch. Other options in the same OUT are refused
    (--force computes every cell anew); more --N or --T values reuse the finished cells.

    \b
    Examples (cohort of `slidesift phantom --out cohort --count 10`):
      slidesift sweep cohort/manifest.csv --N 1500,3000 --T 96,200 --out sweep
    A quick look first (2 epochs a cell; its page: `slidesift report sweep_quick`):
      slidesift sweep cohort/manifest.csv --N 1000,1500 --T 96,128 --epochs 2 --out sweep_quick
    On a Dask local cluster, two cells at a time (the cores shared between them):
      slidesift sweep cohort/manifest.csv --N 1000,1500 --T 96 --epochs 2 --workers 2 \\
        --out sweep_dask
    Rows in um/px instead of N (the phantom's slides carry their MPP):
      slidesift sweep cohort/manifest.csv --mpp 8,12 --T 96 --epochs 2 --out sweep_mpp
    """
    hold_output_folder(out)
    console = output_console()
    spec = SweepSpec(
        ns=ns, mpps=mpps, ts=ts, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        val_fraction=val_fraction, metric=metric, min_accuracy=min_accuracy,
        segment=make_spec(**options), device=device,
        tileset=TileSetSpec(source=tile_source),  # type: ignore[arg-type]
    )  # fmt: skip
    console.print(
        f"{len(spec.cells)} cells ({spec.axis} {', '.join(f'{r:g}' for r in spec.ns or spec.mpps)}"
        f" x T {', '.join(map(str, spec.ts))}), {epochs} epochs each -> {out}"
    )
    result = _run(
        console, manifest, out, spec, scheduler=scheduler, workers=workers, force=force,
        cache=cache,
    )  # fmt: skip
    axis = "N" if spec.axis == "N" else "um/px"
    console.print(f"test {metric} by {axis} (rows) and tile side T (columns), * the best:")
    console.print(grid_table(result))
    best = result.best
    if best is not None:
        console.print(
            f"best test {metric}: {best['key']} ({_fmt((best.get('test') or {}).get(metric))}, "
            f"epoch {best.get('epoch')}); choosing N and T by test is choosing on test: the val "
            "figures in sweep.csv are the honest guide"
        )
    failed = result.failures
    if failed and len(failed) == len(result.cells):
        raise SweepError(
            f"every cell failed; the first, {failed[0]['key']}: {failed[0].get('error_type')}: "
            f"{failed[0].get('error')}",
            "look at the errors above; fix and rerun (finished cells are kept)",
        )
    if failed:
        console.print(
            f"[bold yellow]warning:[/] {len(failed)} of {len(result.cells)} cell(s) failed "
            "(above and in sweep.csv); rerun after fixing them: finished cells are kept"
        )
    console.print(f"tables in [bold]{out}[/]: sweep.csv, sweep.json, sweep_heatmap.png")
    console.print(f"its page: slidesift report {out}")
