"""One self-contained HTML report of a cohort run (``slidesift report``).

The page shows the cohort summary, a sortable per-slide metrics table (failed slides with their
error), each slide's overlay, error map and tile location map, the entropy rails spread against
tile size (paper Fig. 5), training curves with the selected epoch, and the ablation table.
Pictures are embedded as ``data:`` URIs (photographs as JPEG, under 1 MB a slide) and the only
script is a small inline table sorter, so the file can be mailed or archived on its own and
opens without a network. Sections whose input is missing are left out and listed, with how to
make that input, at the end.

>>> from slidesift.report import write_report
>>> write_report("seg", run="run")  # doctest: +SKIP
PosixPath('seg/report.html')
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slidesift._version import __version__
from slidesift.io.atomic import atomic_write_text
from slidesift.rails import RailsAtSize
from slidesift.report.figures import rails_spread_png, training_png
from slidesift.report.html import (
    ablation_section,
    esc,
    fmt_number,
    metrics_section,
    page,
    slide_anchor,
    spread_section,
    summary_section,
)
from slidesift.report.inputs import (
    Cohort,
    ReportError,
    SlideRecord,
    TrainingRun,
    read_cohort,
    read_run,
    read_spread_file,
)
from slidesift.report.pictures import png_img
from slidesift.report.slides import legend_css, slide_article
from slidesift.report.sweep_page import is_sweep, sweep_report

__all__ = [
    "MAX_IMAGE_PX",
    "SPREAD_NAME",
    "Cohort",
    "ReportError",
    "SlideRecord",
    "TrainingRun",
    "build_report",
    "read_cohort",
    "read_run",
    "write_report",
]

#: File name a rails spread is looked for under (in the run folder, then the cohort folder).
SPREAD_NAME = "rails_spread.json"

#: Default longest side of an embedded slide picture (px); larger ones are shrunk.
MAX_IMAGE_PX = 1200

SpreadInput = str | os.PathLike[str] | Sequence[RailsAtSize] | None


def _spread(
    given: SpreadInput, cohort: Cohort, run: TrainingRun | None
) -> tuple[list[RailsAtSize], str] | None:
    """The rails spread rows and where they came from (given, or found by name)."""
    if isinstance(given, str | os.PathLike):
        return read_spread_file(given), str(given)
    if given is not None:
        return list(given), "rows given to build_report"
    for folder in ([run.folder] if run else []) + [cohort.folder]:
        path = folder / SPREAD_NAME
        if path.is_file():
            return read_spread_file(path), str(path)
    return None


def _model_tile(run: TrainingRun | None) -> int | None:
    tileset = run.info.get("tileset") if run else None
    tile = tileset.get("tile") if isinstance(tileset, dict) else None
    return tile if isinstance(tile, int) and not isinstance(tile, bool) else None


#: How the report names each ``run.json`` ``arch``.
MODEL_NAMES = {
    "lightweight-cnn": "lightweight CNN with entropy rails",
    "unet-effb0": "U-Net/EfficientNet-B0 (the paper's baseline)",
}


def _training_section(run: TrainingRun) -> str:
    facts = []
    info = run.info
    nested = info.get("tileset")
    tileset: dict[str, Any] = nested if isinstance(nested, dict) else {}
    params = info.get("parameters")
    trainable = params.get("trainable") if isinstance(params, dict) else None
    for label, value in (
        ("model", MODEL_NAMES.get(str(info.get("arch", "lightweight-cnn")), info.get("arch"))),
        ("trainable parameters", f"{trainable:,}" if isinstance(trainable, int) else None),
        ("classes", ", ".join(map(str, info.get("classes") or [])) or None),
        ("tile T", tileset.get("tile")),
        ("thumbnail N", tileset.get("longest")),
        ("epochs logged", len(run.log) or None),
        ("device", info.get("device")),
        ("trained with slidesift", info.get("slidesift_version")),
    ):
        if value not in (None, ""):
            facts.append(f"{esc(label)} <b>{esc(value)}</b>")
    sel = run.selection
    if sel is not None and run.selected_epoch is not None:
        best = Path(str(sel.get("best", ""))).name
        facts.append(
            f"selected epoch <b>{run.selected_epoch}</b> by mean {esc(sel.get('metric', '?'))}"
            + (f" (<code>{esc(best)}</code>)" if best else "")
        )
    plot = ""
    if run.log or (sel and sel.get("epochs")):
        plot = f'<figure class="plot">{png_img(training_png(run), "training curves")}</figure>'
    else:
        plot = '<p class="note">The run has no log.csv rows yet.</p>'
    note = (
        "" if sel is not None else
        '<p class="note">No selection.json: run <code>slidesift select RUN MANIFEST</code> to '
        "score every epoch and mark the best.</p>"
    )  # fmt: skip
    return (
        f'<section id="training"><h2>Training</h2><p class="note">Run folder '
        f"<code>{esc(run.folder)}</code>. {' · '.join(facts)}</p>{plot}{note}</section>"
    )


def build_report(
    cohort_dir: str | os.PathLike[str],
    *,
    run: str | os.PathLike[str] | None = None,
    rails_spread: SpreadInput = None,
    title: str | None = None,
    max_image_px: int | None = MAX_IMAGE_PX,
    made: dt.datetime | None = None,
) -> str:
    """The report of a cohort output folder, as one self-contained HTML document.

    Reads files, writes nothing.

    Parameters
    ----------
    cohort_dir
        Output folder of ``slidesift segment ... --out`` (or ``slidesift evaluate``): holds
        ``scores.csv``, usually ``summary.json``, maybe ``ablation.json`` and per-slide PNGs.
        A folder of ``slidesift sweep`` (``sweep.json``) gets the sweep's page instead
        (:func:`slidesift.report.sweep_page.sweep_report`: Table 2 and its heatmap; the other
        options but ``title`` do not apply).
    run
        A training run folder (``log.csv``, ``run.json``, maybe ``selection.json``): adds the
        training curves.
    rails_spread
        A rails spread JSON file (``slidesift rails --spread-out``) or its rows; by default
        ``rails_spread.json`` is looked for in ``run`` and then in ``cohort_dir``.
    title
        The page title (default: ``slidesift report: <folder name>``).
    max_image_px
        Slide pictures longer than this are shrunk before embedding (``None``: never).
    made
        The time printed as "made" (default: now, local time).

    Returns
    -------
    str
        The HTML.

    Raises
    ------
    ReportError
        A missing ``scores.csv``, a malformed CSV or JSON input, or matplotlib missing when a
        plot is needed (install ``slidesift[report]``).
    """
    if max_image_px is not None and max_image_px < 16:
        raise ReportError(None, f"max_image_px={max_image_px} is too small; use at least 16")
    if is_sweep(cohort_dir):  # an N x T sweep (slidesift sweep --out): Table 2 and its heatmap
        return sweep_report(cohort_dir, title=title, made=made)
    cohort = read_cohort(cohort_dir)
    training = read_run(run) if run is not None else None
    spread = _spread(rails_spread, cohort, training)
    folder_name = cohort.folder.resolve().name
    title = title or f"slidesift report: {folder_name}"

    sections: list[str] = [summary_section(cohort)]
    nav = [("summary", "Summary"), ("metrics", "Metrics")]
    absent: list[str] = []
    sections.append(metrics_section(cohort))

    articles, n_images = [], 0
    for i, r in enumerate(cohort.slides):
        art, n = slide_article(r, slide_anchor(i), max_image_px)
        articles.append(art)
        n_images += n
    if cohort.slides:
        nav.append(("slides", "Slides"))
        sections.append(
            '<section id="slides"><h2>Slides</h2><p class="note">Overlay: the predicted tumor '
            "outline (and the truth's, when known). Error map: true positives green, false "
            "positives red, false negatives blue over the dimmed slide. Tile locations: the "
            "tiles kept by the sifts, the rest dimmed. Click a picture to enlarge it.</p>"
            + "".join(articles)
            + "</section>"
        )
        if n_images == 0:
            absent.append(
                "slide pictures: no <code>&lt;slide&gt;_overlay.png</code> (or errors, "
                "locations) found in the cohort folder or its per-slide subfolders; segment "
                "and evaluate write them unless <code>--outputs</code> leaves them out"
            )
    else:
        absent.append("slides: scores.csv has no rows")

    if spread is not None:
        rows, source = spread
        if rows:
            plot = rails_spread_png(rows, model_tile=_model_tile(training))
            sections.append(spread_section(rows, plot, source))
            nav.append(("rails-spread", "Rails spread"))
        else:
            absent.append(f"rails spread: <code>{esc(source)}</code> has no rows")
    else:
        absent.append(
            "rails spread vs tile size: give <code>--rails-spread FILE</code>, written by "
            "<code>slidesift rails -s SLIDE -t TRUTH --spread 100,200,300,400 --spread-out "
            f"FILE</code> (or put it at {SPREAD_NAME} in the run or cohort folder)"
        )

    if training is not None:
        sections.append(_training_section(training))
        nav.append(("training", "Training"))
    else:
        absent.append("training curves: give the training run folder with <code>--run RUN</code>")

    if cohort.ablation is not None:
        sections.append(ablation_section(cohort.ablation))
        nav.append(("ablation", "Ablations"))
    else:
        absent.append(
            "ablations: run <code>slidesift segment ... --ablate</code> to write ablation.json"
        )

    if absent:
        sections.append(
            '<section id="absent"><h2>Not in this report</h2><ul class="note">'
            + "".join(f"<li>{a}</li>" for a in absent)
            + "</ul></section>"
        )

    made = made or dt.datetime.now().astimezone()
    summary = cohort.summary
    checkpoint = summary.get("checkpoint") if isinstance(summary.get("checkpoint"), str) else None
    if checkpoint is None and training is not None and training.selection is not None:
        best = training.selection.get("best")
        checkpoint = Path(best).name if isinstance(best, str) and best else None
    meta = [
        f"made {esc(made.isoformat(timespec='seconds'))}",
        f"slidesift {esc(__version__)}",
        f"cohort <code>{esc(cohort.folder.resolve())}</code>",
        f"{len(cohort.slides)} slide(s)",
    ]
    if cohort.failed:
        meta.append(f'<span class="bad">{len(cohort.failed)} failed</span>')
    if checkpoint:
        meta.append(f"checkpoint <code>{esc(checkpoint)}</code>")
    if training is not None:
        meta.append(f"run <code>{esc(training.folder.resolve())}</code>")
    mean_j = summary.get("mean_jaccard")
    if mean_j is not None:
        meta.append(f"mean Jaccard <b>{esc(fmt_number(mean_j))}</b>")
    footer = (
        f"Made by slidesift {esc(__version__)}. Self-contained: every picture is embedded; "
        "no network access is needed."
    )
    return page(title, " · ".join(meta), nav, "\n".join(sections), footer, css=legend_css())


def write_report(
    cohort_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    run: str | os.PathLike[str] | None = None,
    rails_spread: SpreadInput = None,
    title: str | None = None,
    max_image_px: int | None = MAX_IMAGE_PX,
) -> Path:
    """Write :func:`build_report` atomically to ``output`` (default ``cohort_dir/report.html``).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ReportError
        As :func:`build_report`, or the output's folder does not exist.
    """
    text = build_report(
        cohort_dir, run=run, rails_spread=rails_spread, title=title, max_image_px=max_image_px
    )
    dest = Path(output) if output is not None else Path(cohort_dir) / "report.html"
    if not dest.parent.is_dir():
        raise ReportError(
            dest.parent, "does not exist", "create the folder or pick another --output"
        )
    return atomic_write_text(dest, text)
