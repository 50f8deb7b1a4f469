"""Planning a phantom slide: its layout drawn from a seed, and the geometry that draws it.

:func:`plan_slide` returns a :class:`~slidesift.phantom.slide_layout.SlideLayout`: it places
tissue pieces, holes, tumor and artifacts as polygons in level-0 px and picks the slide's
stain; the layout is then rendered block by block (:mod:`slidesift.phantom.render`). The shapes
are star-shaped outlines (an ellipse with lobes and a torn rim) tested against each other with
a few geometry helpers.

Regimes
-------
``paip``
    Colorectal resection: one to three large tissue pieces; one contiguous tumor covering
    10-50% of the tissue (plus satellite nodules); every slide carries tumor of its subtype.
``camelyon``
    Lymph node sections: nodes with a fibrous capsule inside perinodal fat; about half of the
    slides carry metastases: macro- and micro-metastases and archipelagos of isolated tumor
    cell clusters down to a few pixels at the thumbnail; the other half are tumor-free.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError
from slidesift.io.polygons import Polygon, rasterize
from slidesift.phantom.slide_layout import (
    ARTIFACTS,
    FAT,
    FIBROUS,
    ORGAN,
    REGIMES,
    SUBTYPES,
    Artifacts,
    PenStroke,
    SlideLayout,
    Stain,
)

__all__ = ["plan_slide"]

# Reference optical densities per RGB channel (Macenko et al. 2009), rows H then E.
_H_REF = np.array([0.5626, 0.7201, 0.4062])
_E_REF = np.array([0.2159, 0.8012, 0.5581])


# --------------------------------------------------------------------------------------------
# Shapes


def _star(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radii: tuple[float, float],
    *,
    angle: float | None = None,
    lobes: float = 0.2,
    tears: float = 0.0,
    n: int | None = None,
) -> NDArray[np.float64]:
    """A closed star-shaped outline: an ellipse with lobes and a torn (jagged) rim.

    Parameters
    ----------
    centre
        ``(x, y)`` level-0 px.
    radii
        ``(rx, ry)`` level-0 px.
    angle
        Rotation in radians; random when ``None``.
    lobes
        Amplitude of low-order bumps (fraction of the radius).
    tears
        Amplitude of the high-frequency jagged rim (fraction of the radius).
    n
        Vertex count; default about one vertex per 1/200 of the circumference, 24 to 1500.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float64 ``(l0_x, l0_y)``.
    """
    rx, ry = radii
    if n is None:
        n = int(np.clip(2 * math.pi * max(rx, ry) / 6, 24, 1500))
    theta = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 12):
        r += lobes * rng.normal() * k**-1.4 * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    if tears:  # correlated over a few vertices: ragged, not saw-toothed
        jag = rng.normal(size=n)
        kernel = np.hanning(15)
        kernel /= np.sqrt((kernel**2).sum())
        jag = np.convolve(np.concatenate([jag[-7:], jag, jag[:7]]), kernel, mode="valid")
        r += tears * jag * (rng.random(n) < 0.97)
    r = np.clip(r, 0.25, None)
    a = rng.uniform(0, 2 * math.pi) if angle is None else angle
    x, y = rx * r * np.cos(theta), ry * r * np.sin(theta)
    ca, sa = math.cos(a), math.sin(a)
    return np.stack([centre[0] + ca * x - sa * y, centre[1] + sa * x + ca * y], axis=1)


def _inside(ring: NDArray[np.float64], points: NDArray[np.float64], margin: float = 0.0) -> bool:
    """Whether every point lies inside ``ring`` at least ``margin`` px from its edge."""
    contour = ring.astype(np.float32).reshape(-1, 1, 2)
    return all(
        cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= margin for x, y in points
    )


def _outside(ring: NDArray[np.float64], points: NDArray[np.float64]) -> bool:
    """Whether no point lies inside or on ``ring``."""
    contour = ring.astype(np.float32).reshape(-1, 1, 2)
    return all(cv2.pointPolygonTest(contour, (float(x), float(y)), False) < 0 for x, y in points)


def _disjoint(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    """Whether two star-shaped rings neither overlap nor nest (tested on their vertices)."""
    return _outside(a, b) and _outside(b, a)


def _random_point_in(
    rng: np.random.Generator, ring: NDArray[np.float64], margin: float, tries: int = 200
) -> tuple[float, float] | None:
    """A uniform random point inside ``ring`` at least ``margin`` from its edge, or ``None``."""
    lo, hi = ring.min(axis=0), ring.max(axis=0)
    contour = ring.astype(np.float32).reshape(-1, 1, 2)
    for _ in range(tries):
        x, y = rng.uniform(lo, hi)
        if cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= margin:
            return float(x), float(y)
    return None


# --------------------------------------------------------------------------------------------
# Plans per regime


def _stain(rng: np.random.Generator) -> Stain:
    """Per-slide stain variation in hue (OD vectors) and intensity."""

    def jitter(ref: NDArray[np.float64]) -> tuple[float, float, float]:
        v = np.clip(ref + rng.normal(0, 0.05, 3), 0.05, None)
        v /= np.linalg.norm(v)
        return (float(v[0]), float(v[1]), float(v[2]))

    # bare glass is bright: its grey stays above the sift's 235 limit even in a dark stripe
    tint = rng.uniform(-2, 1, 3) + rng.uniform(-2, 2)
    glass = np.clip(246 + tint, 241, 252)
    return Stain(
        h_od=jitter(_H_REF),
        e_od=jitter(_E_REF),
        h_scale=float(rng.uniform(0.75, 1.25)),
        e_scale=float(rng.uniform(0.7, 1.3)),
        glass=(float(glass[0]), float(glass[1]), float(glass[2])),
    )


def _holes(
    rng: np.random.Generator, piece: NDArray[np.float64], count: int, size: float
) -> list[NDArray[np.float64]]:
    """Tears (long, thin) and round lumina inside a tissue piece."""
    out: list[NDArray[np.float64]] = []
    for _ in range(count):
        length = size * rng.uniform(0.3, 1.0)
        radii = (
            (length, length * rng.uniform(0.08, 0.2))
            if rng.random() < 0.6
            else (length * 0.3, length * rng.uniform(0.2, 0.3))
        )  # fmt: skip
        centre = _random_point_in(rng, piece, margin=2 * max(radii))
        if centre is None:
            continue
        hole = _star(rng, centre, radii, lobes=0.15, tears=0.04)
        if _inside(piece, hole, margin=1.0) and all(_disjoint(hole, h) for h in out):
            out.append(hole)
    return out


def _split_holes(
    holes: list[NDArray[np.float64]], tumors: list[NDArray[np.float64]]
) -> tuple[list[NDArray[np.float64]], list[list[NDArray[np.float64]]]]:
    """Keep holes wholly inside one tumor (they become its exclusions) or wholly outside all.

    Returns the kept holes and, per tumor, the holes that lie in it.
    """
    kept: list[NDArray[np.float64]] = []
    inner: list[list[NDArray[np.float64]]] = [[] for _ in tumors]
    for hole in holes:
        homes = [i for i, t in enumerate(tumors) if _inside(t, hole, margin=1.0)]
        if homes and all(_outside(hole, t) for t in tumors):
            inner[homes[0]].append(hole)
            kept.append(hole)
        elif all(_disjoint(hole, t) for t in tumors):
            kept.append(hole)
    return kept, inner


def _area_fraction(
    shape: tuple[int, int], part: list[Polygon], whole: list[Polygon], holes: list[Polygon]
) -> float:
    """Area of ``part`` over area of ``whole | part`` (minus holes), on a coarse grid."""
    h, w = shape
    f = max(h, w) / 512
    size = (max(1, round(w / f)), max(1, round(h / f)))
    scale = (w / size[0], h / size[1])
    cut = rasterize(holes, size, scale) > 0 if holes else np.zeros(size[::-1], bool)
    a = (rasterize(part, size, scale) > 0) & ~cut
    b = (rasterize(whole, size, scale) > 0) & ~cut
    return float(a.sum()) / max(1.0, float((a | b).sum()))


def _plan_paip(
    rng: np.random.Generator, shape: tuple[int, int], mpp: float, subtype: str | None
) -> tuple[list[Polygon], list[Polygon], list[Polygon]]:
    """Colorectal resection: big pieces, one contiguous tumor (10-50% of tissue)."""
    h, w = shape
    m = min(h, w)
    main = _star(
        rng, (w * rng.uniform(0.45, 0.55), h * rng.uniform(0.45, 0.55)),
        (w * rng.uniform(0.28, 0.38), h * rng.uniform(0.28, 0.38)),
        angle=rng.uniform(-0.3, 0.3), lobes=0.25, tears=0.006,
    )  # fmt: skip
    pieces = [main]
    for _ in range(int(rng.integers(0, 3))):
        r = m * rng.uniform(0.06, 0.12)
        c = (rng.uniform(r, w - r), rng.uniform(r, h - r))
        piece = _star(rng, c, (r, r * rng.uniform(0.5, 0.9)), lobes=0.3, tears=0.02)
        if all(_disjoint(piece, p) for p in pieces) and _inside(_frame(shape), piece):
            pieces.append(piece)
    holes = []
    for piece in pieces:
        size = float(np.ptp(piece, axis=0).max()) * 0.08
        holes += _holes(rng, piece, int(rng.integers(2, 7)), size)
    tumors: list[NDArray[np.float64]] = []
    if subtype is not None:
        target = rng.uniform(0.12, 0.45)
        centre = _random_point_in(rng, main, margin=0.25 * m) or (w / 2, h / 2)
        unit = _star(rng, (0.0, 0.0), (1.0, rng.uniform(0.6, 1.0)), lobes=0.3, tears=0.004, n=720)
        whole = [Polygon((p,), 1) for p in pieces]
        cut = [Polygon((p,), 1) for p in holes]
        radius = 0.3 * m
        for _ in range(6):  # scale the tumor until it covers the target fraction
            ring = unit * radius + np.array(centre)
            frac = _area_fraction(shape, [Polygon((ring,), 1)], whole, cut)
            radius *= math.sqrt(target / max(frac, 1e-3))
        ring = np.clip(unit * radius + np.array(centre), 0, [w - 1, h - 1])
        tumors.append(ring)
        for _ in range(int(rng.integers(0, 3))):  # satellite nodules
            r = radius * rng.uniform(0.08, 0.2)
            ang = rng.uniform(0, 2 * math.pi)
            c = (centre[0] + 1.3 * radius * math.cos(ang), centre[1] + 1.3 * radius * math.sin(ang))
            nodule = _star(rng, c, (r, r * rng.uniform(0.6, 1.0)), lobes=0.3)
            if _inside(main, nodule, margin=2.0) and all(_disjoint(nodule, t) for t in tumors):
                tumors.append(nodule)
    holes, inner = _split_holes(holes, tumors)
    tissue = [Polygon((p,), ORGAN) for p in pieces]
    tumor_polys = [Polygon((t, *hs), 1, "_0") for t, hs in zip(tumors, inner, strict=True)]
    return tissue, [Polygon((hole,), 1) for hole in holes], tumor_polys


def _frame(shape: tuple[int, int]) -> NDArray[np.float64]:
    h, w = shape
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)


def _plan_camelyon(
    rng: np.random.Generator, shape: tuple[int, int], mpp: float, subtype: str | None
) -> tuple[list[Polygon], list[Polygon], list[Polygon]]:
    """Lymph nodes in fat; metastases of all sizes when ``subtype`` is given."""
    h, w = shape
    m = min(h, w)
    nodes: list[NDArray[np.float64]] = []
    fats: list[NDArray[np.float64]] = []
    wanted_nodes = int(rng.integers(2, 5))
    for _ in range(60):
        if len(nodes) >= wanted_nodes:
            break
        r = m * rng.uniform(0.15, 0.26) if not nodes else m * rng.uniform(0.07, 0.17)
        c = (rng.uniform(1.3 * r, w - 1.3 * r), rng.uniform(1.3 * r, h - 1.3 * r))
        if not (0 < c[0] < w and 0 < c[1] < h):
            continue
        node = _star(rng, c, (r, r * rng.uniform(0.55, 0.9)), lobes=0.12, tears=0.004)
        fat = _star(
            rng, (c[0] + rng.normal(0, 0.15 * r), c[1] + rng.normal(0, 0.15 * r)),
            (1.45 * r, 1.45 * r * rng.uniform(0.7, 1.0)), lobes=0.35, tears=0.02,
        )  # fmt: skip
        if not _inside(_frame(shape), fat) or not _inside(fat, node, margin=2.0):
            continue
        if all(_disjoint(fat, f) for f in fats):
            nodes.append(node)
            fats.append(fat)
    capsule = 60.0 / mpp  # a fibrous capsule about 60 um thick
    cores = []
    for node in nodes:
        centre = node.mean(axis=0)
        d = np.linalg.norm(node - centre, axis=1, keepdims=True)
        cores.append(centre + (node - centre) * np.clip(1 - capsule / d, 0.2, None))
    holes = []
    for core in cores:
        holes += _holes(
            rng, core, int(rng.integers(0, 3)), float(np.ptp(core, axis=0).max()) * 0.06
        )
    tumors: list[tuple[NDArray[np.float64], str]] = []
    if subtype is not None:
        um = 1.0 / mpp
        wanted = [("macro", rng.uniform(700, 2000))] if rng.random() < 0.6 else []
        wanted += [("micro", rng.uniform(120, 600)) for _ in range(int(rng.integers(0, 3)))]
        wanted += [("itc", 0.0) for _ in range(int(rng.integers(0, 3)))]
        if not wanted:
            wanted = [("micro", rng.uniform(150, 500))]
        for kind, radius_um in wanted:
            core = cores[int(rng.integers(len(cores)))]
            if kind == "itc":  # an archipelago of tiny clusters within ~300 um
                spread = rng.uniform(150, 400) * um
                centre = _random_point_in(rng, core, margin=spread)
                if centre is None:
                    continue
                for _ in range(int(rng.integers(4, 25))):
                    r = rng.uniform(8, 35) * um
                    c = (
                        centre[0] + rng.normal(0, spread / 2),
                        centre[1] + rng.normal(0, spread / 2),
                    )
                    blob = _star(rng, c, (r, r * rng.uniform(0.5, 1.0)), lobes=0.25, n=16)
                    if _inside(core, blob, margin=1.0) and all(
                        _disjoint(blob, t) for t, _ in tumors
                    ):
                        tumors.append((blob, "_1"))
                continue
            r = radius_um * um
            centre = _random_point_in(rng, core, margin=1.25 * r)
            if centre is None:
                continue
            lesion = _star(rng, centre, (r, r * rng.uniform(0.6, 1.0)), lobes=0.3, tears=0.01)
            if _inside(core, lesion, margin=1.0) and all(_disjoint(lesion, t) for t, _ in tumors):
                tumors.append((lesion, "_0"))
        if not tumors:  # a positive slide keeps at least one micro-metastasis
            core = max(cores, key=lambda c: float(np.ptp(c, axis=0).min()))
            r = min(200 * um, 0.2 * float(np.ptp(core, axis=0).min()))
            centre = core.mean(axis=0)
            tumors.append((_star(rng, (centre[0], centre[1]), (r, 0.8 * r), lobes=0.1), "_0"))
    holes, inner = _split_holes(holes, [t for t, _ in tumors])
    tissue = [Polygon((f,), FAT) for f in fats]
    for node, core in zip(nodes, cores, strict=True):
        tissue += [Polygon((node,), FIBROUS), Polygon((core,), ORGAN)]
    tumor_polys = [
        Polygon((t, *hs), 1, group) for (t, group), hs in zip(tumors, inner, strict=True)
    ]
    return tissue, [Polygon((hole,), 1) for hole in holes], tumor_polys


def _artifacts(
    rng: np.random.Generator,
    shape: tuple[int, int],
    mpp: float,
    tissue: list[Polygon],
    wanted: frozenset[str],
) -> Artifacts:
    """Draw the wanted artifacts at plausible places."""
    h, w = shape
    m = min(h, w)
    organ = [p.rings[0] for p in tissue if p.label != FAT] or [_frame(shape)]
    stripe_period, stripe_amp = 0, 0.0
    pens: list[PenStroke] = []
    folds: list[Polygon] = []
    blurs: list[Polygon] = []
    edges: list[Polygon] = []
    if "stripes" in wanted:
        stripe_period = int(rng.choice([512, 1024, 2048]) * max(1.0, 0.25 / mpp))
        stripe_amp = float(rng.uniform(0.005, 0.015))
    if "pen" in wanted:
        for _ in range(int(rng.integers(1, 3))):
            start = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h])
            steps = rng.normal(0, 0.05 * m, size=(12, 2)).cumsum(axis=0)
            pts = np.clip(start + steps, 0, [w - 1, h - 1])
            pens.append(PenStroke(pts, float(rng.uniform(150, 400) / mpp), int(rng.integers(3))))
    if "fold" in wanted:
        piece = organ[int(rng.integers(len(organ)))]
        c = _random_point_in(rng, piece, margin=0.0)
        if c is not None:
            length = float(np.ptp(piece, axis=0).max()) * rng.uniform(0.15, 0.4)
            band = _star(rng, c, (length, length * rng.uniform(0.03, 0.07)), lobes=0.1, tears=0.01)
            folds.append(Polygon((band,), 1))
    if "blur" in wanted:
        piece = organ[int(rng.integers(len(organ)))]
        c = _random_point_in(rng, piece, margin=0.0)
        if c is not None:
            r = float(np.ptp(piece, axis=0).max()) * rng.uniform(0.08, 0.18)
            blurs.append(Polygon((_star(rng, c, (r, r * rng.uniform(0.6, 1.0)), lobes=0.2),), 1))
    if "edge" in wanted:
        thick = m * rng.uniform(0.01, 0.03)
        side = int(rng.integers(4))
        box = {
            0: [[0, 0], [w, 0], [w, thick], [0, thick]],
            1: [[0, h - thick], [w, h - thick], [w, h], [0, h]],
            2: [[0, 0], [thick, 0], [thick, h], [0, h]],
            3: [[w - thick, 0], [w, 0], [w, h], [w - thick, h]],
        }[side]
        edges.append(Polygon((np.array(box, dtype=np.float64),), 1))
    return Artifacts(stripe_period, stripe_amp, tuple(pens), tuple(folds), tuple(blurs),
                     tuple(edges))  # fmt: skip


def plan_slide(
    shape: tuple[int, int],
    *,
    seed: int,
    mpp: float = 2.0,
    regime: str = "paip",
    subtype: str | None = "glandular",
    difficulty: float = 0.5,
    artifacts: frozenset[str] | float = 0.3,
) -> SlideLayout:
    """Draw the layout of one phantom slide from a seed.

    Parameters
    ----------
    shape
        ``(H, W)`` of level 0 in px.
    seed
        Everything follows from it; the same arguments give the same layout.
    mpp
        Microns per level-0 px; textures are physical (nuclei about 7 um), so this sets how
        many px a nucleus spans.
    regime
        ``paip`` or ``camelyon`` (see the module docs).
    subtype
        Tumor morphology (:data:`SUBTYPES`), or ``None`` for a tumor-free slide.
    difficulty
        0 (tumor texture far from normal) to 1 (indistinguishable).
    artifacts
        The artifacts to draw (names from :data:`ARTIFACTS`), or the probability with which
        each one is drawn.

    Returns
    -------
    SlideLayout
    """
    if regime not in REGIMES:
        raise ConfigError("regime", regime, " | ".join(REGIMES))
    if subtype is not None and subtype not in SUBTYPES:
        raise ConfigError("subtype", subtype, " | ".join(SUBTYPES) + " | None")
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError("difficulty", difficulty, "a number from 0 (easy) to 1 (hard)")
    if min(shape) < 64:
        raise ConfigError("shape", shape, "at least 64 px on each side")
    if not 0.05 <= mpp <= 50:
        raise ConfigError("mpp", mpp, "0.05 to 50 microns per px")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    plan = _plan_paip if regime == "paip" else _plan_camelyon
    tissue, holes, tumors = plan(rng, shape, mpp, subtype)
    if isinstance(artifacts, float | int):
        wanted = frozenset(a for a in ARTIFACTS if rng.random() < float(artifacts))
    else:
        unknown = set(artifacts) - set(ARTIFACTS)
        if unknown:
            raise ConfigError("artifacts", sorted(unknown), ", ".join(ARTIFACTS))
        wanted = frozenset(artifacts)
    return SlideLayout(
        shape=shape, mpp=mpp, regime=regime, subtype=subtype if tumors else None,
        difficulty=difficulty, seed=int(rng.integers(2**31)), tissue=tuple(tissue),
        holes=tuple(holes), tumors=tuple(tumors), stain=_stain(rng),
        artifacts=_artifacts(rng, shape, mpp, tissue, wanted),
    )  # fmt: skip
