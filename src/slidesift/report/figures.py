"""The report's plots, drawn with matplotlib's Agg canvas (no pyplot, no global backend change).

- :func:`rails_spread_png`: the paper's Fig. 5, the lo and hi entropy rails and their spread
  against tile size;
- :func:`training_png`: loss and accuracy per epoch of a training run, and the cohort figures
  of model selection, with the selected epoch marked.

Each returns PNG bytes, a palette image (:func:`~slidesift.report.pictures.compact_plot_png`).
matplotlib is the ``report`` extra: ``pip install 'slidesift[report]'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slidesift.rails import RailsAtSize
from slidesift.report.inputs import ReportError, TrainingRun, as_float
from slidesift.report.pictures import compact_plot_png

__all__ = ["rails_spread_png", "training_png"]

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


def rails_spread_png(rows: Sequence[RailsAtSize], *, model_tile: int | None = None) -> bytes:
    """Fig. 5: lo and hi rails (bits) and their spread against tile size, as PNG bytes.

    Parameters
    ----------
    rows
        One per tile size (:func:`slidesift.rails.rails_spread`); sizes without rails are
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
        ax_rails.plot(tiles, hi, "o-", color="#c44e52", label="hi rail (max)")
        ax_rails.plot(tiles, lo, "o-", color="#4c72b0", label="lo rail (min)")
        ax_spread.plot(tiles, [h - lo_ for h, lo_ in zip(hi, lo, strict=True)], "s-",
                       color="#55a868", label="spread (hi - lo)")  # fmt: skip
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
    """Loss and accuracy per epoch (and model selection's figures), as PNG bytes.

    Panels: training and held-out loss; training, held-out and held-out balanced accuracy;
    when ``selection.json`` exists, each epoch's cohort mean of the selection metric, its
    nonzero mean and the slide classification accuracy (hollow markers: epochs that did not
    qualify). The selected epoch is a dashed line on every panel.

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
        ax = axes[i]
        for key, label, color in (("train_loss", "training", "#4c72b0"),
                                  ("masked_holdout_loss", "held out (masked tiles)",
                                   "#dd8452")):  # fmt: skip
            ys = _series(run.log, key)
            if any(not math.isnan(y) for y in ys):
                ax.plot(ep, ys, "o-", markersize=3, color=color, label=label)
        ax.set_title("loss", fontsize=10)
        ax.set_ylabel("cross-entropy")
        ax = axes[i + 1]
        for key, label, color in (
            ("train_accuracy", "training", "#4c72b0"),
            ("holdout_raw_accuracy", "held out, raw tiles", "#dd8452"),
            ("holdout_raw_balanced_accuracy", "held out, raw tiles, balanced", "#55a868"),
            ("masked_holdout_accuracy", "held out, masked tiles", "#c44e52"),
        ):
            ys = _series(run.log, key)
            if any(not math.isnan(y) for y in ys):
                ax.plot(ep, ys, "o-", markersize=3, color=color, label=label)
        ax.set_title("tile accuracy", fontsize=10)
        ax.set_ylabel("accuracy")
        i += 2
    if epochs_sel and run.selection is not None:
        ax = axes[i]
        metric = str(run.selection.get("metric") or "jaccard")
        ep = [float(as_float(e.get("epoch")) or 0.0) for e in epochs_sel]
        eligible = [e.get("eligible", True) is not False for e in epochs_sel]
        for key, label, color in (
            (f"mean_{metric}", f"mean {metric}", "#8172b3"),
            (f"nonzero_{metric}", f"nonzero {metric}", "#937860"),
            ("classification_accuracy", "slide classification acc.", "#da8bc3"),
        ):
            found = [as_float(e.get(key)) for e in epochs_sel]
            if all(y is None for y in found):
                continue
            vals = [math.nan if y is None else y for y in found]
            ax.plot(ep, vals, "-", color=color, label=label)
            ax.scatter([x for x, ok in zip(ep, eligible, strict=True) if ok],
                       [v for v, ok in zip(vals, eligible, strict=True) if ok],
                       s=14, color=color, zorder=3)  # fmt: skip
            ax.scatter([x for x, ok in zip(ep, eligible, strict=True) if not ok],
                       [v for v, ok in zip(vals, eligible, strict=True) if not ok],
                       s=14, facecolors="none", edgecolors=color, zorder=3)  # fmt: skip
        ax.set_title("model selection on the test slides", fontsize=10)
        ax.set_ylabel("cohort figure")
    for ax in axes:
        if chosen is not None:
            ax.axvline(chosen, color="#333333", linestyle="--", linewidth=1.1,
                       label=f"selected epoch {chosen}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)
