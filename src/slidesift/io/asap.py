"""ASAP XML (CAMELYON16): parse safely, rasterize, write."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import AnnotationError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.limits import check_annotation_size
from slidesift.io.polygons import Polygon, rasterize
from slidesift.io.slide import Thumb

__all__ = ["EXCLUDE_GROUPS", "TUMOR_GROUPS", "parse_asap_xml", "read_asap_xml", "write_asap_xml"]

#: ASAP groups that hold tumor (CAMELYON16 uses ``_0`` and ``_1``; CAMELYON17 ``metastases``).
TUMOR_GROUPS = ("_0", "_1", "Tumor", "tumor", "metastases")
#: ASAP groups cut out of tumor (CAMELYON16 ``_2``).
EXCLUDE_GROUPS = ("_2", "Exclusion", "exclusion")
_POLYGON_TYPES = ("Polygon", "Spline", "Rectangle")


def _float(text: str | None, where: str, p: Path | None) -> float:
    if text is None:
        raise AnnotationError(p, f"{where} has no coordinate value")
    try:
        value = float(text.replace(",", ".") if "." not in text else text)
    except ValueError as exc:
        raise AnnotationError(p, f"{where} has a non-numeric coordinate {text!r}") from exc
    if not math.isfinite(value):  # int(Order) of inf or NaN raised a bare OverflowError
        raise AnnotationError(p, f"{where} has a non-finite value {text!r}")
    return value


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
        Malformed XML, entity tricks (billion laughs, external entities), unknown groups, a
        file over ``SLIDESIFT_MAX_ANNOTATION_MB`` (checked before it is read).
    """
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    p = None if isinstance(source, bytes) else Path(source)
    if p is not None:
        check_annotation_size(p)
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
