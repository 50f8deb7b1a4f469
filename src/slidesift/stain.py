"""Stain normalisation of thumbnails before tiling: Reinhard, Macenko and Vahadane.

Reinhard and Macenko are the published algorithms as the field's reference code runs them
(torchstain's numpy backend, after Macenko's and Reinhard's papers; ``tests/test_stain.py``
checks Macenko against torchstain pixel for pixel). Vahadane (the paper's choice) learns the
stain vectors by sparse non-negative factorisation and renders like Macenko. They are
re-implemented here for two reasons: a 6000-px thumbnail
holds 27 M pixels, and the reference code works on all of them at once in float64 (several
GiB), while :meth:`apply` works in bands of rows and fits on an even subsample; and a fitted
normaliser must travel inside a checkpoint as a few numbers (:meth:`to_dict`), so that a slide
segmented later is normalised exactly as the training slides were.

After normalisation the glass is no longer a fixed near-white grey, so the fixed grey limits of
the background test may not hold: use the peak-frequency criterion
(``SiftSpec(background="peak-frequency")``), see :func:`background_hint`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, OutOfDomainWarning, StainError
from slidesift.io.thumb import Thumb
from slidesift.sift import SiftSpec, to_gray

__all__ = [
    "MacenkoNormalizer",
    "ReinhardNormalizer",
    "StainNormalizer",
    "VahadaneNormalizer",
    "background_hint",
    "fit_normalizer",
    "key_of",
    "normalized_pixels",
    "normalizer_from_dict",
]

Method = Literal["reinhard", "macenko", "vahadane"]
#: Rows of a thumbnail normalised at once.
_BAND = 256
#: Pixels a fit looks at, at most (an even subsample beyond this).
_FIT_PIXELS = 1_000_000


class StainNormalizer(Protocol):
    """What training and segmentation need from a normaliser."""

    @property
    def method(self) -> str:
        """``reinhard`` or ``macenko``."""
        ...

    def apply(self, pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """``(H, W, 3)`` uint8 RGB -> normalised ``(H, W, 3)`` uint8 RGB."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain values that :func:`normalizer_from_dict` turns back into this normaliser."""
        ...


