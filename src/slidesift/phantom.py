"""Synthetic H&E-like images with exact tumor masks.

A first, small generator: irregular tissue on near-white glass, pink stroma with purple nuclei,
and tumor regions whose nuclei are denser, larger and darker. It backs the built-in demo, the
benchmarks and the test fixtures; the full phantom cohorts (pyramidal slides, two regimes,
subtypes, artifacts, manifests) build on it.
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

    # Stroma: pink with fibrous mid-frequency texture.
    fibre = _field(rng, shape, 6 * nucleus_px)
    stroma = np.empty((h, w, 3), dtype=np.float32)
    stroma[..., 0] = 228 - 25 * fibre
    stroma[..., 1] = 150 - 45 * fibre
    stroma[..., 2] = 190 - 25 * fibre

    # Nuclei: thresholded blurred noise; tumor nuclei denser, larger, darker.
    noise = rng.random((h, w), dtype=np.float32)
    fine = cv2.GaussianBlur(noise, (0, 0), nucleus_px / 2.5)
    coarse = cv2.GaussianBlur(noise, (0, 0), nucleus_px / 1.6)
    fine = (fine - fine.mean()) / (fine.std() + 1e-6)
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-6)
    nuclei = np.where(tumor, coarse > 0.9, fine > 1.6)
    darkness = np.where(tumor, 1.0, 0.8)[..., None]
    purple = np.array([95, 55, 140], dtype=np.float32)
    img = np.where(nuclei[..., None], stroma * (1 - darkness) + purple * darkness, stroma)

    glass = np.float32(243) + rng.normal(0, 2.0, (h, w, 1)).astype(np.float32)
    edge = cv2.GaussianBlur(tissue.astype(np.float32), (0, 0), 2.0)[..., None]
    img = img * edge + glass * (1 - edge)
    img += rng.normal(0, 4.0, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), tumor
