"""The value types of a phantom slide's layout: what is where, as data and no planning.

A :class:`SlideLayout` is pure geometry in level-0 px plus a few numbers: tissue pieces, holes,
tumor polygons (:class:`~slidesift.io.polygons.Polygon`), the slide's :class:`Stain` and its
:class:`Artifacts` (with their :class:`PenStroke`). Tumor is a set of polygons, so the ground
truth is exact: the same polygons paint the tumor texture, the TIFF mask, the ASAP XML and the
GeoJSON. The names of the regimes, subtypes and artifacts and the region codes that the
renderer switches on live here too.

:func:`slidesift.phantom.plan.plan_slide` draws a layout from a seed;
:mod:`slidesift.phantom.render` turns it into pixels. This module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from slidesift.io.polygons import Polygon, rasterize

__all__ = [
    "ARTIFACTS",
    "BLACK",
    "FAT",
    "FIBROUS",
    "GLASS",
    "ORGAN",
    "REGIMES",
    "SUBTYPES",
    "TUMOR",
    "Artifacts",
    "PenStroke",
    "SlideLayout",
    "Stain",
]

Regime = Literal["paip", "camelyon"]
REGIMES: tuple[str, ...] = ("paip", "camelyon")
#: Tumor morphologies: ``glandular`` (irregular, crowded glands; MSS/MSI-L-like) and ``solid``
#: (sheets of large vesicular cells with lymphocytes and mucin; MSI-H-like).
SUBTYPES: tuple[str, ...] = ("glandular", "solid")
#: Optional artifacts, each drawn per slide with some probability.
ARTIFACTS: tuple[str, ...] = ("stripes", "pen", "fold", "blur", "edge")

#: Tissue region codes painted by the layout (the renderer's texture switch).
GLASS, ORGAN, TUMOR, FIBROUS, FAT, BLACK = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Stain:
    """Per-slide staining: Beer-Lambert optical densities and glass brightness.

    Attributes
    ----------
    h_od, e_od
        ``(3,)`` optical density of one unit of haematoxylin / eosin per RGB channel.
    h_scale, e_scale
        Multipliers of the stain amounts (section thickness, staining time).
    glass
        ``(3,)`` RGB of bare glass (the light reaching the sensor).
    """

    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    h_scale: float
    e_scale: float
    glass: tuple[float, float, float]


@dataclass(frozen=True)
class PenStroke:
    """A pen mark: a polyline in level-0 px, its width and ink (0 green, 1 blue, 2 black)."""

    points: NDArray[np.float64]
    width: float
    ink: int


@dataclass(frozen=True)
class Artifacts:
    """Artifacts present on a slide (empty tuples / zero when absent).

    Attributes
    ----------
    stripe_period, stripe_amplitude
        Scanner stripes: columns in bands ``stripe_period`` level-0 px wide, each a little
        brighter or darker (``amplitude`` as a fraction of the light).
    pens
        Pen strokes.
    folds
        Tissue folds (two layers of tissue: stain doubles).
    blurs
        Out-of-focus patches.
    edges
        Black scanner edges.
    """

    stripe_period: int = 0
    stripe_amplitude: float = 0.0
    pens: tuple[PenStroke, ...] = ()
    folds: tuple[Polygon, ...] = ()
    blurs: tuple[Polygon, ...] = ()
    edges: tuple[Polygon, ...] = ()

    def names(self) -> list[str]:
        """The artifacts present, by name (see :data:`ARTIFACTS`)."""
        present = {
            "stripes": self.stripe_period > 0,
            "pen": bool(self.pens),
            "fold": bool(self.folds),
            "blur": bool(self.blurs),
            "edge": bool(self.edges),
        }
        return [name for name in ARTIFACTS if present[name]]


@dataclass(frozen=True)
class SlideLayout:
    """Everything that is where on one phantom slide, in level-0 px.

    Attributes
    ----------
    shape
        ``(H, W)`` of level 0.
    mpp
        Microns per level-0 px.
    regime
        ``paip`` or ``camelyon``.
    subtype
        Tumor morphology (:data:`SUBTYPES`), or ``None`` on a tumor-free slide.
    difficulty
        0 (tumor texture far from normal) to 1 (indistinguishable).
    seed
        Seed of the textures.
    tissue
        Tissue polygons painted in order; ``label`` is the region code (organ, fibrous, fat).
    holes
        Tears and lumina cut out of the tissue (glass).
    tumors
        Tumor polygons (label 1; name ``_0`` for lesions, ``_1`` for isolated cell clusters);
        holes in their rings are exclusions (glass inside tumor).
    stain
        The slide's staining.
    artifacts
        The slide's artifacts.
    """

    shape: tuple[int, int]
    mpp: float
    regime: str
    subtype: str | None
    difficulty: float
    seed: int
    tissue: tuple[Polygon, ...]
    holes: tuple[Polygon, ...]
    tumors: tuple[Polygon, ...]
    stain: Stain
    artifacts: Artifacts = field(default_factory=Artifacts)

    def truth(self, size: tuple[int, int], scale: tuple[float, float]) -> NDArray[np.bool_]:
        """The exact tumor mask on a grid of ``size = (W, H)`` px, ``scale`` level-0 px each.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` bool; a pixel is tumor when its centre lies in a tumor polygon.
        """
        return rasterize(self.tumors, size, scale) > 0

    def regions(
        self, size: tuple[int, int], scale: tuple[float, float], origin: tuple[int, int] = (0, 0)
    ) -> NDArray[np.uint8]:
        """Region codes (glass, organ, tumor, fibrous, fat, black edge) on a grid window.

        Parameters
        ----------
        size
            ``(W, H)`` of the window in grid px.
        scale
            Level-0 px per grid px.
        origin
            ``(x, y)`` grid px of the window's top-left.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` uint8 region codes.
        """
        codes = rasterize(self.tissue, size, scale, origin=origin)
        if self.holes:
            codes[rasterize(self.holes, size, scale, origin=origin) > 0] = GLASS
        if self.tumors:
            codes[rasterize(self.tumors, size, scale, origin=origin) > 0] = TUMOR
        if self.artifacts.edges:
            codes[rasterize(self.artifacts.edges, size, scale, origin=origin) > 0] = BLACK
        return codes

    @property
    def has_tumor(self) -> bool:
        """Whether any tumor is on the slide."""
        return bool(self.tumors)
