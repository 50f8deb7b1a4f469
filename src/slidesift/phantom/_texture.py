"""Numba kernels that paint H&E-like tissue, one pixel at a time, from global coordinates.

Every texture is a function of the pixel's position in microns and the slide's seed, built
from hashed lattices (value noise, Worley cell noise), so any block of any slide can be
rendered on its own and blocks meet without seams. A texture returns the amounts of
haematoxylin and eosin at the pixel; :func:`paint_block` turns them into RGB with the slide's
stain optical densities (Beer-Lambert).

Compartments (region codes from :mod:`slidesift.phantom.slide_layout`):
organ tissue is colon wall (mucosa with crypts, submucosa, muscle, subserosal fat, lymphoid
aggregates) in the ``paip`` regime and lymph node (lymphocytes, follicles, sinuses) in the
``camelyon`` regime; tumor is ``glandular`` or ``solid``; the layout adds fibrous capsule and
fat pieces. ``s = 1 - difficulty`` sets how far tumor departs from its normal counterpart:
at ``s = 0`` glandular tumor is normal mucosa and solid tumor is a lymphoid sheet.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_K1, _K2, _K3 = _U(0x9E3779B1), _U(0x85EBCA77), _U(0xC2B2AE3D)
_K4, _K5 = _U(0x2C1B3C6D), _U(0x297A2D39)
_S12, _S15 = _U(12), _U(15)
_OFF = 1 << 30

# Parameter vector indices (see paint_block).
P_HOD, P_EOD, P_GLASS = 0, 3, 6  # (3,) each
P_HSCALE, P_ESCALE, P_STRENGTH, P_MPP = 9, 10, 11, 12
P_PENOD = 13  # (3 inks x 3 channels)
P_TUMOR_H, P_TUMOR_E = 22, 23  # tumor stain gains that match its normal counterpart's colour
N_PARAMS = 24
# Stain amounts of the textures are relative; these bring tissue to the optical density of
# real H&E thumbnails (TCGA, CMU-1: mean tissue RGB about (150-200, 100, 140-150)).
_H_GAIN, _E_GAIN = 1.7, 2.1
# Fine structure of the stains, which brings the entropy of phantom tissue tiles at 0.5-1 um/px
# towards real H&E's (docs/phantom.md, benchmarks/phantom_vs_real.py): granularity (chromatin,
# cytoplasm, fibrils) and mottle, multiplicative value noise with features _GRAIN_UM and
# _MOTTLE_UM microns across and amplitudes +-_GRAIN and +-_MOTTLE, and sensor noise of +-_NOISE / 2
# grey levels, independent per channel. Stronger mottle narrows the gap further but hides the
# texture that tells tumor from normal (tests/test_phantom_quality.py's bar).
_GRAIN_UM, _GRAIN = 1.0, 0.5
_MOTTLE_UM, _MOTTLE = 4.0, 0.45
_NOISE = 6.0


@njit(cache=True)
def _hash32(ix: int, iy: int, salt: int) -> int:
    """32 well-mixed bits from integer lattice coordinates and a salt."""
    h = (_U((ix + _OFF) & 0xFFFFFFFF) * _K1) & _M32
    h ^= (_U((iy + _OFF) & 0xFFFFFFFF) * _K2) & _M32
    h ^= (_U(salt & 0xFFFFFFFF) * _K3) & _M32
    h ^= h >> _S15
    h = (h * _K4) & _M32
    h ^= h >> _S12
    h = (h * _K5) & _M32
    h ^= h >> _S15
    return int(h)


@njit(cache=True)
def _hash(ix: int, iy: int, salt: int) -> float:
    """Uniform [0, 1) from integer lattice coordinates and a salt."""
    return _hash32(ix, iy, salt) * (1.0 / 4294967296.0)


@njit(cache=True)
def _value(x: float, y: float, salt: int) -> float:
    """Smooth value noise in [0, 1] with features one lattice unit across."""
    fx, fy = math.floor(x), math.floor(y)
    ix, iy = int(fx), int(fy)
    tx, ty = x - fx, y - fy
    sx, sy = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    a, b = _hash(ix, iy, salt), _hash(ix + 1, iy, salt)
    c, d = _hash(ix, iy + 1, salt), _hash(ix + 1, iy + 1, salt)
    top = a + (b - a) * sx
    return top + (c + (d - c) * sx - top) * sy


@njit(cache=True)
def _fbm(x: float, y: float, salt: int, octaves: int) -> float:
    """Fractal value noise in [0, 1]: octaves of halving size and amplitude."""
    total, amp, norm = 0.0, 1.0, 0.0
    for k in range(octaves):
        total += amp * _value(x, y, salt + 101 * k)
        norm += amp
        amp *= 0.5
        x, y = 2.03 * x + 17.1, 2.03 * y + 9.7
    return total / norm


@njit(cache=True)
def _worley(x: float, y: float, salt: int, jitter: float) -> tuple[float, float, float]:
    """Cell noise: distances to the nearest and second nearest cell point, and the nearest id.

    One point per unit cell, displaced from the cell centre by up to ``jitter / 2``; one hash
    per cell gives the point (two 11-bit offsets) and its id (10 bits).
    """
    fx, fy = math.floor(x), math.floor(y)
    ix, iy = int(fx), int(fy)
    f1, f2, nid = 9.0, 9.0, 0.0
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            cx, cy = ix + dx, iy + dy
            h = _hash32(cx, cy, salt)
            px = cx + 0.5 + jitter * ((h & 0x7FF) * (1.0 / 2048.0) - 0.5)
            py = cy + 0.5 + jitter * (((h >> 11) & 0x7FF) * (1.0 / 2048.0) - 0.5)
            d = (px - x) * (px - x) + (py - y) * (py - y)
            # branch-free: the comparisons are coin flips the CPU cannot predict
            f2 = min(f2, max(f1, d))
            nid = ((h >> 22) + 0.5) * (1.0 / 1024.0) if d < f1 else nid
            f1 = min(f1, d)
    return math.sqrt(f1), math.sqrt(f2), nid


@njit(cache=True)
def _nuclei(
    x: float, y: float, spacing: float, radius: float, presence: float, pleo: float, salt: int
) -> float:
    """Soft discs of nuclei (1 inside, 0 between) on a jittered lattice, in microns."""
    f1, _f2, nid = _worley(x / spacing, y / spacing, salt, 0.9)
    if nid > presence:
        return 0.0
    size = (nid * 7.31) % 1.0
    r = radius / spacing * (1.0 + pleo * (2.0 * size - 1.0))
    k = (r - f1) / (0.3 * r)
    return min(1.0, max(0.0, k))


@njit(cache=True)
def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


@njit(cache=True)
def _stroma(x: float, y: float, salt: int, dense: float) -> tuple[float, float]:
    """Wavy collagen fibres with sparse elongated fibroblast nuclei."""
    theta = _fbm(x / 700.0, y / 700.0, salt, 2) * 9.0
    c, s = math.cos(theta), math.sin(theta)
    u, v = x * c + y * s, -x * s + y * c
    fib = _value(u / 40.0, v / 5.0, salt + 11)
    fine = _value(u / 14.0, v / 2.5, salt + 13)
    ce = (0.18 + 0.5 * fib * (0.55 + 0.45 * fine)) * (0.8 + 0.4 * dense)
    ch = 0.05
    f1, _f2, nid = _worley(u / 22.0, v / 6.0, salt + 17, 0.9)
    if nid < 0.3 + 0.2 * dense and f1 < 0.22:
        ch += 0.85 * min(1.0, (0.22 - f1) / 0.08)
    return ch, ce


@njit(cache=True)
def _fat(x: float, y: float, salt: int) -> tuple[float, float]:
    """Adipocytes: empty cells about 65 um across with thin membranes."""
    f1, f2, _nid = _worley(x / 65.0, y / 65.0, salt + 21, 0.85)
    edge = (f2 - f1) * 65.0
    if edge < 2.5:
        k = 1.0 - edge / 2.5
        return 0.02 + 0.08 * k, 0.05 + 0.35 * k
    return 0.0, 0.0  # empty cells are as bright as glass (background to the sift)


@njit(cache=True)
def _muscle(x: float, y: float, salt: int) -> tuple[float, float]:
    """Smooth muscle: dense eosin in long bundles with elongated nuclei."""
    theta = _fbm(x / 1500.0, y / 1500.0, salt + 31, 2) * 6.0
    c, s = math.cos(theta), math.sin(theta)
    u, v = x * c + y * s, -x * s + y * c
    ce = 0.55 + 0.2 * _value(u / 120.0, v / 12.0, salt + 33)
    ch = 0.06
    f1, _f2, nid = _worley(u / 26.0, v / 6.0, salt + 35, 0.9)
    if nid < 0.45 and f1 < 0.2:
        ch += 0.75 * min(1.0, (0.2 - f1) / 0.07)
    return ch, ce


@njit(cache=True)
def _sheet(x: float, y: float, salt: int, s: float, germinal: float) -> tuple[float, float]:
    """Cell sheets: lymphocytes at ``s = 0``; large vesicular tumor cells as ``s`` grows.

    ``germinal`` (0-1) makes lymphoid follicle centres: larger, paler, sparser nuclei.
    """
    spacing = _lerp(_lerp(6.5, 8.5, germinal), 10.0, s)
    radius = _lerp(_lerp(2.7, 3.3, germinal), 4.3, s)
    k = _nuclei(x, y, spacing, radius, _lerp(0.9, 0.95, s), _lerp(0.12, 0.45, s), salt + 41)
    ch = 0.1 + k * _lerp(_lerp(1.2, 0.85, germinal), 0.95, s)
    if s > 0 and k > 0:  # vesicular chromatin: a darker rim, paler centre
        ch -= 0.45 * s * k * (1.0 - min(1.0, 2.0 * (1.0 - k)))
    ce = _lerp(_lerp(0.14, 0.22, germinal), 0.42, s)
    if s > 0:
        til = _nuclei(x, y, 20.0, 2.3, 0.55 * s, 0.1, salt + 43)
        ch = max(ch, 0.1 + 1.3 * til)
    return ch, ce


@njit(cache=True)
def _glands(x: float, y: float, salt: int, s: float, tumor: bool) -> tuple[float, float]:
    """Crypts in lamina propria (``s = 0``); crowded, irregular, stratified glands as ``s``
    grows, with cribriform lumina and dirty necrosis."""
    g = 95.0 * (1.0 - 0.3 * s)
    warp = 30.0 * s
    wx = x + warp * (2.0 * _value(x / 60.0, y / 60.0, salt + 51) - 1.0)
    wy = y + warp * (2.0 * _value(x / 60.0, y / 60.0, salt + 53) - 1.0)
    f1, _f2, gid = _worley(wx / g, wy / g, salt + 55, 0.55 + 0.45 * s)
    d = f1 * g
    rg = g * (0.36 + 0.12 * s) * (1.0 + 0.25 * s * (2.0 * ((gid * 5.13) % 1.0) - 1.0))
    rl = rg * (0.33 + 0.25 * s * (2.0 * ((gid * 3.71) % 1.0) - 1.0))
    if d < rl:  # lumen
        if tumor and (gid * 9.13) % 1.0 < 0.5 * s:  # dirty necrosis
            frag = _nuclei(x, y, 5.0, 1.3, 0.4, 0.3, salt + 57)
            return 0.12 + 0.8 * frag, 0.5
        return 0.06, 0.03
    if d < rg:  # epithelium
        ch, ce = 0.1, 0.27
        if tumor and (gid * 2.37) % 1.0 < 0.6 * s:  # cribriform: lumina within the epithelium
            c1, _c2, _cid = _worley(x / 16.0, y / 16.0, salt + 59, 0.8)
            if c1 < 0.22:
                return 0.06, 0.03
        if not tumor or s < 0.5:  # goblet cells
            v1, _v2, vid = _worley(x / 9.0, y / 9.0, salt + 61, 0.8)
            if vid < 0.5 * (1.0 - s) and v1 < 0.3 and d < 0.5 * (rl + rg):
                return 0.07, 0.04
        band = 9.0 + (rg - rl - 9.0) * s
        if d > rg - band:
            k = _nuclei(
                x, y, 6.0 * (1.0 + 0.2 * s), 2.3 * (1.0 + 0.5 * s), 0.95, 0.4 * s, salt + 63
            )
            ch += k * 1.05 * (1.0 + 0.2 * s)
        return ch, ce
    # between glands: lamina propria, giving way to desmoplastic stroma in tumor
    lp = _nuclei(x, y, 9.0, 2.4, 0.45, 0.15, salt + 65)
    ch, ce = 0.08 + 1.1 * lp, 0.2 + 0.08 * _value(x / 20.0, y / 20.0, salt + 67)
    if tumor and s > 0:
        sh, se = _stroma(x, y, salt + 69, 1.0)
        ch, ce = _lerp(ch, sh, s), _lerp(ce, se, s)
    return ch, ce


@njit(cache=True)
def _solid(x: float, y: float, salt: int, s: float) -> tuple[float, float]:
    """Solid tumor: cell sheets broken by fibrous septa, with pools of mucin."""
    f1, f2, _nid = _worley(x / 220.0, y / 220.0, salt + 71, 0.9)
    if (f2 - f1) * 220.0 < 10.0 * s:
        return _stroma(x, y, salt + 73, 1.0)
    m1, _m2, mid = _worley(x / 350.0, y / 350.0, salt + 75, 0.8)
    if mid < 0.35 and m1 * 350.0 < 90.0 * s:
        wisp = _value(x / 12.0, y / 12.0, salt + 77)
        return 0.1 + 0.1 * wisp, 0.04 + 0.06 * wisp
    return _sheet(x, y, salt, s, 0.0)


@njit(cache=True)
def _necrotic(x: float, y: float, salt: int) -> bool:
    """Patches of homogeneous necrosis 120-400 um across (metastases in lymph nodes).

    They make small tiles of metastases poor in detail, so the tumor entropy rails widen below
    about 200 px at the thumbnail, as the paper's Fig. 5 shows for CAMELYON16.
    """
    f1, _f2, nid = _worley(x / 600.0, y / 600.0, salt, 0.8)
    return nid < 0.6 and f1 * 600.0 < 60.0 + 140.0 * ((nid * 7.7) % 1.0)


@njit(cache=True)
def _colon(x: float, y: float, salt: int) -> tuple[float, float]:
    """Normal colon wall: compartments from large-scale noise."""
    # thresholds are quantiles of the 3-octave noise: fat 12%, muscle and submucosa 16% each,
    # mucosa 56% of the wall
    comp = _fbm(x / 3500.0, y / 3500.0, salt + 81, 3)
    if comp < 0.33:
        return _fat(x, y, salt)
    a1, _a2, aid = _worley(x / 1400.0, y / 1400.0, salt + 83, 0.8)
    if comp > 0.40 and aid < 0.45 and a1 * 1400.0 < 120.0 + 160.0 * ((aid * 3.3) % 1.0):
        return _sheet(x, y, salt, 0.0, 0.0)  # lymphoid aggregate
    if comp > 0.475:
        return _glands(x, y, salt, 0.0, False)
    if _fbm(x / 900.0, y / 900.0, salt + 85, 2) < 0.5:
        return _muscle(x, y, salt)
    return _stroma(x, y, salt, 0.0)


@njit(cache=True)
def _node(x: float, y: float, salt: int) -> tuple[float, float]:
    """Normal lymph node: lymphocytes, follicles with germinal centres, sinuses."""
    sinus = abs(_fbm(x / 500.0, y / 500.0, salt + 91, 3) - 0.5)
    if sinus < 0.008:
        k = _nuclei(x, y, 14.0, 3.6, 0.3, 0.2, salt + 93)
        return 0.05 + 0.6 * k, 0.12
    f1, _f2, fid = _worley(x / 650.0, y / 650.0, salt + 95, 0.8)
    r = f1 * 650.0
    if fid < 0.55 and r < 170.0:
        return _sheet(x, y, salt, 0.0, min(1.0, (170.0 - r) / 40.0))
    return _sheet(x, y, salt, 0.0, 0.0)


@njit(cache=True, nogil=True)
def mean_stain(kind: int, s: float) -> tuple[float, float]:
    """Mean haematoxylin and eosin amounts of a texture over about 2 x 2 mm.

    ``kind``: 0 glandular tumor, 1 solid tumor (both at strength ``s``), 2 normal mucosa,
    3 lymphoid sheet. Used to give tumor the colour of its normal counterpart.
    """
    n, step = 220, 9.37
    sh, se = 0.0, 0.0
    for i in range(n):
        y = 50_000.0 + i * step
        for j in range(n):
            x = 50_000.0 + j * step
            if kind == 0:
                ch, ce = _glands(x, y, 12345, s, True)
            elif kind == 1:
                ch, ce = _solid(x, y, 12345, s)
            elif kind == 2:
                ch, ce = _glands(x, y, 12345, 0.0, False)
            else:
                ch, ce = _sheet(x, y, 12345, 0.0, 0.0)
            sh += ch
            se += ce
    return sh / (n * n), se / (n * n)


@njit(cache=True, nogil=True)
def paint_block(
    region: NDArray[np.uint8],
    fold: NDArray[np.uint8],
    pen: NDArray[np.uint8],
    column_gain: NDArray[np.float32],
    l0_x0: int,
    l0_y0: int,
    params: NDArray[np.float64],
    regime: int,
    subtype: int,
    seed: int,
    out: NDArray[np.uint8],
) -> None:
    """Paint one block of a slide.

    Parameters
    ----------
    region
        ``(h, w)`` uint8 region codes (glass 0, organ 1, tumor 2, fibrous 3, fat 4, black 5).
    fold
        ``(h, w)`` uint8, 1 where tissue lies folded over itself (twice the stain).
    pen
        ``(h, w)`` uint8, 0 or 1 + ink index of a pen mark.
    column_gain
        ``(w,)`` light multiplier per column (scanner stripes; 1 without).
    l0_x0, l0_y0
        Level-0 px of the block's top-left pixel.
    params
        ``(N_PARAMS,)`` float64: stain OD vectors, glass RGB, stain scales, tumor strength
        ``s``, microns per px, pen inks.
    regime
        0 colon (``paip``), 1 lymph node (``camelyon``).
    subtype
        0 glandular, 1 solid.
    seed
        Texture seed.
    out
        ``(h, w, 3)`` uint8 RGB, written.
    """
    h, w = region.shape
    mpp = params[P_MPP]
    s = params[P_STRENGTH]
    for i in range(h):
        y = (l0_y0 + i + 0.5) * mpp
        for j in range(w):
            x = (l0_x0 + j + 0.5) * mpp
            code = region[i, j]
            ch, ce = 0.0, 0.0
            if code == 1:
                ch, ce = _colon(x, y, seed) if regime == 0 else _node(x, y, seed)
            elif code == 2:
                # a tumor bed, as annotators draw it: tumor cells with islands of desmoplastic
                # stroma and entrapped fat (colon), or necrosis (lymph node metastases)
                bed = _fbm(x / 900.0, y / 900.0, seed + 13, 3)
                if regime == 1 and _necrotic(x, y, seed + 9):
                    ch, ce = 0.1, 0.45
                elif regime == 0 and bed < 0.33:
                    ch, ce = _fat(x, y, seed + 5)
                elif regime == 0 and bed < 0.42:
                    ch, ce = _stroma(x, y, seed + 3, 1.0)
                else:
                    if subtype == 0:
                        ch, ce = _glands(x, y, seed + 7, s, True)
                    else:
                        ch, ce = _solid(x, y, seed + 7, s)
                    ch *= params[P_TUMOR_H]
                    ce *= params[P_TUMOR_E]
            elif code == 3:
                ch, ce = _stroma(x, y, seed + 3, 1.0)
            elif code == 4:
                ch, ce = _fat(x, y, seed + 5)
            if code != 0 and code != 5:
                ch *= (
                    _H_GAIN
                    * params[P_HSCALE]
                    * (0.9 + 0.2 * _value(x / 300.0, y / 300.0, seed + 97))
                )
                ce *= (
                    _E_GAIN
                    * params[P_ESCALE]
                    * (0.9 + 0.2 * _value(x / 300.0, y / 300.0, seed + 98))
                )
                ch *= 1.0 + _GRAIN * (2.0 * _value(x / _GRAIN_UM, y / _GRAIN_UM, seed + 71) - 1.0)
                ce *= 1.0 + _GRAIN * (2.0 * _value(x / _GRAIN_UM, y / _GRAIN_UM, seed + 72) - 1.0)
                ch *= 1.0 + _MOTTLE * (
                    2.0 * _value(x / _MOTTLE_UM, y / _MOTTLE_UM, seed + 73) - 1.0
                )
                ce *= 1.0 + _MOTTLE * (
                    2.0 * _value(x / _MOTTLE_UM, y / _MOTTLE_UM, seed + 74) - 1.0
                )
                if fold[i, j]:
                    ch *= 1.9
                    ce *= 1.9
            ink = int(pen[i, j])
            for c in range(3):
                od = ch * params[P_HOD + c] + ce * params[P_EOD + c]
                if ink:
                    od += params[P_PENOD + 3 * (ink - 1) + c]
                light = params[P_GLASS + c] * column_gain[j]
                if code == 5:
                    light = 18.0
                noise = _NOISE * (_hash(l0_x0 + j, l0_y0 + i, seed + 99 + c) - 0.5)
                v = light * math.exp(-od) + noise
                out[i, j, c] = np.uint8(min(255.0, max(0.0, v + 0.5)))
