"""Training-time tile augmentations beyond the paper's flips: 90-degree rotations, HED stain
jitter and scale jitter.

The paper trains with random flips only (METHOD.md section 4). Peers (TIAToolbox, slideflow,
MONAI's pathology recipes) add rotations and colour augmentation as a matter of course, and a
model that must hold up on another centre's stain needs the colour one most: Tellez et al.,
"Quantifying the effects of data augmentation and stain color normalization in convolutional
neural networks for computational pathology", Medical Image Analysis 58 (2019), found HED
jitter the single most useful augmentation across centres. ``docs/results.md`` measures each
option here on phantoms and on real CAMELYON16 pixels.

Every augmentation is a function of the tile and a seed, so a resumed run redraws exactly the
same tiles (the seeds come from the epoch's plan, :func:`slidesift.train_data.epoch_plan`).

HED jitter, as Tellez et al.: unmix the tile's optical density ``OD = -ln((RGB + 1) / 256)``
into haematoxylin, eosin and DAB with Ruifrok and Johnston's stain matrix, perturb each stain
as ``s' = a * s + b`` with ``a ~ U(1 - sigma, 1 + sigma)`` and ``b ~ U(-sigma, sigma)`` (``b``
in optical density), and mix back. Glass (``OD ~ 0``) stays glass up to the shift ``b``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError

__all__ = ["AugmentSpec", "augment_tile", "hed_jitter", "scale_jitter"]

#: Ruifrok and Johnston's stain vectors (rows: haematoxylin, eosin, DAB; columns: R, G, B
#: optical density), as scikit-image's ``rgb_from_hed``.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


@dataclass(frozen=True)
class AugmentSpec:
    """Which augmentations training applies (all off: the paper's recipe).

    Attributes
    ----------
    rotations
        Rotate each tile by a random multiple of 90 degrees.
    hed
        Strength ``sigma`` of HED stain jitter (Tellez et al.: 0.05 light, 0.2 strong); 0 off.
    scale
        Relative zoom range: each tile is resampled at a zoom drawn log-uniformly in
        ``[1 / (1 + scale), 1 + scale]`` about a random centre (0.1 = +-10%); 0 off.
    """

    rotations: bool = False
    hed: float = 0.0
    scale: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.hed <= 1:
            raise ConfigError("hed", self.hed, "a jitter strength in [0, 1], e.g. 0.05")
        if not 0 <= self.scale < 1:
            raise ConfigError("scale", self.scale, "a zoom range in [0, 1), e.g. 0.1")

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return self.rotations or self.hed > 0 or self.scale > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AugmentSpec:
        """Inverse of :meth:`to_dict` (``None``: nothing on)."""
        if data is None:
            return cls()
        try:
            return cls(bool(data["rotations"]), float(data["hed"]), float(data["scale"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("augment", data, "a dict written by AugmentSpec.to_dict") from exc

    def describe(self) -> str:
        """Short text, e.g. ``rot90 + HED 0.05 + scale 0.1`` (``none`` when off)."""
        parts = (
            (["rot90"] if self.rotations else [])
            + ([f"HED {self.hed:g}"] if self.hed else [])
            + ([f"scale {self.scale:g}"] if self.scale else [])
        )
        return " + ".join(parts) or "none"


def hed_jitter(
    tile: NDArray[np.uint8], sigma: float, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Perturb a tile's haematoxylin, eosin and DAB amounts (see the module docs).

    Parameters
    ----------
    tile
        ``(T, T, 3)`` uint8 RGB.
    sigma
        Jitter strength.
    rng
        Draws ``a`` (3,) and ``b`` (3,).

    Returns
    -------
    ``(T, T, 3)`` uint8 RGB.
    """
    a = rng.uniform(1 - sigma, 1 + sigma, 3)
    b = rng.uniform(-sigma, sigma, 3)
    od = -np.log((tile.reshape(-1, 3).astype(np.float64) + 1.0) / 256.0)
    stains = od @ HED_FROM_RGB
    od_new = (stains * a + b) @ RGB_FROM_HED
    rgb = np.clip(256.0 * np.exp(-od_new) - 1.0, 0, 255)
    out: NDArray[np.uint8] = np.rint(rgb).astype(np.uint8).reshape(tile.shape)
    return out


def scale_jitter(
    tile: NDArray[np.uint8], scale: float, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Resample a tile at a random zoom about a random centre (see :class:`AugmentSpec`).

    Zooming in crops a smaller square and enlarges it; zooming out takes a larger square,
    mirrored at the tile's edges, and shrinks it. The result has the tile's shape.
    """
    t = tile.shape[0]
    zoom = float(np.exp(rng.uniform(-np.log1p(scale), np.log1p(scale))))
    side = max(2, round(t / zoom))
    if side == t:
        return tile
    crop: NDArray[np.uint8]
    if side < t:
        y, x = (int(v) for v in rng.integers(0, t - side + 1, 2))
        crop = tile[y : y + side, x : x + side]
    else:
        pad = side - t
        before = int(rng.integers(0, pad + 1))
        crop = cv2.copyMakeBorder(  # type: ignore[assignment]
            np.ascontiguousarray(tile), before, pad - before, before, pad - before,
            cv2.BORDER_REFLECT_101,
        )  # fmt: skip
    out = cv2.resize(np.ascontiguousarray(crop), (t, t), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out, np.uint8)


def augment_tile(tile: NDArray[np.uint8], spec: AugmentSpec, seed: int) -> NDArray[np.uint8]:
    """Apply ``spec``'s augmentations to a ``(T, T, 3)`` uint8 tile, drawn from ``seed``.

    Order: rotation, scale, HED. The same tile and seed always give the same result.
    """
    if not spec.active:
        return tile
    rng = np.random.default_rng(seed)
    if spec.rotations:
        tile = np.rot90(tile, int(rng.integers(4)))
    if spec.scale > 0:
        tile = scale_jitter(tile, spec.scale, rng)
    if spec.hed > 0:
        tile = hed_jitter(tile, spec.hed, rng)
    return np.ascontiguousarray(tile)
