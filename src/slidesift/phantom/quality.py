"""How hard is a phantom cohort? Colour-only separability and the entropy rails' spread.

Two checks keep phantoms honest (see the phantom issue's bar):

- :func:`colour_separability`: a logistic regression on each tile's RGB mean and standard
  deviation should *not* tell tumor from non-tumor well; if it did, any model could find tumor
  by colour and the phantom would test nothing.
- The entropy rails over tile sizes (:func:`slidesift.rails.rails_spread`) should stay narrow
  at 200-400 px and widen at small tiles in the ``camelyon`` regime, as in the paper's Fig. 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slidesift.sift import SiftSpec, to_gray
from slidesift.tiles import TileGrid

__all__ = ["ColourSeparability", "colour_separability", "logistic_fit", "tile_colour_features"]


def tile_colour_features(
    pixels: NDArray[np.uint8],
    tumor: NDArray[np.bool_],
    grid: TileGrid,
    *,
    spec: SiftSpec | None = None,
    pure: float = 0.5,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per-tile RGB mean and standard deviation, and a tumor label, for tissue tiles.

    Tiles that the background sift drops are left out; a tile is tumor when at least ``pure``
    of its pixels are, non-tumor when none is, and left out in between.

    Parameters
    ----------
    pixels
        ``(H, W, 3)`` uint8 thumbnail.
    tumor
        ``(H, W)`` bool truth on the same grid.
    grid
        The tiles.
    spec
        Background test; default :class:`SiftSpec`.
    pure
        Tumor share a tile needs to count as tumor.

    Returns
    -------
    features
        ``(n, 6)`` float64: mean R, G, B, then standard deviation R, G, B.
    labels
        ``(n,)`` int64: 1 tumor, 0 non-tumor.
    """
    spec = spec or SiftSpec()
    gray = to_gray(pixels)
    bg = (gray < spec.gray_low) | (gray > spec.gray_high)
    t = grid.tile
    feats, labels = [], []
    for x, y in grid.th_xy():
        share_bg = bg[y : y + t, x : x + t].mean()
        if share_bg > spec.max_background:
            continue
        share = tumor[y : y + t, x : x + t].mean()
        if 0 < share < pure:
            continue
        tile = pixels[y : y + t, x : x + t].reshape(-1, 3).astype(np.float64)
        feats.append(np.concatenate([tile.mean(axis=0), tile.std(axis=0)]))
        labels.append(int(share >= pure))
    return np.array(feats).reshape(-1, 6), np.array(labels, dtype=np.int64)


def logistic_fit(
    x: NDArray[np.float64], y: NDArray[np.int64], *, l2: float = 1e-3, iterations: int = 50
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Class-balanced logistic regression by Newton's method on standardised features.

    Returns ``(weights, mean, scale)``; predict with :func:`_predict`.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    n1 = max(1, int(y.sum()))
    n0 = max(1, len(y) - n1)
    sample_w = np.where(y == 1, 0.5 / n1, 0.5 / n0)
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (sample_w * (p - y)) + l2 * w
        hess = (z * (sample_w * p * (1 - p))[:, None]).T @ z + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w, mean, scale


def _predict(
    model: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    x: NDArray[np.float64],
) -> NDArray[np.int64]:
    w, mean, scale = model
    z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    return (z @ w > 0).astype(np.int64)


def _balanced_accuracy(y: NDArray[np.int64], pred: NDArray[np.int64]) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass(frozen=True)
class ColourSeparability:
    """How well RGB mean/std per tile separates tumor from non-tumor.

    Attributes
    ----------
    fitted
        Balanced accuracy of the regression on the tiles it was fitted on (an upper bound).
    held_out
        Balanced accuracy on each slide's tiles from a regression fitted on the other slides,
        pooled (leave one slide out).
    n_tumor, n_normal
        Tiles of each class.
    """

    fitted: float
    held_out: float
    n_tumor: int
    n_normal: int


def colour_separability(
    slides: Sequence[tuple[NDArray[np.float64], NDArray[np.int64]]],
) -> ColourSeparability:
    """Fit the colour-only regression over slides' tiles (from :func:`tile_colour_features`).

    Accuracies are balanced (the mean of the two classes' recalls), so 0.5 is chance whatever
    the class sizes.
    """
    xs = [f for f, _ in slides]
    ys = [lab for _, lab in slides]
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    fitted = _balanced_accuracy(y_all, _predict(logistic_fit(x_all, y_all), x_all))
    preds, truth = [], []
    for k in range(len(slides)):
        if not len(ys[k]):
            continue
        rest_x = np.concatenate([x for i, x in enumerate(xs) if i != k])
        rest_y = np.concatenate([y for i, y in enumerate(ys) if i != k])
        if len(np.unique(rest_y)) < 2:
            continue
        preds.append(_predict(logistic_fit(rest_x, rest_y), xs[k]))
        truth.append(ys[k])
    held = (
        _balanced_accuracy(np.concatenate(truth), np.concatenate(preds)) if preds else float("nan")
    )
    return ColourSeparability(fitted, held, int(y_all.sum()), int(len(y_all) - y_all.sum()))