def _subsample(images: Sequence[NDArray[np.uint8]], limit: int) -> NDArray[np.uint8]:
    """Up to ``limit`` RGB pixels taken evenly from all images, ``(n, 3)`` uint8."""
    total = sum(int(np.prod(im.shape[:2])) for im in images)
    step = max(1, -(-total // limit))
    return np.concatenate([np.asarray(im).reshape(-1, 3)[::step] for im in images])


def _bands(pixels: NDArray[np.uint8], fn: Any) -> NDArray[np.uint8]:
    out = np.empty(pixels.shape, np.uint8)
    for y in range(0, pixels.shape[0], _BAND):
        out[y : y + _BAND] = fn(np.asarray(pixels[y : y + _BAND]))
    return out


def key_of(normalizer: StainNormalizer) -> str:
    """A short stable hash of a normaliser's parameters (cache keys)."""
    text = json.dumps(normalizer.to_dict(), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# --- Reinhard ----------------------------------------------------------------------------------


def _lab(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``(..., 3)`` uint8 RGB -> float32 CIELAB (L in [0, 100]) via OpenCV."""
    flat = np.ascontiguousarray(rgb.reshape(-1, 1, 3), dtype=np.float32) / np.float32(255)
    lab: NDArray[np.float32] = np.asarray(cv2.cvtColor(flat, cv2.COLOR_RGB2LAB), np.float32)
    return lab.reshape(rgb.shape)


def _tissue(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Pixels neither near-white nor near-black (the paper's grey limits), ``(n, 3)``."""
    flat = np.ascontiguousarray(rgb.reshape(-1, 3))
    gray = to_gray(flat.reshape(-1, 1, 3)).ravel()  # the sift's own grey values
    return flat[(gray >= 15) & (gray <= 235)]


@dataclass(frozen=True)
class ReinhardNormalizer:
    """Reinhard et al. (2001): match each CIELAB channel's mean and standard deviation.

    Statistics are taken over tissue pixels (grey value 15-235), so glass does not dilute
    them; the transform is applied to every pixel.

    Attributes
    ----------
    mean, std
        Target ``(L, a, b)`` statistics.
    """

    mean: tuple[float, float, float] = (70.0, 20.0, -10.0)
    std: tuple[float, float, float] = (15.0, 10.0, 8.0)
    method: str = field(default="reinhard", init=False)

    @staticmethod
    def stats(
        images: Sequence[NDArray[np.uint8]],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and std of the tissue pixels of ``images`` in CIELAB, each ``(3,)``."""
        tissue = _tissue(_subsample(images, _FIT_PIXELS))
        if tissue.shape[0] < 16:
            raise StainError("stain normalisation: the image has no tissue pixels to fit on")
        lab = _lab(tissue).astype(np.float64)
        return lab.mean(axis=0), np.maximum(lab.std(axis=0), 1e-6)

    @classmethod
    def fit(cls, images: Sequence[NDArray[np.uint8]]) -> ReinhardNormalizer:
        """Target statistics pooled over the tissue of ``images`` (e.g. the training slides)."""
        mean, std = cls.stats(images)
        return cls(tuple(map(float, mean)), tuple(map(float, std)))  # type: ignore[arg-type]

    def apply(self, pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Normalise ``(H, W, 3)`` uint8 RGB; returns a new array of the same shape."""
        src_mean, src_std = self.stats([pixels])
        gain = (np.asarray(self.std) / src_std).astype(np.float32)
        shift = (np.asarray(self.mean) - src_mean * gain).astype(np.float32)

        def band(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
            lab = _lab(rgb) * gain + shift
            out = cv2.cvtColor(lab.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_LAB2RGB)
            return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8).reshape(rgb.shape)

        return _bands(pixels, band)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoint metadata."""
        return {"method": "reinhard", "mean": list(self.mean), "std": list(self.std)}


# --- Macenko -----------------------------------------------------------------------------------

#: The reference H&E stain vectors (columns) and 99th-percentile concentrations of Macenko's
#: code, as torchstain and HEnorm_python ship them.
MACENKO_REFERENCE_HE = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
MACENKO_REFERENCE_MAX_C = (1.9705, 1.0308)


_M = TypeVar("_M", bound="MacenkoNormalizer")


@dataclass(frozen=True)
class MacenkoNormalizer:
    """Macenko et al. (2009): estimate each slide's H and E vectors in optical density, then
    re-render its stain concentrations with the target's vectors.

    Attributes
    ----------
    he
        Target stain vectors, ``3 x 2`` (rows R, G, B; columns haematoxylin, eosin).
    max_c
        Target 99th-percentile concentrations of H and E.
    io
        Transmitted light intensity.
    alpha
        Percentile of the extreme angles that define the stain vectors.
    beta
        Optical density below which a pixel counts as transparent.
    """

    he: tuple[tuple[float, float], ...] = MACENKO_REFERENCE_HE
    max_c: tuple[float, float] = MACENKO_REFERENCE_MAX_C
    io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    method: str = field(default="macenko", init=False)

    def optical_density(
        self, pixels: NDArray[np.uint8] | Sequence[NDArray[np.uint8]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Optical density of an (even subsample of the) image's pixels ``(n, 3)``, and of its
        stained pixels (every channel at least ``beta``) ``(m, 3)``."""
        images = [pixels] if isinstance(pixels, np.ndarray) else list(pixels)
        rgb = _subsample(images, _FIT_PIXELS)
        od = -np.log((rgb.astype(np.float64) + 1.0) / self.io)
        od_hat = od[~np.any(od < self.beta, axis=1)]
        if od_hat.shape[0] < 16:
            raise StainError(
                "stain normalisation: fewer than 16 stained pixels, nothing to estimate "
                "stain vectors from (is the image blank?)"
            )
        return od, od_hat

    def macenko_vectors(self, od_hat: NDArray[np.float64]) -> NDArray[np.float64]:
        """Macenko's H and E vectors ``(3, 2)`` from stained pixels' optical density."""
        _, eigvecs = np.linalg.eigh(np.cov(od_hat.T))
        plane = eigvecs[:, 1:3]
        proj = od_hat @ plane
        phi = np.arctan2(proj[:, 1], proj[:, 0])
        lo, hi = np.percentile(phi, self.alpha), np.percentile(phi, 100 - self.alpha)
        v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
        v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
        he: NDArray[np.float64] = np.stack(
            [v_min, v_max] if v_min[0] > v_max[0] else [v_max, v_min], axis=1
        )
        return he

    def stains(
        self, pixels: NDArray[np.uint8] | Sequence[NDArray[np.uint8]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """An image's stain vectors ``(3, 2)`` and 99th-percentile concentrations ``(2,)``."""
        od, od_hat = self.optical_density(pixels)
        he = self.macenko_vectors(od_hat)
        conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
        return he, np.percentile(conc, 99, axis=1)

    @classmethod
    def fit(cls: type[_M], images: Sequence[NDArray[np.uint8]], **options: float) -> _M:
        """Target vectors and concentrations from ``images`` (pooled; Vahadane inherits it)."""
        probe = cls(**options)  # type: ignore[arg-type]
        he, max_c = probe.stains(images)
        return cls(
            he=tuple((float(a), float(b)) for a, b in he),
            max_c=(float(max_c[0]), float(max_c[1])),
            **options,
        )

    def apply(self, pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Normalise ``(H, W, 3)`` uint8 RGB; returns a new array of the same shape."""
        he, max_c = self.stains(pixels)
        unmix = np.linalg.pinv(he)
        ratio = (max_c / np.asarray(self.max_c))[:, None]
        target = np.asarray(self.he)

        def band(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
            od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / self.io)
            conc = (unmix @ od.T) / ratio
            out = np.minimum(self.io * np.exp(-target @ conc), 255.0)
            result: NDArray[np.uint8] = out.T.astype(np.uint8).reshape(rgb.shape)
            return result

        return _bands(pixels, band)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoint metadata."""
        return {
            "method": "macenko",
            "he": [list(r) for r in self.he],
            "max_c": list(self.max_c),
            "io": self.io,
            "alpha": self.alpha,
            "beta": self.beta,
        }


# --- Vahadane ----------------------------------------------------------------------------------

#: Tissue pixels a Vahadane fit learns its stain vectors from, at most (an even subsample).
_VAHADANE_PIXELS = 20_000


def _nonneg_lasso_2(
    od: NDArray[np.float64], w: NDArray[np.float64], lam: float
) -> NDArray[np.float64]:
    """Exact ``argmin_c>=0 |od - c w|^2 / 2 + lam * sum(c)`` for two stains, per pixel.

    ``od`` ``(n, 3)``, ``w`` ``(2, 3)`` -> ``c`` ``(n, 2)``. With two unknowns the active set
    is one of four: both stains, either alone, or none; each is solved in closed form and the
    feasible one with the least objective wins.
    """
    gram = w @ w.T
    rhs = od @ w.T - lam
    cands = [np.zeros((od.shape[0], 2))]
    for i in (0, 1):
        c = np.zeros((od.shape[0], 2))
        c[:, i] = np.maximum(rhs[:, i] / gram[i, i], 0.0)
        cands.append(c)
    both = np.linalg.solve(gram + 1e-12 * np.eye(2), rhs.T).T
    cands.append(np.where((both >= 0).all(axis=1, keepdims=True), both, 0.0))

    def objective(c: NDArray[np.float64]) -> NDArray[np.float64]:
        r = od - c @ w
        return np.asarray(0.5 * (r * r).sum(axis=1) + lam * c.sum(axis=1))

    losses = np.stack([objective(c) for c in cands], axis=1)
    best = losses.argmin(axis=1)
    chosen: NDArray[np.float64] = np.stack(cands, axis=0)[best, np.arange(od.shape[0])]
    return chosen


@dataclass(frozen=True)
class VahadaneNormalizer(MacenkoNormalizer):
    """Vahadane et al. (2016), "Structure-preserving color normalization and sparse stain
    separation for histological images" (the stain normalisation the paper names).

    The stain vectors are learned by sparse non-negative matrix factorisation of the tissue's
    optical density, ``OD ~ C W`` with ``C, W >= 0`` and an L1 penalty ``lambda1`` on the
    concentrations ``C`` (the paper's 0.1), by alternating exact two-stain non-negative lasso
    steps for ``C`` and Mairal et al.'s projected block-coordinate steps for ``W`` (unit-norm
    atoms), starting from Macenko's vectors. Like
    TIAToolbox's ``VahadaneExtractor``, only the vectors come from the sparse model; the
    concentrations are then unmixed and re-rendered exactly as :class:`MacenkoNormalizer`
    does (99th-percentile matching, the target's vectors).

    Attributes
    ----------
    he, max_c, io, beta
        As :class:`MacenkoNormalizer` (``alpha`` seeds the initial Macenko estimate).
    lambda1
        Sparsity weight of the concentrations.
    iterations
        Alternating steps of the factorisation.
    """

    lambda1: float = 0.1
    iterations: int = 60
    method: str = field(default="vahadane", init=False)

    def stains(
        self, pixels: NDArray[np.uint8] | Sequence[NDArray[np.uint8]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """An image's stain vectors ``(3, 2)`` and 99th-percentile concentrations ``(2,)``."""
        od, od_hat = self.optical_density(pixels)
        init = self.macenko_vectors(od_hat)
        od_fit = od_hat[:: max(1, od_hat.shape[0] // _VAHADANE_PIXELS)]
        w = np.maximum(init.T, 1e-6)  # (2, 3): rows haematoxylin, eosin
        for _ in range(self.iterations):
            c = _nonneg_lasso_2(od_fit, w, self.lambda1)
            used = c.sum(axis=0) > 0
            if not used.all():  # a stain lost every pixel: keep its previous vector
                break
            # Mairal et al.'s block-coordinate dictionary step with ``W >= 0``, ``|w_j| <= 1``.
            a, b = c.T @ c, c.T @ od_fit
            for j in (0, 1):
                u = w[j] + (b[j] - a[j] @ w) / a[j, j]
                u = np.maximum(u, 0.0)
                w[j] = u / max(float(np.linalg.norm(u)), 1.0)
        w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        if w[0, 0] < w[1, 0]:  # haematoxylin absorbs more red than eosin
            w = w[::-1]
        he = w.T.copy()
        conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
        return he, np.percentile(conc, 99, axis=1)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoint metadata."""
        return dict(
            super().to_dict(), method="vahadane", lambda1=self.lambda1, iterations=self.iterations
        )


def normalizer_from_dict(data: dict[str, Any] | None) -> StainNormalizer | None:
    """Rebuild a normaliser from :meth:`to_dict` output (``None`` stays ``None``)."""
    if data is None:
        return None
    try:
        method = data["method"]
        if method == "reinhard":
            return ReinhardNormalizer(tuple(data["mean"]), tuple(data["std"]))
        if method in ("macenko", "vahadane"):
            common = {
                "he": tuple((float(a), float(b)) for a, b in data["he"]),
                "max_c": (float(data["max_c"][0]), float(data["max_c"][1])),
                "io": float(data["io"]),
                "alpha": float(data["alpha"]),
                "beta": float(data["beta"]),
            }
            if method == "macenko":
                return MacenkoNormalizer(**common)  # type: ignore[arg-type]
            return VahadaneNormalizer(
                **common,  # type: ignore[arg-type]
                lambda1=float(data["lambda1"]),
                iterations=int(data["iterations"]),
            )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError("normalisation", data, "a dict written by a normaliser") from exc
    raise ConfigError("normalisation", data.get("method"), "'reinhard', 'macenko' or 'vahadane'")


def fit_normalizer(
    method: Method, images: Sequence[NDArray[np.uint8]], *, reference: bool = False
) -> StainNormalizer:
    """A normaliser whose target is fitted on ``images`` (or Macenko's reference vectors).

    Parameters
    ----------
    method
        ``reinhard`` or ``macenko``.
    images
        ``(H, W, 3)`` uint8 RGB images that define the target (the training thumbnails, or
        one reference image).
    reference
        Macenko only: keep the published reference vectors instead of fitting.
    """
    if method == "reinhard":
        return ReinhardNormalizer.fit(images)
    if method == "macenko":
        return MacenkoNormalizer() if reference else MacenkoNormalizer.fit(images)
    if method == "vahadane":
        return VahadaneNormalizer.fit(images)
    raise ConfigError("normalise", method, "'reinhard', 'macenko' or 'vahadane'")


def background_hint(spec: SiftSpec) -> str | None:
    """Advice when stain-normalised tiles are sifted with fixed grey limits, else ``None``."""
    if spec.background == "gray-limits":
        return (
            "stain normalisation moves the glass away from fixed grey values; consider the "
            "peak-frequency background test (--background peak-frequency), which counts a "
            "tile's most frequent values instead"
        )
    return None


def normalized_pixels(
    thumb: Thumb, normalizer: StainNormalizer | None, name: str = ""
) -> tuple[NDArray[np.uint8], str | None]:
    """A thumbnail's pixels under a model's stain normaliser, each pixel normalised once.

    Pixels that this normaliser already normalised (a thumbnail ``slidesift thumb --model``
    wrote records its key: :attr:`Thumb.normalized`) are returned as they are.

    Parameters
    ----------
    thumb
        The thumbnail, ``(H, W, 3)`` uint8 pixels.
    normalizer
        The model's normaliser, or ``None``.
    name
        The slide's name, for the warning.

    Returns
    -------
    (numpy.ndarray, str or None)
        ``(H, W, 3)`` uint8 pixels, and the key (:func:`slidesift.stain.key_of`) of the
        normaliser whose output they are, or ``None``.

    Warns
    -----
    OutOfDomainWarning
        The pixels were normalised for another model (they are normalised again, or, for a
        model without a normaliser, used as they are).
    """
    key = None if normalizer is None else key_of(normalizer)
    if thumb.normalized is not None and thumb.normalized == key:
        return np.asarray(thumb.pixels), key
    if thumb.normalized is not None:
        warnings.warn(
            f"{name or thumb.source}: its pixels were stain-normalised for another model "
            f"(normaliser {thumb.normalized}); "
            + ("this model's normaliser is applied on top" if key else "this model has none")
            + ": make the thumbnail again with `slidesift thumb --model` for this model",
            OutOfDomainWarning,
            stacklevel=2,
        )
    if normalizer is None:
        return np.asarray(thumb.pixels), thumb.normalized
    return normalizer.apply(np.asarray(thumb.pixels)), key
