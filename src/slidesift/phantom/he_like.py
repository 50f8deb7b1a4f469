"""Small H&E-like images with exact tumor masks, in memory: the phantom's quick generator.

Irregular tissue on near-white glass, pink stroma with purple nuclei, and tumor regions whose
nuclei are denser, larger and darker: one RGB array at thumbnail scale, no slide file. It backs
the benchmarks and the test fixtures. The phantom cohorts proper (pyramidal slides, two
regimes, subtypes, artifacts, manifests) are planned in :mod:`slidesift.phantom.plan` and
rendered in :mod:`slidesift.phantom.render`; they do not use this module.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["he_like_image"]


def _field(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> NDArray[np.float32]:
    """Smooth random field in ``[0, 1]`` with features about ``cell`` px across."""
    h, w = shape
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = rng.random((gh, gw), dtype=np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(big.min()), float(big.max())
    return np.asarray((big - lo) / max(hi - lo, 1e-6), dtype=np.float32)


def he_like_image(
    shape: tuple[int, int],
    *,
    seed: int = 0,
    tissue_fraction: float = 0.55,
    tumor_fraction: float = 0.3,
    nucleus_px: float = 3.0,
    smooth_fraction: float = 0.35,
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """An H&E-like RGB image at thumbnail scale and its tumor mask.

    Parameters
    ----------
    shape
        ``(H, W)`` in px.
    seed
        Random seed; the same seed gives the same image.
    tissue_fraction
        Approximate fraction of the image covered by tissue.
    tumor_fraction
        Approximate fraction of the tissue that is tumor.
    nucleus_px
        Typical nucleus diameter in px.
    smooth_fraction
        Approximate fraction of the non-tumor tissue that is homogeneous (oedema, mucin-like):
        few nuclei, little texture, so low entropy.

    Returns
    -------
    pixels
        ``(H, W, 3)`` uint8 RGB.
    tumor
        ``(H, W)`` bool, True where tumor was painted.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    scale = max(h, w)
    tissue_f = _field(rng, shape, scale / 5)
    tissue = tissue_f > np.quantile(
        tissue_f[:: max(1, h // 256), :: max(1, w // 256)], 1 - tissue_fraction
    )
    tumor_f = _field(rng, shape, scale / 9)
    cut = (
        np.quantile(tumor_f[tissue][:: max(1, tissue.sum() // 65536)], 1 - tumor_fraction)
        if tissue.any()
        else 1
    )
    tumor = tissue & (tumor_f > cut)
    smooth_f = _field(rng, shape, scale / 7)
    normal = tissue & ~tumor
    inside = smooth_f[normal][:: max(1, int(normal.sum()) // 65536)]
    smooth_cut = np.quantile(inside, 1 - smooth_fraction) if inside.size else 1.0
    smooth = normal & (smooth_f > smooth_cut)

    # Stroma: pink with fibrous mid-frequency texture; glass near white.
    fibre = _field(rng, shape, 6 * nucleus_px)

    # Nuclei: thresholded blurred noise; tumor nuclei denser, larger, darker.
    noise = rng.random((h, w), dtype=np.float32)
    small = cv2.GaussianBlur(noise, (0, 0), nucleus_px / 2.5)
    large = cv2.GaussianBlur(noise, (0, 0), nucleus_px / 1.6)
    normal_nuclei = (small > np.quantile(small[::7, ::7], 0.94)) & ~smooth
    tumor_nuclei = large > np.quantile(large[::7, ::7], 0.80)
    nuclei = np.where(tumor, tumor_nuclei, normal_nuclei)

    # Per class (glass, stroma, nucleus, tumor nucleus, smooth tissue):
    # colour = base + slope * fibre + amplitude * jitter.
    base = np.array(
        [[243, 243, 243], [228, 150, 190], [120, 75, 155], [95, 55, 140], [236, 178, 206]],
        np.float32,
    )
    slope = np.array([[0, 0, 0], [-25, -45, -25], [-10, -10, -10], [0, 0, 0], [-2, -3, -2]])
    amplitude = np.array([1.0, 1.0, 1.0, 1.0, 0.1], np.float32)
    cls = tissue.astype(np.uint8) + (nuclei & tissue).astype(np.uint8)
    cls += (nuclei & tumor).astype(np.uint8)
    cls[smooth] = 4
    img = np.empty((h, w, 3), dtype=np.uint8)
    jitter = rng.integers(-6, 7, size=(h, w), dtype=np.int8).astype(np.float32) * amplitude[cls]
    for c in range(3):
        channel = base[cls, c] + slope[cls, c].astype(np.float32) * fibre + jitter
        img[..., c] = np.clip(channel, 0, 255)
    return img, tumor
