"""The report's plots, drawn with matplotlib's Agg canvas (no pyplot, no global backend change).

- :func:`rails_spread_png`: the paper's Fig. 5, the lo and hi entropy rails and their spread
  against tile size;
- :func:`training_png`: loss and accuracy per epoch of a training run, and the cohort figures
  of model selection, with the selected epoch marked (:func:`training_figure`: the same as a
  matplotlib figure).

Curves of one panel are told apart by colour, dash pattern and marker, and each is drawn wider
than the ones over it, so two curves with the same values both stay visible. The PNGs are
palette images (:func:`~slidesift.report.pictures.compact_plot_png`). matplotlib is the
``report`` extra: ``pip install 'slidesift[report]'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slidesift.errors import ReportError
from slidesift.rails import RailsAtSize
from slidesift.report.inputs import TrainingRun, as_float
from slidesift.report.pictures import compact_plot_png

__all__ = ["rails_spread_png", "training_figure", "training_png"]

_DPI = 110


def _figure(width: float, height: float, ncols: int) -> tuple[Any, list[Any]]:
    """A figure on an Agg canvas and its ``ncols`` side-by-side axes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ReportError(
            None, "the report's plots need matplotlib, which is not installed",
            "install the 'report' extra: pip install 'slidesift[report]'",
        ) from exc  # fmt: skip
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, list(axes)


