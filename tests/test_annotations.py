"""Ground truth onto the thumbnail grid: ASAP XML, GeoJSON, mask images; and GeoJSON out."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesift import AnnotationError, open_slide, read_thumb
from slidesift.io.annotations import (
    Polygon,
    mask_to_geojson,
    parse_asap_xml,
    parse_geojson,
    rasterize,
    read_asap_xml,
    read_geojson,
    read_mask,
    read_truth,
    write_geojson,
)
from slidesift.io.slide import Thumb


def thumb_of(path: Path, longest: int) -> Thumb:
    with open_slide(path) as slide:
        return read_thumb(slide, longest=longest)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# --- ASAP XML ---------------------------------------------------------------------------------


@pytest.mark.parametrize("longest", [4096, 1024, 700])
def test_asap_xml_area_matches_known_polygon_areas(camelyon_like, longest: int) -> None:
    thumb = thumb_of(camelyon_like.slide, longest)
    mask = read_asap_xml(camelyon_like.xml, thumb)
    sx, sy = thumb.scale
    expected = camelyon_like.tumor_area_l0 / (sx * sy)
    assert mask.shape == thumb.pixels.shape[:2]
    assert mask.sum() == pytest.approx(expected, rel=0.02)


def test_asap_exclusion_is_cut_out(camelyon_like) -> None:
    thumb = thumb_of(camelyon_like.slide, 1024)  # scale 4
    mask = read_asap_xml(camelyon_like.xml, thumb)
    assert not mask[150, 225]  # inside the _2 square (l0 900, 600)
    assert mask[100, 150]  # inside the rectangle, outside the square (l0 600, 400)
    assert mask[200, 775]  # inside the triangle (l0 3100, 800)
    assert not mask[10, 10]


def test_asap_group_choice_changes_the_mask(camelyon_like) -> None:
    thumb = thumb_of(camelyon_like.slide, 1024)
    only_1 = read_asap_xml(
        camelyon_like.xml, thumb, tumor_groups=("_1",), exclude_groups=("_0", "_2")
    )
    full = read_asap_xml(camelyon_like.xml, thumb)
    assert 0 < only_1.sum() < full.sum()


def test_xml_entity_bomb_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        "<ASAP_Annotations><Annotations>&lol3;</Annotations></ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match="forbidden constructs") as err:
        parse_asap_xml(bomb)
    assert "bomb.xml" in str(err.value)


def test_external_entity_is_refused(tmp_path: Path) -> None:
    xxe = tmp_path / "xxe.xml"
    xxe.write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        "<ASAP_Annotations>&e;</ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match="forbidden"):
        parse_asap_xml(xxe)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<ASAP_Annotations><Annotations>", "not well-formed"),
        ("<Other/>", "not <ASAP_Annotations>"),
        (
            '<ASAP_Annotations><Annotations><Annotation PartOfGroup="mystery" Type="Polygon">'
            '<Coordinates><Coordinate Order="0" X="1" Y="1"/></Coordinates></Annotation>'
            "</Annotations></ASAP_Annotations>",
            "neither tumor",
        ),
        (
            '<ASAP_Annotations><Annotations><Annotation PartOfGroup="_0" Type="Polygon">'
            '<Coordinates><Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" X="5" Y="1"/>'
            "</Coordinates></Annotation></Annotations></ASAP_Annotations>",
            "needs 3",
        ),
        (
            '<ASAP_Annotations><Annotations><Annotation PartOfGroup="_0" Type="Polygon">'
            '<Coordinates><Coordinate Order="0" X="a" Y="1"/></Coordinates></Annotation>'
            "</Annotations></ASAP_Annotations>",
            "non-numeric",
        ),
    ],
)
def test_malformed_asap_xml(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=match):
        parse_asap_xml(path)


def test_asap_order_attribute_and_decimal_comma() -> None:
    xml = (
        b'<ASAP_Annotations><Annotations><Annotation PartOfGroup="_0" Type="Polygon"><Coordinates>'
        b'<Coordinate Order="2" X="10,0" Y="10,0"/><Coordinate Order="0" X="0" Y="0"/>'
        b'<Coordinate Order="1" X="10" Y="0"/></Coordinates></Annotation></Annotations>'
        b"</ASAP_Annotations>"
    )
    (poly,) = parse_asap_xml(xml)
    assert poly.rings[0].tolist() == [[0, 0], [10, 0], [10, 10]]


# --- GeoJSON ------------------------------------------------------------------------------------


def square(x0: float, y0: float, side: float) -> list[list[float]]:
    return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]


def test_geojson_polygon_with_hole_and_multipolygon_and_classes() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [square(0, 0, 400), square(100, 100, 200)],
                },
                "properties": {"classification": {"name": "Tumor"}},
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [[square(600, 0, 100)], [square(800, 0, 100)]],
                },
                "properties": {"classification": {"name": "Stroma"}},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [5, 5]},
                "properties": {},
            },
        ],
    }
    with pytest.warns(UserWarning, match="non-polygon"):
        polys = parse_geojson(fc, label_of={"Tumor": 1, "Stroma": 2})
    labels = rasterize(polys, (1000, 500), (1.0, 1.0))
    assert (labels == 1).sum() == pytest.approx(400 * 400 - 200 * 200, rel=0.02)
    assert labels[200, 200] == 0  # the hole
    assert labels[50, 650] == 2 and labels[50, 850] == 2 and labels[50, 750] == 0
    with pytest.raises(AnnotationError, match="have no label"):
        parse_geojson(fc, label_of={"Tumor": 1})


def test_geojson_exclusion_label_zero_cuts_out() -> None:
    feats = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square(50, 50, 20)]},
         "properties": {"classification": {"name": "Ignore"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square(0, 0, 100)]},
         "properties": {"classification": "Tumor"}},
    ]  # fmt: skip
    labels = rasterize(
        parse_geojson(feats, label_of={"Tumor": 1, "Ignore": 0}), (100, 100), (1.0, 1.0)
    )
    assert labels[60, 60] == 0 and labels[20, 20] == 1


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ('{"type": "Point", "coordinates": [1, 2]}', "not a polygon collection"),
        ('{"type": "FeatureCollection", "features": []}', "no Polygon"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}', "no geometry"),
        ('{"type": "FeatureCollection", "features": "x"}', "not a list"),
        ("[1, 2", "not valid JSON"),
        (
            '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", '
            '"coordinates": [[[0, 0], [1, 1]]]}}',
            "at least 3",
        ),
    ],
)
def test_bad_geojson(tmp_path: Path, payload: str, match: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(payload)
    with pytest.raises(AnnotationError, match=match):
        parse_geojson(path)


def random_blobs(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for _ in range(n):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(4, 40)), int(rng.integers(4, 40)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    # punch holes
    for _ in range(n // 2):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        cv2.circle(mask, centre, int(rng.integers(3, 10)), 0, -1)
    return mask.astype(bool)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), sx=st.floats(1.0, 40.0), sy_ratio=st.floats(0.98, 1.02))
def test_mask_to_geojson_round_trips(seed: int, sx: float, sy_ratio: float) -> None:
    rng = np.random.default_rng(seed)
    mask = random_blobs(rng, (150, 200), 12)
    scale = (sx, sx * sy_ratio)
    fc = json.loads(json.dumps(mask_to_geojson(mask, scale)))
    back = rasterize(parse_geojson(fc), (200, 150), scale) > 0
    assert jaccard(mask, back) >= 0.99


def test_geojson_file_round_trip_through_reader(camelyon_like, tmp_path: Path) -> None:
    thumb = thumb_of(camelyon_like.slide, 1024)
    mask = read_asap_xml(camelyon_like.xml, thumb)
    path = write_geojson(tmp_path / "tumor.geojson", mask_to_geojson(mask, thumb.scale))
    data = json.loads(path.read_text())
    assert data["features"][0]["properties"]["classification"]["name"] == "Tumor"
    # coordinates are level-0 px: the rectangle's corner is near (400, 300)
    xs = [p[0] for poly in data["features"][0]["geometry"]["coordinates"] for p in poly[0]]
    assert min(xs) == pytest.approx(400, abs=2 * thumb.scale[0])
    assert jaccard(mask, read_geojson(path, thumb) > 0) >= 0.99
    assert jaccard(mask, read_truth(path, thumb)) >= 0.99


# --- mask images --------------------------------------------------------------------------------


def test_paip_like_level0_tiff_mask(paip_like) -> None:
    thumb = thumb_of(paip_like.slide, 750)  # scale 4
    mask = read_mask(paip_like.mask_tif, thumb)
    expected = paip_like.tumor[2::4, 2::4]  # nearest: the pixel under each centre
    assert mask.dtype == np.bool_
    assert np.array_equal(mask, expected)


def test_paip_like_downsampled_png_mask(paip_like) -> None:
    thumb = thumb_of(paip_like.slide, 1500)  # scale 2: the PNG (scale 4) is upsampled nearest
    mask = read_mask(paip_like.mask_png, thumb)
    ref = cv2.resize(
        paip_like.tumor.astype(np.uint8), thumb.size, interpolation=cv2.INTER_NEAREST
    ).astype(bool)
    assert mask.shape == (1200, 1500)
    assert jaccard(mask, ref) > 0.97


def test_label_mask_keeps_values(tmp_path: Path, paip_like) -> None:
    labels = np.zeros((600, 750), np.uint8)
    labels[100:300, 100:300] = 1
    labels[400:500, 400:700] = 2
    path = tmp_path / "labels.png"
    cv2.imwrite(str(path), labels)
    thumb = thumb_of(paip_like.slide, 750)
    out = read_mask(path, thumb, labels=True)
    assert out.dtype == np.uint8
    assert np.array_equal(out, labels)
    assert set(np.unique(read_truth(path, thumb, labels=True))) == {0, 1, 2}


def test_mask_with_wrong_aspect_ratio_is_refused(tmp_path: Path, paip_like) -> None:
    path = tmp_path / "wrong.png"
    cv2.imwrite(str(path), np.zeros((300, 300), np.uint8))
    thumb = thumb_of(paip_like.slide, 750)
    with pytest.raises(AnnotationError, match="aspect") as err:
        read_mask(path, thumb)
    assert "wrong.png" in str(err.value)


def test_unreadable_mask_is_an_annotation_error(tmp_path: Path, paip_like) -> None:
    path = tmp_path / "mask.tif"
    path.write_bytes(b"II*\x00garbage")
    thumb = thumb_of(paip_like.slide, 750)
    with pytest.raises(AnnotationError):
        read_mask(path, thumb)


def test_rasterize_paints_pixel_centres() -> None:
    # A level-0 square [0, 8) x [0, 8) at scale 4 covers thumbnail pixels 0 and 1 exactly.
    poly = Polygon((np.array([[0.0, 0.0], [8.0, 0.0], [8.0, 8.0], [0.0, 8.0]]),), 1)
    out = rasterize([poly], (4, 4), (4.0, 4.0))
    assert out[:2, :2].all()
    assert out.sum() <= 9  # boundary pixels at most one ring beyond
