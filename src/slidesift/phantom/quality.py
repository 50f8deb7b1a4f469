"""How hard is a phantom cohort? Colour-only separability and the entropy rails' spread.

Two checks keep phantoms honest (see the phantom issue's bar):

- :func:`separability` on colour: a logistic regression on each tile's RGB mean and standard
  deviation should *not* tell tumor from non-tumor well; if it did, any model could find tumor
  by colour and the phantom would test nothing. Two texture statistics added to the colour
  should separate them well: the tumor is there to be found.
- The entropy rails over tile sizes (:func:`slidesift.tumor_rails.rails_spread`) should stay narrow
  at 200-400 px and widen at small tiles in the ``camelyon`` regime, as in the paper's Fig. 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slidesift.phantom.render import render_image
from slidesift.phantom.slide_layout import SlideLayout
from slidesift.sift import SiftSpec, to_gray
from slidesift.tiles import TileGrid

__all__ = [
    "COLOUR",
    "TEXTURE",
    "Separability",
    "logistic_fit",
    "separability",
    "thumbnail",
    "tile_features",
]


def thumbnail(
    layout: SlideLayout, longest: int, *, workers: int | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Render a slide in memory and area-downsample it, with its truth on the same grid.

    The pixels are those :func:`slidesift.io.slide.read_thumb` gets from the slide file,
    less the JPEG compression.

    Returns
    -------
    pixels
        ``(H, W, 3)`` uint8 with ``max(H, W) == longest`` (or level 0 when smaller).
    truth
        ``(H, W)`` bool tumor mask.
    """
    import cv2

    h, w = layout.shape
    f = max(1.0, max(h, w) / longest)
    size = (max(1, round(w / f)), max(1, round(h / f)))
    pixels = cv2.resize(render_image(layout, workers=workers), size, interpolation=cv2.INTER_AREA)
    truth = layout.truth(size, (w / size[0], h / size[1]))
    return np.asarray(pixels, dtype=np.uint8), truth


#: Feature columns of :func:`tile_features`: colour (RGB mean, RGB standard deviation) and
#: texture (mean absolute Laplacian and mean absolute high-pass of the grey tile).
COLOUR = [0, 1, 2, 3, 4, 5]
TEXTURE = [6, 7]


def tile_features(
    pixels: NDArray[np.uint8],
    tumor: NDArray[np.bool_],
    grid: TileGrid,
    *,
    spec: SiftSpec | None = None,
    pure: float = 0.5,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per-tile colour and texture statistics, and a tumor label, for tissue tiles.

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
        ``(n, 8)`` float64: mean R, G, B; standard deviation R, G, B (:data:`COLOUR`); mean
        absolute Laplacian and mean absolute difference from a Gaussian blur (sigma 3 px) of
        the grey tile (:data:`TEXTURE`).
    labels
        ``(n,)`` int64: 1 tumor, 0 non-tumor.
    """
    import cv2

    spec = spec or SiftSpec()
    gray = to_gray(pixels)
    bg = (gray < spec.gray_low) | (gray > spec.gray_high)
    g = gray.astype(np.float32)
    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F))
    high = np.abs(g - cv2.GaussianBlur(g, (0, 0), 3))
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
        texture = [lap[y : y + t, x : x + t].mean(), high[y : y + t, x : x + t].mean()]
        feats.append(np.concatenate([tile.mean(axis=0), tile.std(axis=0), texture]))
        labels.append(int(share >= pure))
    return np.array(feats).reshape(-1, 8), np.array(labels, dtype=np.int64)


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
class Separability:
    """How well some per-tile features separate tumor from non-tumor (linearly).

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


def separability(
    slides: Sequence[tuple[NDArray[np.float64], NDArray[np.int64]]],
    columns: Sequence[int] = COLOUR,
) -> Separability:
    """Fit a logistic regression on some feature columns over slides' tiles.

    Parameters
    ----------
    slides
        Per slide, :func:`tile_features` output.
    columns
        Feature columns to use: :data:`COLOUR` (the phantom bar: at most 0.8), or
        ``COLOUR + TEXTURE`` (should be clearly better: tumor is findable by texture).

    Returns
    -------
    Separability
        Accuracies are balanced (the mean of the two classes' recalls): 0.5 is chance.
    """
    xs = [f[:, list(columns)] for f, _ in slides]
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
    return Separability(fitted, held, int(y_all.sum()), int(len(y_all) - y_all.sum()))