def _png(fig: Any) -> bytes:
    """The figure as a palette PNG (:func:`~slidesift.report.pictures.compact_plot_png`)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return compact_plot_png(rgba[..., :3])


_DASHES: tuple[Any, ...] = ("-", "--", "-.", (0, (1, 1)))
_MARKERS = ("o", "s", "^", "D")

#: One curve: x values, y values (NaN: no point), label, colour.
Series = tuple[Sequence[float], Sequence[float], str, str]


def _styles(n: int) -> list[dict[str, Any]]:
    """Line styles for ``n`` curves of one panel, in drawing order, so none hides another.

    Each curve has its own dash pattern and marker, and every curve is wider (line and
    marker) than the ones drawn after it: a curve lying exactly under later ones still shows
    as their coloured rim and in their dash gaps.
    """
    return [
        {"linestyle": _DASHES[i % 4], "marker": _MARKERS[i % 4],
         "linewidth": 1.3 + 0.8 * (n - 1 - i), "markersize": 3.5 + 1.7 * (n - 1 - i),
         "zorder": 2 + i}
        for i in range(n)
    ]  # fmt: skip


def _curves(ax: Any, series: Sequence[Series], hollow: Sequence[bool] | None = None) -> None:
    """Draw ``series`` in :func:`_styles`; points where ``hollow`` is true get unfilled markers."""
    for (xs, ys, label, colour), style in zip(series, _styles(len(series)), strict=True):
        empty = [i for i in range(len(xs)) if hollow is not None and hollow[i]]
        filled = [i for i in range(len(xs)) if i not in empty]
        ax.plot(xs, ys, color=colour, label=label, markevery=filled, **style)
        if empty:
            ax.plot([xs[i] for i in empty], [ys[i] for i in empty], linestyle="none",
                    marker=style["marker"], markersize=style["markersize"], color=colour,
                    markerfacecolor="none", zorder=style["zorder"])  # fmt: skip


def rails_spread_png(rows: Sequence[RailsAtSize], *, model_tile: int | None = None) -> bytes:
    """Fig. 5: lo and hi rails (bits) and their spread against tile size, as PNG bytes.

    Parameters
    ----------
    rows
        One per tile size (:func:`slidesift.tumor_rails.rails_spread`); sizes without rails are
        marked on the x axis.
    model_tile
        The tile size the model was trained at, marked with a dotted line when given.

    Raises
    ------
    ReportError
        matplotlib is missing, or ``rows`` is empty.
    """
    if not rows:
        raise ReportError(None, "the rails spread has no rows to plot")
    ordered = sorted(rows, key=lambda r: r.tile)
    fitted = [r for r in ordered if r.rails is not None]
    empty = [r.tile for r in ordered if r.rails is None]
    fig, (ax_rails, ax_spread) = _figure(9.0, 3.4, 2)
    tiles = [r.tile for r in fitted]
    lo = [r.rails.lo for r in fitted if r.rails is not None]
    hi = [r.rails.hi for r in fitted if r.rails is not None]
    if fitted:
        ax_rails.fill_between(tiles, lo, hi, color="#4c72b0", alpha=0.15, label="admitted band")
        _curves(ax_rails, [(tiles, hi, "hi rail (max)", "#c44e52"),
                           (tiles, lo, "lo rail (min)", "#4c72b0")])  # fmt: skip
        spread = [h - lo_ for h, lo_ in zip(hi, lo, strict=True)]
        _curves(ax_spread, [(tiles, spread, "spread (hi - lo)", "#55a868")])
    for ax in (ax_rails, ax_spread):
        if empty:
            ax.plot(empty, [0.0] * len(empty), "x", color="#888888", clip_on=False,
                    label="no tumor tile survived")  # fmt: skip
        if model_tile is not None:
            ax.axvline(model_tile, color="#333333", linestyle=":", linewidth=1.2,
                       label=f"model's tile T={model_tile}")  # fmt: skip
        ax.set_xlabel("tile side T (px)")
        ax.legend(fontsize=8, frameon=False)
    ax_rails.set_ylabel("entropy of tumor tiles (bits)")
    ax_rails.set_title("entropy rails vs tile size", fontsize=10)
    ax_spread.set_ylabel("spread (bits)")
    ax_spread.set_title("rails spread vs tile size", fontsize=10)
    ax_spread.set_ylim(bottom=0)
    return _png(fig)


def _series(log: Sequence[dict[str, float | None]], key: str) -> list[float]:
    values = [r.get(key) for r in log]
    return [math.nan if v is None else float(v) for v in values]


def training_png(run: TrainingRun) -> bytes:
    """:func:`training_figure` as PNG bytes."""
    return _png(training_figure(run))


def training_figure(run: TrainingRun) -> Any:
    """Loss and accuracy per epoch (and model selection's figures), as a matplotlib figure.

    Panels: training and held-out loss; training, held-out and held-out balanced accuracy;
    when ``selection.json`` exists, each epoch's cohort mean of the selection metric, its
    nonzero mean and the slide classification accuracy (hollow markers: epochs that did not
    qualify). The selected epoch is a dashed line on every panel. Curves that coincide (the
    mean and nonzero mean when no prediction is empty) stay visible: see :func:`_styles`.

    Raises
    ------
    ReportError
        matplotlib is missing, or the run has neither a log nor a selection to plot.
    """
    epochs_sel = list(run.selection.get("epochs", [])) if run.selection else []
    if not run.log and not epochs_sel:
        raise ReportError(run.folder, "has no log.csv rows and no selection.json to plot")
    panels = (2 if run.log else 0) + (1 if epochs_sel else 0)
    fig, axes = _figure(4.2 * panels, 3.3, panels)
    chosen = run.selected_epoch
    i = 0
    if run.log:
        ep = _series(run.log, "epoch")
        for ax, title, ylabel, keys in (
            (axes[i], "loss", "cross-entropy",
             (("train_loss", "training", "#4c72b0"),
              ("masked_holdout_loss", "held out (masked tiles)", "#dd8452"))),
            (axes[i + 1], "tile accuracy", "accuracy",
             (("train_accuracy", "training", "#4c72b0"),
              ("holdout_raw_accuracy", "held out, raw tiles", "#dd8452"),
              ("holdout_raw_balanced_accuracy", "held out, raw tiles, balanced", "#55a868"),
              ("masked_holdout_accuracy", "held out, masked tiles", "#c44e52"))),
        ):  # fmt: skip
            logged = [(key, label, colour, _series(run.log, key)) for key, label, colour in keys]
            _curves(ax, [(ep, ys, label, colour) for _, label, colour, ys in logged
                         if any(not math.isnan(y) for y in ys)])  # fmt: skip
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(ylabel)
        i += 2
    if epochs_sel and run.selection is not None:
        ax = axes[i]
        metric = str(run.selection.get("metric") or "jaccard")
        ep = [float(as_float(e.get("epoch")) or 0.0) for e in epochs_sel]
        not_eligible = [e.get("eligible", True) is False for e in epochs_sel]
        series: list[Series] = []
        for key, label, colour in (
            (f"mean_{metric}", f"mean {metric}", "#8172b3"),
            (f"nonzero_{metric}", f"nonzero {metric}", "#937860"),
            ("classification_accuracy", "slide classification acc.", "#da8bc3"),
        ):
            found = [as_float(e.get(key)) for e in epochs_sel]
            if any(y is not None for y in found):
                series.append((ep, [math.nan if y is None else y for y in found], label, colour))
        _curves(ax, series, hollow=not_eligible)
        ax.set_title("model selection on the test slides", fontsize=10)
        ax.set_ylabel("cohort figure")
    for ax in axes:
        if chosen is not None:
            ax.axvline(chosen, color="#333333", linestyle="--", linewidth=1.1,
                       label=f"selected epoch {chosen}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, frameon=False)
    return fig
