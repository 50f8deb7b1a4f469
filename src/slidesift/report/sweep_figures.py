"""The heatmap of an N x T sweep (the paper's Table 2 as a picture), drawn with matplotlib.

Takes plain values (the table, its row and column values), so :mod:`slidesift.sweep_files`
can draw ``sweep_heatmap.png`` and the report embed the same picture. matplotlib is the
``report`` extra: ``pip install 'slidesift[report]'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from slidesift.errors import ReportError
from slidesift.report.figures import _figure, _png

__all__ = ["sweep_heatmap_png"]


def sweep_heatmap_png(
    table: Sequence[Sequence[float]],
    rows: Sequence[float],
    columns: Sequence[int],
    *,
    metric: str = "jaccard",
    axis: str = "N",
) -> bytes:
    """A heatmap of a test figure by row (N or um/px) and column (T), as PNG bytes.

    Parameters
    ----------
    table
        ``len(rows) x len(columns)`` values in [0, 1]; NaN for a cell without a score (failed
        or pending), drawn grey and marked ``n/a``.
    rows
        The row values, top to bottom (downsample N in px, or um/px).
    columns
        The column values, left to right (tile side T in px).
    metric
        The figure's name (colour bar label and title).
    axis
        ``N`` or ``mpp``: what the rows are.

    Raises
    ------
    ReportError
        matplotlib is missing, or the table's shape does not match ``rows`` x ``columns``.
    """
    import numpy as np

    values = np.asarray(table, dtype=np.float64)
    if values.shape != (len(rows), len(columns)) or values.size == 0:
        raise ReportError(
            None, f"a sweep table of shape {values.shape} for {len(rows)} rows and "
            f"{len(columns)} columns",
        )  # fmt: skip
    width = 2.2 + 1.15 * len(columns)
    height = 1.6 + 0.7 * len(rows)
    fig, (ax,) = _figure(width, height, 1)
    ax.grid(False)
    masked = np.ma.masked_invalid(values)
    cmap = _colormap()
    image = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    best: tuple[int, int] | None = None
    if np.isfinite(values).any():
        i_best, j_best = np.unravel_index(int(np.nanargmax(values)), values.shape)
        best = (int(i_best), int(j_best))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if math.isnan(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=9, color="#555555")
                continue
            colour = "white" if v < 0.55 else "black"
            weight = "bold" if best == (i, j) else "normal"
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=10, color=colour,
                    fontweight=weight)  # fmt: skip
    if best is not None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False,
                               edgecolor="#d62728", linewidth=2.5))  # fmt: skip
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel("tile side T (px)")
    ax.set_ylabel("downsample N (px)" if axis == "N" else "resolution (um/px)")
    ax.set_title(f"test {metric} by {axis} and T (best outlined)", fontsize=10)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(image, ax=ax, label=f"mean {metric}", shrink=0.9)
    return _png(fig)


def _colormap() -> object:
    """viridis with grey for cells without a score."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="#dddddd")
    return cmap
