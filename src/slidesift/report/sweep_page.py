"""The report of an N x T sweep folder (``sweep.json``): the paper's Table 2 and its heatmap.

``slidesift report SWEEP`` (:func:`slidesift.report.build_report`) comes here when the folder
holds ``sweep.json``. The page shows the table with rows N (or um/px) and columns T, each cell
with its test Jaccard, precision and recall and the epoch chosen on val, the best cell marked;
a heatmap of the sweep's test metric (numbers in the cells, one colour scale from 0 to 1); and
every cell's record (status, val figures, tile counts, training time, error).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

from slidesift._version import __version__
from slidesift.errors import ReportError, SweepError
from slidesift.report.html import esc, fmt_number, page
from slidesift.report.pictures import png_img
from slidesift.report.sweep_figures import sweep_heatmap_png
from slidesift.sweep_files import SWEEP_FILE, best_cell, read_sweep, sweep_table

__all__ = ["is_sweep", "sweep_report", "sweep_table_section"]

SWEEP_CSS = """
table.grid td,table.grid th{text-align:center;border:1px solid var(--line);padding:6px 10px}
table.grid td.best{outline:3px solid #d62728;outline-offset:-3px;background:#fff7e6}
table.grid .j{font-size:17px;font-weight:600}
table.grid .pr,table.grid .ep{color:var(--muted);font-size:12px;display:block}
table.grid td.failed{background:var(--badbg);color:var(--bad)}
table.grid td.pending{color:var(--muted)}
"""


def is_sweep(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a sweep (``sweep.json``)."""
    return (Path(folder) / SWEEP_FILE).is_file()


def _row_label(value: Any, axis: str) -> str:
    return f"N {value}" if axis == "N" else f"{value:g} um/px"


def _cell_html(cell: dict[str, Any] | None, metric: str, best: bool) -> str:
    if cell is None or cell.get("status") == "pending":
        return '<td class="pending">pending</td>'
    if cell.get("status") == "failed":
        err = f"{cell.get('error_type', '')}: {cell.get('error', '')}"
        return f'<td class="failed" title="{esc(err)}">failed<span class="ep">' \
               f"{esc(cell.get('error_type', ''))}</span></td>"  # fmt: skip
    test = cell.get("test") or {}
    main = fmt_number(test.get(metric))
    pr = f"P {fmt_number(test.get('precision'))} · R {fmt_number(test.get('recall'))}"
    if metric != "jaccard":
        pr = f"J {fmt_number(test.get('jaccard'))} · {pr}"
    mark = ' class="best"' if best else ""
    star = " ★" if best else ""
    return (
        f'<td{mark}><span class="j">{esc(main)}{star}</span><span class="pr">{esc(pr)}</span>'
        f'<span class="ep">epoch {esc(cell.get("epoch", "?"))}</span></td>'
    )


def sweep_table_section(doc: dict[str, Any]) -> str:
    """Table 2: rows N (or um/px), columns T; each cell test metric, precision, recall, epoch."""
    metric = str(doc.get("metric") or "jaccard")
    axis = str(doc.get("axis") or "N")
    cells = [c for c in doc["cells"] if isinstance(c, dict)]
    by_key = {(c.get("n") if c.get("n") is not None else c.get("mpp"), c.get("t")): c
              for c in cells}  # fmt: skip
    best = best_cell(cells, metric)
    head = "".join(f"<th>T {esc(t)}</th>" for t in doc["columns"])
    body = []
    for r in doc["rows"]:
        tds = "".join(
            _cell_html(by_key.get((r, t)), metric, best is not None and by_key.get((r, t)) is best)
            for t in doc["columns"]
        )
        body.append(f"<tr><th>{esc(_row_label(r, axis))}</th>{tds}</tr>")
    rows_are = "downsample N (longest side, px)" if axis == "N" else "resolution (um/px)"
    return (
        '<section id="table"><h2>Test scores by N and T (paper Table 2)</h2>'
        f'<p class="note">Rows: {rows_are}; columns: tile side T (px). Each cell: mean test '
        f"{esc(metric)} (large), precision and recall, and the epoch chosen on the val slides; "
        "test is scored once, by that epoch. ★ marks the best test cell (choosing N and T by it "
        "is choosing on test: the val figures below are the honest guide).</p>"
        f'<div class="scroll"><table class="grid" id="sweep-table"><thead><tr><th></th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def _cells_section(doc: dict[str, Any]) -> str:
    cols = [("cell", None), ("status", None), ("epoch", None), ("test Jaccard", "jaccard"),
            ("test precision", "precision"), ("test recall", "recall"), ("test Dice", "dice"),
            ("test nonzero Jaccard", "nonzero_jaccard"), ("val Jaccard", "val:jaccard"),
            ("train tiles", None), ("train s", None), ("error", None)]  # fmt: skip
    head = "".join(f"<th><button>{esc(c)}</button></th>" for c, _ in cols)
    body = []
    for c in doc["cells"]:
        test, val = c.get("test") or {}, c.get("val") or {}
        tiles = c.get("tiles") or {}
        status = str(c.get("status", ""))
        figures = [
            fmt_number(val.get(k[4:]) if k.startswith("val:") else test.get(k))
            for _, k in cols[3:9] if k is not None
        ]  # fmt: skip
        seconds = c.get("train_seconds")
        row = "".join(
            f"<td>{esc(x)}</td>" for x in (c.get("key", "?"), status, c.get("epoch") or "")
        )
        row += "".join(f'<td class="num">{esc(f)}</td>' for f in figures)
        row += f'<td class="num">{esc(tiles.get("train", ""))}</td>'
        row += f'<td class="num">{esc(fmt_number(seconds, 1) if seconds is not None else "")}</td>'
        err = f"{c.get('error_type', '')}: {c.get('error', '')}" if c.get("error") else ""
        row += f'<td class="err">{esc(err)}</td>'
        body.append(f'<tr class="{"failed" if status == "failed" else ""}">{row}</tr>')
    return (
        '<section id="cells"><h2>Every cell</h2><p class="note">Click a column header to sort. '
        "Val: the chosen epoch's figures on the val slides it was chosen on.</p>"
        '<div class="scroll"><table class="sortable" id="cells-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def sweep_report(
    folder: str | os.PathLike[str],
    *,
    title: str | None = None,
    made: dt.datetime | None = None,
) -> str:
    """The report of a sweep folder as one self-contained HTML document (reads, writes nothing).

    Raises
    ------
    ReportError
        The folder holds no readable ``sweep.json``, or matplotlib is missing.
    """
    root = Path(folder)
    try:
        doc = read_sweep(root)
    except SweepError as exc:
        raise ReportError(root / SWEEP_FILE, exc.reason, exc.hint) from exc
    if doc is None:
        raise ReportError(root / SWEEP_FILE, "does not exist", "run slidesift sweep first")
    metric = str(doc.get("metric") or "jaccard")
    axis = str(doc.get("axis") or "N")
    table = sweep_table(doc["cells"], doc["rows"], doc["columns"], metric)
    sections = [sweep_table_section(doc)]
    nav = [("table", "Table"), ("heatmap", "Heatmap"), ("cells", "Cells")]
    if any(not math.isnan(v) for row in table for v in row):
        png = sweep_heatmap_png(table, doc["rows"], doc["columns"], metric=metric, axis=axis)
        picture = f'<figure class="plot">{png_img(png, f"test {metric} by {axis} and T")}</figure>'
    else:
        picture = '<p class="note">No cell is scored yet.</p>'
    sections.append(f'<section id="heatmap"><h2>Heatmap</h2>{picture}</section>')
    sections.append(_cells_section(doc))
    given = doc.get("spec")
    spec: dict[str, Any] = given if isinstance(given, dict) else {}
    n_done = sum(c.get("status") in ("ok", "resumed") for c in doc["cells"])
    n_failed = sum(c.get("status") == "failed" for c in doc["cells"])
    made = made or dt.datetime.now().astimezone()
    meta = [
        f"made {esc(made.isoformat(timespec='seconds'))}",
        f"slidesift {esc(__version__)}",
        f"sweep <code>{esc(root.resolve())}</code>",
        f"{len(doc['rows'])} x {len(doc['columns'])} cells, {n_done} scored",
        f"{esc(spec.get('epochs', '?'))} epochs a cell",
    ]
    if n_failed:
        meta.append(f'<span class="bad">{n_failed} failed</span>')
    footer = (
        f"Made by slidesift {esc(__version__)}. Self-contained: every picture is embedded; "
        "no network access is needed."
    )
    title = title or f"slidesift sweep: {root.resolve().name}"
    return page(title, " · ".join(meta), nav, "\n".join(sections), footer, css=SWEEP_CSS)
