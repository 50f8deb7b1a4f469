"""HTML pieces of the report: escaping, the sections, the sortable table, the page shell.

Everything is built as plain strings; every value that came from a file goes through
:func:`esc`. Pictures are embedded as ``data:`` URIs, so the page needs no other file and no
network (its Content-Security-Policy forbids both); :mod:`slidesift.report.pictures` encodes them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from slidesift.rails import RailsAtSize
from slidesift.report.inputs import Cohort, as_float
from slidesift.report.pictures import png_img

__all__ = [
    "ablation_section",
    "csp",
    "esc",
    "fmt_number",
    "metrics_section",
    "page",
    "slide_anchor",
    "spread_section",
    "summary_section",
]

#: Columns that are not metrics: kept as text, whatever they hold.
_TEXT_COLUMNS = frozenset({"slide", "label", "vote", "inference", "status", "error"})

_LABELS = {"jaccard": "Jaccard", "dice": "Dice", "kept_tiles": "kept tiles",
           "empty_prediction": "empty prediction"}  # fmt: skip


#: Characters shown as U+FFFD: UTF-16 surrogates (a JSON ``"\\ud800"``, or a file name that
#: is not UTF-8, whose bytes Python keeps as surrogates) cannot be written as UTF-8; NUL and the
#: other control characters HTML forbids (a browser shows NUL as U+FFFD anyway).
_UNSHOWABLE = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0e-\x1f\x7f]")


def esc(value: object) -> str:
    """``str(value)`` escaped for HTML text and quoted attributes.

    Surrogates and control characters but tab, newline, form feed and carriage return are
    shown as U+FFFD.
    """
    return html.escape(_UNSHOWABLE.sub("\ufffd", str(value)), quote=True)


def fmt_number(value: Any, digits: int = 3, *, count: bool = False) -> str:
    """A figure for display: ``n/a`` for NaN/blank/null, else ``digits`` decimals.

    Integers (``int`` values, or text without a decimal point) are shown whole, and so is any
    value when ``count`` is true (slide counts stored as floats in ``summary.json``).
    """
    f = as_float(value)
    if isinstance(value, str):
        text = value.strip()
        if f is None:
            return "n/a" if text.lower() in ("", "nan", "none", "null") else text
        if not any(c in text for c in ".eE") and not count:
            return text
    elif f is None:
        return "n/a"
    if count or (isinstance(value, int) and not isinstance(value, bool)):
        return str(round(f))
    return f"{f:.{digits}f}"


def summary_section(cohort: Cohort) -> str:
    """Cohort figures as cards, failed slides listed, every ``summary.json`` value below."""
    s = cohort.summary
    failed = cohort.failed
    cards = [("slides", str(len(cohort.slides)), ""),
             ("failed", str(len(failed)), " bad" if failed else "")]  # fmt: skip
    for key, label in (("mean_slides", "scored (with truth)"),
                       ("nonzero_slides", "nonzero (non-empty prediction)")):  # fmt: skip
        if key in s:
            cards.append((label, fmt_number(s[key], count=True), ""))
    for prefix, word in (("mean", "mean"), ("nonzero", "nonzero")):
        for metric in ("jaccard", "dice", "precision", "recall"):
            key = f"{prefix}_{metric}"
            if key in s:
                cards.append((f"{word} {_LABELS.get(metric, metric)}", fmt_number(s[key]), ""))
    if "classification_accuracy" in s:
        cards.append(("slide classification accuracy",
                      fmt_number(s["classification_accuracy"]), ""))  # fmt: skip
    parts = ['<section id="summary"><h2>Cohort summary</h2><div class="cards">']
    for label, value, cls in cards:
        parts.append(
            f'<div class="card{cls}"><div class="value">{esc(value)}</div>'
            f'<div class="label">{esc(label)}</div></div>'
        )
    parts.append("</div>")
    if failed:
        tracebacks = _tracebacks(s.get("failures"))
        parts.append(f'<p class="bad">{len(failed)} slide(s) failed:</p><ul class="failed">')
        for r in failed:
            tb = tracebacks.get(r.name, "")
            more = (
                f"<details><summary>traceback</summary><pre>{esc(tb)}</pre></details>" if tb else ""
            )
            parts.append(
                f'<li><b>{esc(r.name)}</b>: <span class="err">{esc(r.error)}</span>{more}</li>'
            )
        parts.append("</ul>")
    shown = {k: v for k, v in s.items() if k != "failures"}  # the failures are listed above
    if shown:
        rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(_plain(v))}</td></tr>" for k, v in shown.items()
        )
        parts.append(
            "<details><summary>every figure in summary.json</summary>"
            f'<table class="kv">{rows}</table></details>'
        )
    else:
        parts.append('<p class="note">No summary.json in the cohort folder.</p>')
    parts.append("</section>")
    return "".join(parts)


def _tracebacks(failures: Any) -> dict[str, str]:
    """Slide -> traceback from ``summary.json``'s ``failures`` list (``slidesift evaluate``)."""
    if not isinstance(failures, list):
        return {}
    return {
        str(f["slide"]): str(f["traceback"])
        for f in failures
        if isinstance(f, dict) and f.get("slide") is not None and f.get("traceback")
    }


