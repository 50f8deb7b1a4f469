"""Ground truth onto the thumbnail grid, and masks back out as QuPath GeoJSON.

Inputs users receive:

* mask images (PAIP2020 TIFF masks, CAMELYON16 pyramidal masks, PNG): any size with the slide's
  aspect ratio, resampled nearest onto the thumbnail;
* ASAP XML (CAMELYON16): polygons in level-0 px; groups ``_0``/``_1`` tumor, ``_2`` exclusion
  cut out of tumor;
* QuPath GeoJSON: ``Polygon``/``MultiPolygon`` with holes, as a ``FeatureCollection``, a list of
  features or one feature; classification names map to labels.

Polygon frame: level-0 px with pixel ``(i, j)`` covering ``[j, j + 1) x [i, i + 1)``. A thumbnail
pixel belongs to a polygon when its centre does; thumbnail px ``(th_x, th_y)`` has its centre at
level-0 ``((th_x + 0.5) * sx, (th_y + 0.5) * sy)``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.errors import AnnotationError, SlideReadError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.resample import nearest_resample
from slidesift.io.slide import Thumb, open_slide

__all__ = [
    "Polygon",
    "mask_to_geojson",
    "mask_to_polygons",
    "parse_asap_xml",
    "parse_geojson",
    "rasterize",
    "read_asap_xml",
    "read_geojson",
    "read_mask",
    "read_truth",
    "write_asap_xml",
    "write_geojson",
]

#: ASAP groups that hold tumor (CAMELYON16 uses ``_0`` and ``_1``; CAMELYON17 ``metastases``).
TUMOR_GROUPS = ("_0", "_1", "Tumor", "tumor", "metastases")
#: ASAP groups cut out of tumor (CAMELYON16 ``_2``).
EXCLUDE_GROUPS = ("_2", "Exclusion", "exclusion")
_SUB = 8  # fixed-point bits for cv2.fillPoly vertices
_POLYGON_TYPES = ("Polygon", "Spline", "Rectangle")


@dataclass(frozen=True)
class Polygon:
    """One polygon with holes, in level-0 px.

    Attributes
    ----------
    rings
        Exterior ring first, then holes; each ``(n, 2)`` float64 of ``(l0_x, l0_y)``.
    label
        Label it paints (0 cuts out).
    name
        Its group or classification name, for messages.
    """

    rings: tuple[NDArray[np.float64], ...]
    label: int
    name: str = ""


# ---------------------------------------------------------------------------------------------
# Rasterizing polygons


def rasterize(
    polygons: Iterable[Polygon], th_size: tuple[int, int], scale: tuple[float, float]
) -> NDArray[np.uint8]:
    """Paint polygons onto a thumbnail-sized label image.

    Polygons paint in order with their labels, except that label-0 polygons (exclusions) paint
    last, so they cut out of everything. Holes leave what was below untouched.

    Parameters
    ----------
    polygons
        Polygons in level-0 px.
    th_size
        ``(W, H)`` of the thumbnail.
    scale
        ``(sx, sy)`` level-0 px per thumbnail px (:attr:`Thumb.scale`).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 labels indexed ``[th_y, th_x]``.
    """
    w, h = th_size
    out = np.zeros((h, w), dtype=np.uint8)
    polys = list(polygons)
    ordered = [p for p in polys if p.label != 0] + [p for p in polys if p.label == 0]
    factor = np.array([1.0 / scale[0], 1.0 / scale[1]]) * (1 << _SUB)
    half = 0.5 * (1 << _SUB)
    for poly in ordered:
        rings = [np.rint(r * factor - half).astype(np.int32) for r in poly.rings if len(r) >= 1]
        if rings:
            cv2.fillPoly(out, rings, int(poly.label), lineType=cv2.LINE_8, shift=_SUB)
    return out


# ---------------------------------------------------------------------------------------------
# Mask images


def read_mask(path: str | os.PathLike[str], thumb: Thumb, *, labels: bool = False) -> NDArray[Any]:
    """Read a mask image (any size with the slide's aspect ratio) onto the thumbnail grid.

    Parameters
    ----------
    path
        TIFF (plain or pyramidal), PNG or JPEG mask. Pyramidal masks are read at level 0 band
        by band, so label values are never blurred by a pyramid's own downsampling.
    thumb
        The slide's thumbnail; fixes the output grid.
    labels
        ``False``: any non-zero value is tumor, returns bool. ``True``: the first channel's
        values are labels, returns uint8.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool or uint8, indexed ``[th_y, th_x]``.

    Raises
    ------
    AnnotationError
        Unreadable file, or an aspect ratio that does not match the slide's.
    """
    p = Path(path)
    try:
        mask_slide = open_slide(p)
    except SlideReadError as exc:
        raise AnnotationError(p, exc.reason, exc.hint) from exc
    with mask_slide:
        mw, mh = mask_slide.dimensions
        l0_w, l0_h = thumb.l0_size
        sx, sy = l0_w / mw, l0_h / mh
        tolerance = 0.01 + 2.0 / min(mw, mh)
        if abs(sx - sy) / max(sx, sy) > tolerance:
            raise AnnotationError(
                p,
                f"mask is {mw} x {mh} px (aspect {mw / mh:.4f}) but the slide is "
                f"{l0_w} x {l0_h} px (aspect {l0_w / l0_h:.4f})",
                "pass the mask that belongs to this slide, at level 0 or downsampled uniformly",
            )

        def read_rows(y0: int, y1: int) -> NDArray[np.uint8]:
            return mask_slide.read_region(0, (0, y0), (mw, y1 - y0))

        grid = nearest_resample(read_rows, (mw, mh), thumb.size)
    if labels:
        return np.ascontiguousarray(grid[..., 0])
    return np.asarray(grid.max(axis=2) > 0)


# ---------------------------------------------------------------------------------------------
# ASAP XML


def _float(text: str | None, where: str, p: Path | None) -> float:
    if text is None:
        raise AnnotationError(p, f"{where} has no coordinate value")
    try:
        return float(text.replace(",", ".") if "." not in text else text)
    except ValueError as exc:
        raise AnnotationError(p, f"{where} has a non-numeric coordinate {text!r}") from exc


def parse_asap_xml(
    source: str | bytes | os.PathLike[str],
    *,
    tumor_groups: Sequence[str] = TUMOR_GROUPS,
    exclude_groups: Sequence[str] = EXCLUDE_GROUPS,
) -> list[Polygon]:
    """Parse ASAP XML (as CAMELYON16 ships it) into level-0 polygons, safely.

    Parameters
    ----------
    source
        Path to the XML, or its bytes.
    tumor_groups
        ``PartOfGroup`` names that are tumor (label 1).
    exclude_groups
        ``PartOfGroup`` names cut out of tumor (label 0).

    Returns
    -------
    list of Polygon
        Tumor polygons (label 1) and exclusions (label 0). ``Dot``/``PointSet`` annotations are
        skipped with a warning; splines are taken as polygons through their control points.

    Raises
    ------
    AnnotationError
        Malformed XML, entity tricks (billion laughs, external entities), unknown groups.
    """
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    p = None if isinstance(source, bytes) else Path(source)
    try:
        root = DET.fromstring(source) if isinstance(source, bytes) else DET.parse(p).getroot()
    except DefusedXmlException as exc:
        raise AnnotationError(
            p,
            f"XML uses forbidden constructs ({exc.__class__.__name__}); refused for safety",
            "ASAP XML needs no DTD or entities: export it again from ASAP",
        ) from exc
    except Exception as exc:  # ElementTree.ParseError, OSError
        raise AnnotationError(p, f"not well-formed XML ({exc})", "is the file complete?") from exc
    annotations = root.findall(".//Annotation")
    if root.tag != "ASAP_Annotations" and not annotations:
        raise AnnotationError(
            p,
            f"root element is <{root.tag}>, not <ASAP_Annotations>",
            "pass an ASAP XML annotation (CAMELYON16 format)",
        )
    polys: list[Polygon] = []
    unknown: set[str] = set()
    skipped: set[str] = set()
    for i, ann in enumerate(annotations):
        group = ann.get("PartOfGroup", "")
        kind = ann.get("Type", "Polygon")
        if group in tumor_groups:
            label = 1
        elif group in exclude_groups:
            label = 0
        else:
            unknown.add(group)
            continue
        if kind not in _POLYGON_TYPES:
            skipped.add(kind)
            continue
        coords = ann.findall("./Coordinates/Coordinate")
        where = f"Annotation {ann.get('Name', i)!r}"
        pts = sorted(
            (
                int(_float(c.get("Order", str(k)), where, p)),
                _float(c.get("X"), where, p),
                _float(c.get("Y"), where, p),
            )
            for k, c in enumerate(coords)
        )
        if len(pts) < 3:
            raise AnnotationError(p, f"{where} has {len(pts)} coordinate(s); a polygon needs 3")
        ring = np.array([(x, y) for _, x, y in pts], dtype=np.float64)
        if not np.isfinite(ring).all():
            raise AnnotationError(p, f"{where} has non-finite coordinates")
        polys.append(Polygon((ring,), label, group))
    if unknown:
        raise AnnotationError(
            p,
            f"annotation groups {sorted(unknown)} are neither tumor {list(tumor_groups)} "
            f"nor exclusion {list(exclude_groups)}",
            "pass tumor_groups=/exclude_groups= (CLI: --tumor-group/--exclude-group)",
        )
    if skipped:
        warnings.warn(f"{p}: skipped annotations of type {sorted(skipped)}", stacklevel=2)
    if not annotations:
        warnings.warn(f"{p}: the XML has no annotations; the mask is empty", stacklevel=2)
    return polys


def read_asap_xml(
    path: str | os.PathLike[str],
    thumb: Thumb,
    *,
    tumor_groups: Sequence[str] = TUMOR_GROUPS,
    exclude_groups: Sequence[str] = EXCLUDE_GROUPS,
) -> NDArray[np.bool_]:
    """Rasterize an ASAP XML onto the thumbnail grid: ``(H, W)`` bool tumor mask."""
    polys = parse_asap_xml(path, tumor_groups=tumor_groups, exclude_groups=exclude_groups)
    return rasterize(polys, thumb.size, thumb.scale) > 0


# ---------------------------------------------------------------------------------------------
# GeoJSON


def _class_name(props: Mapping[str, Any] | None) -> str:
    if not props:
        return ""
    cls = props.get("classification")
    if isinstance(cls, Mapping):
        name = cls.get("name")
        if name is None and isinstance(cls.get("names"), list):
            name = ":".join(str(n) for n in cls["names"])
        return str(name or "")
    if isinstance(cls, str):
        return cls
    return str(props.get("name", "") or "")


def _rings(coords: Any, p: Path | None, where: str) -> tuple[NDArray[np.float64], ...]:
    try:
        rings = tuple(np.asarray(r, dtype=np.float64)[:, :2] for r in coords)
    except (TypeError, ValueError, IndexError) as exc:
        raise AnnotationError(p, f"{where}: coordinates are not a list of rings ({exc})") from exc
    if not rings or any(r.ndim != 2 or len(r) < 3 for r in rings):
        raise AnnotationError(p, f"{where}: a polygon ring needs at least 3 positions")
    if not all(np.isfinite(r).all() for r in rings):
        raise AnnotationError(p, f"{where}: non-finite coordinates")
    return rings


def parse_geojson(
    source: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
    *,
    label_of: Mapping[str, int] | None = None,
) -> list[Polygon]:
    """Parse QuPath GeoJSON into level-0 polygons.

    Parameters
    ----------
    source
        A path, or an already-loaded GeoJSON object.
    label_of
        Classification name -> label (0 cuts out). ``None``: every polygon is tumor (1).

    Returns
    -------
    list of Polygon

    Raises
    ------
    AnnotationError
        Invalid JSON, no polygons at all, unknown classification names.
    """
    p: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        try:
            data: Any = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnnotationError(p, f"not valid JSON ({exc})", "is the file complete?") from exc
    else:
        data = source
    if isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, Mapping) and data.get("type") in ("Polygon", "MultiPolygon"):
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    elif isinstance(data, list):
        features = data
    else:
        kind = data.get("type") if isinstance(data, Mapping) else type(data).__name__
        raise AnnotationError(
            p,
            f"GeoJSON of type {kind!r} is not a polygon collection",
            "export annotations from QuPath as a FeatureCollection of Polygon/MultiPolygon",
        )
    if not isinstance(features, list):
        raise AnnotationError(p, "'features' is not a list")
    polys: list[Polygon] = []
    other: set[str] = set()
    unknown: set[str] = set()
    for i, feat in enumerate(features):
        geom = feat.get("geometry") if isinstance(feat, Mapping) else None
        if not isinstance(geom, Mapping):
            raise AnnotationError(p, f"feature {i} has no geometry object")
        gtype = geom.get("type")
        name = _class_name(feat.get("properties"))
        if gtype not in ("Polygon", "MultiPolygon"):
            other.add(str(gtype))
            continue
        if label_of is None:
            label = 1
        elif name in label_of:
            label = int(label_of[name])
        else:
            unknown.add(name)
            continue
        parts = [geom.get("coordinates")] if gtype == "Polygon" else geom.get("coordinates")
        if not isinstance(parts, list):
            raise AnnotationError(p, f"feature {i}: coordinates missing")
        for part in parts:
            polys.append(Polygon(_rings(part, p, f"feature {i}"), label, name))
    if unknown:
        raise AnnotationError(
            p,
            f"classifications {sorted(unknown)} have no label in {dict(label_of or {})}",
            "add them to label_of (0 cuts a class out of the mask)",
        )
    if not polys:
        raise AnnotationError(
            p,
            f"no Polygon or MultiPolygon geometry (found {sorted(other) or 'nothing'})",
            "export area annotations, not points or lines",
        )
    if other:
        warnings.warn(f"{p}: skipped non-polygon geometries {sorted(other)}", stacklevel=2)
    return polys


def read_geojson(
    path: str | os.PathLike[str],
    thumb: Thumb,
    *,
    label_of: Mapping[str, int] | None = None,
) -> NDArray[np.uint8]:
    """Rasterize QuPath GeoJSON onto the thumbnail grid: ``(H, W)`` uint8 labels."""
    return rasterize(parse_geojson(path, label_of=label_of), thumb.size, thumb.scale)


def read_truth(path: str | os.PathLike[str], thumb: Thumb, *, labels: bool = False) -> NDArray[Any]:
    """Read any ground truth (ASAP XML, GeoJSON, mask image) onto the thumbnail grid.

    Parameters
    ----------
    path
        ``.xml`` is ASAP, ``.geojson``/``.json`` is GeoJSON, anything else a mask image.
    thumb
        Fixes the grid.
    labels
        Return uint8 labels instead of a bool tumor mask.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool (or uint8 labels), indexed ``[th_y, th_x]``.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".xml":
        out: NDArray[Any] = read_asap_xml(path, thumb)
        return out.astype(np.uint8) if labels else out
    if suffix in (".geojson", ".json"):
        lab = read_geojson(path, thumb)
        return lab if labels else lab > 0
    return read_mask(path, thumb, labels=labels)


# ---------------------------------------------------------------------------------------------
# Masks out as GeoJSON


def mask_to_geojson(
    mask: NDArray[Any],
    scale: tuple[float, float],
    *,
    names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
) -> dict[str, Any]:
    """Trace a thumbnail mask into QuPath-importable GeoJSON polygons in level-0 px.

    Parameters
    ----------
    mask
        ``(H, W)`` bool or integer labels on the thumbnail grid; 0 is background.
    scale
        ``(sx, sy)`` level-0 px per thumbnail px.
    names
        Label -> classification name; default ``{1: "Tumor"}`` and ``"Class N"`` otherwise.
    colors
        Label -> RGB for QuPath's display.

    Returns
    -------
    dict
        A ``FeatureCollection`` with one ``MultiPolygon`` annotation feature per label present.
        Rings trace the centres of the boundary pixels; reading them back with
        :func:`read_geojson` reproduces the mask.
    """
    lab = np.asarray(mask)
    lab = lab.astype(np.uint8) if lab.dtype == np.bool_ else lab
    names = dict(names or {1: "Tumor"})
    colors = dict(colors or {1: (200, 0, 0)})
    sx, sy = scale
    features: list[dict[str, Any]] = []
    for value in (int(v) for v in np.unique(lab) if v != 0):
        binary = (lab == value).astype(np.uint8)
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        hier = hierarchy[0]
        polygons: list[list[list[list[float]]]] = []
        for idx, contour in enumerate(contours):
            if hier[idx][3] != -1:
                continue
            rings = [contour]
            child = hier[idx][2]
            while child != -1:
                rings.append(contours[child])
                child = hier[child][0]
            polygons.append([_ring_to_l0(r, sx, sy) for r in rings])
        name = names.get(value, f"Class {value}")
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "MultiPolygon", "coordinates": polygons},
                "properties": {
                    "objectType": "annotation",
                    "classification": {
                        "name": name,
                        "color": list(colors.get(value, (0, 0, 200))),
                    },
                    "label": value,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _ring_to_l0(contour: NDArray[np.int32], sx: float, sy: float) -> list[list[float]]:
    pts = contour.reshape(-1, 2).astype(np.float64)
    pts = (pts + 0.5) * np.array([sx, sy])
    # GeoJSON rings are closed and need >= 4 positions; single pixels and lines repeat points.
    ring = [[round(float(x), 3), round(float(y), 3)] for x, y in pts]
    while len(ring) < 3:
        ring.append(ring[-1])
    ring.append(ring[0])
    return ring


def write_geojson(path: str | os.PathLike[str], collection: Mapping[str, Any]) -> Path:
    """Write GeoJSON atomically (temporary file, then rename); returns the path."""
    return atomic_write_text(path, json.dumps(collection))


def mask_to_polygons(mask: NDArray[Any], scale: tuple[float, float]) -> list[Polygon]:
    """Trace a thumbnail mask into level-0 polygons, one per connected region and label.

    Parameters
    ----------
    mask
        ``(H, W)`` bool or integer labels on the thumbnail grid; 0 is background.
    scale
        ``(sx, sy)`` level-0 px per thumbnail px.

    Returns
    -------
    list of Polygon
        Exterior ring first, then holes; vertices at boundary-pixel centres in level-0 px.
    """
    collection = mask_to_geojson(mask, scale)
    polys: list[Polygon] = []
    for feat in collection["features"]:
        label = int(feat["properties"]["label"])
        for part in feat["geometry"]["coordinates"]:
            rings = tuple(np.asarray(r, dtype=np.float64) for r in part)
            polys.append(Polygon(rings, label, feat["properties"]["classification"]["name"]))
    return polys


def write_asap_xml(
    path: str | os.PathLike[str],
    polygons: Iterable[Polygon],
    *,
    group_of: Mapping[int, str] | None = None,
) -> Path:
    """Write polygons as ASAP XML (CAMELYON16 layout), atomically.

    Each ring becomes one ``Polygon`` annotation; holes of tumor polygons become exclusions
    (group ``_2``) as CAMELYON16 encodes them.

    Parameters
    ----------
    path
        Destination ``.xml``.
    polygons
        Level-0 polygons; label 0 is written to group ``_2``.
    group_of
        Label -> group name; default ``{1: "_0", 0: "_2"}``. A polygon whose ``name`` is an
        ASAP group (``_0``, ``_1``, ...) keeps that group.
    """
    from xml.sax.saxutils import quoteattr

    groups = dict(group_of or {1: "_0", 0: "_2"})
    polys = list(polygons)
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    n = 0
    for poly in polys:
        for k, ring in enumerate(poly.rings):
            label = poly.label if k == 0 else 0
            group = groups.get(label, "_2" if label == 0 else f"_{label - 1}")
            if k == 0 and poly.name.startswith("_"):
                group = poly.name
            pts = ring[:-1] if len(ring) > 3 and np.array_equal(ring[0], ring[-1]) else ring
            lines.append(
                f'\t\t<Annotation Name="Annotation {n}" Type="Polygon" '
                f'PartOfGroup={quoteattr(group)} Color="#F4FA58">'
            )
            lines.append("\t\t\t<Coordinates>")
            lines.extend(
                f'\t\t\t\t<Coordinate Order="{i}" X="{x:.4f}" Y="{y:.4f}" />'
                for i, (x, y) in enumerate(pts)
            )
            lines.append("\t\t\t</Coordinates>")
            lines.append("\t\t</Annotation>")
            n += 1
    lines.append("\t</Annotations>")
    lines.append("\t<AnnotationGroups>")
    used = set(groups.values()) | {p.name for p in polys if p.name.startswith("_")}
    for name in sorted(used):
        lines.append(f'\t\t<Group Name={quoteattr(name)} PartOfGroup="None" Color="#ff0000">')
        lines.append("\t\t\t<Attributes />")
        lines.append("\t\t</Group>")
    lines.append("\t</AnnotationGroups>")
    lines.append("</ASAP_Annotations>")
    return atomic_write_text(path, "\n".join(lines) + "\n")