def _plain(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, allow_nan=True)
    return "null" if value is None else str(value)


def _column_kinds(cohort: Cohort) -> dict[str, bool]:
    """Column -> numeric (every non-blank cell parses as a number)."""
    kinds = {}
    for col in cohort.columns:
        cells = [r.values.get(col, "") for r in cohort.slides]
        filled = [c for c in cells if c]
        kinds[col] = (col not in _TEXT_COLUMNS and bool(filled)
                      and all(_is_number(c) for c in filled))  # fmt: skip
    return kinds


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def slide_anchor(index: int) -> str:
    """The element id of the ``index``-th slide's article (names may hold any character)."""
    return f"slide-{index + 1}"


def metrics_section(cohort: Cohort) -> str:
    """The per-slide table, sortable by clicking a header (numbers numerically, blanks last).

    Each slide's name links to its article (:func:`slide_anchor`).
    """
    cols = [c for c in cohort.columns if c != "error"]
    if any(r.failed for r in cohort.slides) or "error" in cohort.columns:
        cols.append("error")
    numeric = _column_kinds(cohort)
    head = "".join(
        f'<th scope="col" data-type="{"num" if numeric.get(c) else "text"}" title="{esc(c)}">'
        f'<button type="button">{esc(_LABELS.get(c, c.replace("_", " ")))}</button></th>'
        for c in cols
    )
    body = []
    for i, r in enumerate(cohort.slides):
        cells = []
        for c in cols:
            raw = r.values.get(c, "")
            if c == "error" and "error" not in cohort.columns:
                raw = r.error  # a failed status without an error column
            if numeric.get(c):
                f = as_float(raw)
                key = "" if f is None else repr(f)
                shown = fmt_number(raw) if raw else ""
                cells.append(f'<td class="num" data-v="{esc(key)}">{esc(shown)}</td>')
            elif c == "slide":
                cells.append(
                    f'<td data-v="{esc(raw)}"><a href="#{slide_anchor(i)}">{esc(raw)}</a></td>'
                )
            else:
                cls = ' class="err"' if c == "error" and raw else ""
                cells.append(f'<td{cls} data-v="{esc(raw)}">{esc(raw)}</td>')
        cls = ' class="failed"' if r.failed else ""
        body.append(f'<tr{cls} data-i="{i}">{"".join(cells)}</tr>')
    return (
        '<section id="metrics"><h2>Per-slide metrics</h2>'
        '<p class="note">Click a column header to sort; click again to reverse. Blank cells '
        "sort last. Failed slides are tinted red.</p>"
        '<div class="scroll"><table class="sortable" id="metrics-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def spread_section(rows: Sequence[RailsAtSize], plot: bytes, source: str) -> str:
    """Fig. 5 (lo, hi and spread against tile size) with its numbers."""
    body = "".join(
        f"<tr><td>{esc(r.tile)}</td><td>{esc(r.rails.n_tiles if r.rails else 0)}</td>"
        f"<td>{esc(fmt_number(r.rails.lo) if r.rails else '–')}</td>"
        f"<td>{esc(fmt_number(r.rails.hi) if r.rails else '–')}</td>"
        f"<td>{esc(fmt_number(r.spread) if r.rails else '–')}</td></tr>"
        for r in sorted(rows, key=lambda r: r.tile)
    )
    return (
        '<section id="rails-spread"><h2>Entropy rails vs tile size</h2>'
        '<p class="note">The lo and hi rails are the min and max entropy of the training tumor '
        "tiles; a wide spread sifts little (paper Fig. 5). From "
        f"<code>{esc(source)}</code>.</p>"
        f'<figure class="plot">{png_img(plot, "rails and spread against tile size")}</figure>'
        '<table class="small"><thead><tr><th>tile (px)</th><th>tumor tiles</th>'
        "<th>lo (bits)</th><th>hi (bits)</th><th>spread (bits)</th></tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


def ablation_section(rows: Sequence[dict[str, Any]]) -> str:
    """``ablation.json`` as a table: condition and its cohort means (paper Table 3)."""
    metrics = ["jaccard", "dice", "precision", "recall", "slides"]
    body = []
    for r in rows:
        nested = r.get("figures")
        figures: dict[str, Any] = nested if isinstance(nested, dict) else r
        cells = "".join(
            f'<td class="num">{esc(fmt_number(figures.get(m), count=m == "slides"))}</td>'
            for m in metrics
        )
        body.append(f"<tr><td>{esc(r.get('condition', '?'))}</td>{cells}</tr>")
    head = "".join(f"<th>{esc(_LABELS.get(m, m))}</th>" for m in metrics)
    return (
        '<section id="ablation"><h2>Ablations</h2><p class="note">Cohort means over the slides '
        "with truth under each condition (paper Table 3), from ablation.json.</p>"
        f'<table class="small"><thead><tr><th>condition</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )


CSS = """
:root{--fg:#1d232b;--muted:#5d6773;--line:#d8dde3;--bad:#b3261e;--badbg:#fdecea;--accent:#1f5fa8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:#f6f7f9}
header{background:#fff;border-bottom:1px solid var(--line);padding:16px 28px 8px}
h1{margin:0 0 4px;font-size:22px}
h2{font-size:18px;margin:0 0 10px}
h3{font-size:15px;margin:0 0 4px;word-break:break-all}
.meta{color:var(--muted);margin:0 0 8px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}
main{padding:16px 28px 40px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 18px;
margin:0 0 18px}
.note{color:var(--muted);margin:4px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:120px}
.card .value{font-size:20px;font-weight:600}
.card .label{color:var(--muted);font-size:12px}
.card.bad{border-color:var(--bad);background:var(--badbg)}
.bad{color:var(--bad)}
table{border-collapse:collapse}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
table.sortable th button{all:unset;cursor:pointer;font-weight:600;white-space:nowrap}
table.sortable th button:focus-visible{outline:2px solid var(--accent)}
table.sortable th[aria-sort=ascending] button::after{content:" \\25B2"}
table.sortable th[aria-sort=descending] button::after{content:" \\25BC"}
tr.failed td{background:var(--badbg)}
td.err,pre.err,span.err{color:var(--bad);white-space:pre-wrap;overflow-wrap:anywhere}
td.err{min-width:22em;max-width:40em}
pre.err{background:var(--badbg);padding:8px;border-radius:4px;margin:6px 0}
table.kv th{font-weight:500;color:var(--muted)}
article.slide{border-top:1px solid var(--line);padding:14px 0}
article.slide.failed h3{color:var(--bad)}
.facts{color:var(--muted);margin:0 0 8px}
.figs{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:14px;align-items:start}
@media (max-width:760px){.figs{grid-template-columns:minmax(0,1fr)}}
figure{margin:0}
.figs img{display:block;width:100%;height:auto;border:1px solid var(--line);cursor:zoom-in;
background:#eee}
.figs figure.zoomed{grid-column:1/-1}
.figs figure.zoomed img{cursor:zoom-out;max-height:94vh;object-fit:contain;background:none}
.figs figure.absent,.figs figure.missing{align-self:stretch;border:1px dashed var(--line);
padding:8px}
figure.plot img{max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:12px;margin-top:2px}
.cap{margin-right:6px}
.key{display:inline-block;white-space:nowrap;margin-right:8px}
.swatch{display:inline-block;width:12px;height:12px;margin:0 4px 0 0;vertical-align:-2px;
border-radius:2px}
code{background:#eef0f3;padding:0 4px;border-radius:3px}
footer{color:var(--muted);padding:0 28px 24px}
"""

JS = """
(function () {
  "use strict";
  function key(row, col) { return row.cells[col].getAttribute("data-v") || ""; }
  function sortBy(table, th, col) {
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x === "" || y === "") {
        if (x === y) { return a.getAttribute("data-i") - b.getAttribute("data-i"); }
        return x === "" ? 1 : -1;
      }
      var c = numeric ? Number(x) - Number(y)
                      : x.localeCompare(y, undefined, {numeric: true, sensitivity: "base"});
      return c !== 0 ? dir * c : a.getAttribute("data-i") - b.getAttribute("data-i");
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.querySelector("button").addEventListener("click", function () {
        sortBy(table, th, col);
      });
    });
  });
  var imgs = document.querySelectorAll(".figs img");
  Array.prototype.forEach.call(imgs, function (img) {
    img.addEventListener("click", function () {
      img.parentNode.classList.toggle("zoomed");
    });
  });
})();
"""


def _sha256(text: str) -> str:
    """A CSP source for exactly this inline script or style: ``'sha256-<base64>'``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def csp(css: str, js: str = JS) -> str:
    """The page's Content-Security-Policy: nothing but its own style, its own script, data: images.

    Only the one ``<style>`` and the one ``<script>`` the report writes run, by their hashes: an
    injected script, event handler (``onerror=``), ``javascript:`` URL, ``style`` attribute or
    ``<style>`` would not, and no request leaves the page (no fetch, font, frame, form, base
    URL or non-``data:`` image). Trusted Types allow no HTML-from-string sink in the script.
    """
    return (
        f"default-src 'none'; img-src data:; style-src {_sha256(css)}; "
        f"script-src {_sha256(js)}; base-uri 'none'; form-action 'none'; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    )


def page(
    title: str,
    meta: str,
    nav: Sequence[tuple[str, str]],
    body: str,
    footer: str,
    *,
    css: str = "",
) -> str:
    """The whole document: head (CSP, CSS), header with meta line and nav, sections, script.

    ``css`` is added after :data:`CSS` (rules the body needs, such as legend colours); the
    style and the script are allowed by their hashes (:func:`csp`).
    """
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    style = CSS + css
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(style)}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="generator" content="slidesift report"><title>{esc(title)}</title>'
        f"<style>{style}</style></head>\n<body><header><h1>{esc(title)}</h1>"
        f'<p class="meta">{meta}</p><nav>{links}</nav></header>\n<main>{body}</main>\n'
        f"<footer>{footer}</footer><script>{JS}</script></body></html>\n"
    )
