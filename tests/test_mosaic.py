"""Mosaic slides from labelled patches (slidesift.mosaic): layout, exact truth, files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from slidesift.errors import SlidesiftError
from slidesift.mosaic import GLASS_RGB, Patch, build_mosaic, read_patch_folder, write_mosaic
from slidesift.sift import to_gray

P = 32


def _patches(n_tumor: int, n_normal: int, seed: int = 0) -> list[Patch]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_tumor + n_normal):
        tumor = k < n_tumor
        pixels = rng.integers(60, 200, (P, P, 3), dtype=np.uint8)
        out.append(Patch(pixels, tumor, "t" if tumor else "n", f"p{k}"))
    return out


def _orientations(pixels: np.ndarray) -> set[bytes]:
    return {
        np.ascontiguousarray(f(np.rot90(pixels, k))).tobytes()
        for k in range(4)
        for f in (lambda a: a, lambda a: a[:, ::-1])
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_patch_is_placed_once_with_exact_truth(seed: int) -> None:
    patches = _patches(7, 9, seed)
    m = build_mosaic(patches, seed=seed)
    rows, cols = m.cells.shape
    assert m.rgb.shape == (rows * P + P, cols * P + P, 3) and m.truth.shape == m.rgb.shape[:2]
    placed = m.cells[m.cells >= 0]
    assert sorted(placed.tolist()) == list(range(len(patches)))
    expected_truth = np.zeros(m.truth.shape, np.uint8)
    for (r, c), index in np.ndenumerate(m.cells):
        y, x = P // 2 + r * P, P // 2 + c * P
        block = m.rgb[y : y + P, x : x + P]
        if index < 0:
            assert to_gray(block).min() > 235  # glass, which the sift calls background
            continue
        assert block.tobytes() in _orientations(patches[index].pixels)
        expected_truth[y : y + P, x : x + P] = patches[index].tumor
    np.testing.assert_array_equal(m.truth, expected_truth)
    # the lesion is one piece: tumor cells are 4-connected
    lesion = np.isin(m.cells, [i for i, p in enumerate(patches) if p.tumor]).astype(np.uint8)
    count, _ = cv2.connectedComponents(lesion, connectivity=4)
    assert count == 2  # background + one lesion
    # tumor sits nearer the middle than normal tissue does
    rr, cc = np.nonzero(m.cells >= 0)
    centre = np.array([rr.mean(), cc.mean()])
    where = np.stack([rr, cc], axis=1)
    dist = {int(m.cells[r, c]): np.hypot(r - centre[0], c - centre[1]) for r, c in where}
    tumor_d = np.mean([d for i, d in dist.items() if patches[i].tumor])
    normal_d = np.mean([d for i, d in dist.items() if not patches[i].tumor])
    assert tumor_d < normal_d


def test_glass_margin_and_colour() -> None:
    m = build_mosaic(_patches(2, 2), seed=5, glass_share=0.5)
    border = np.concatenate([m.rgb[: P // 2].reshape(-1, 3), m.rgb[-(P // 2) :].reshape(-1, 3)])
    assert np.abs(border.astype(int) - GLASS_RGB).max() <= 3
    assert (m.cells < 0).sum() >= 1


def test_same_seed_same_mosaic_other_seed_other_layout() -> None:
    patches = _patches(5, 6)
    a, b = build_mosaic(patches, seed=3), build_mosaic(patches, seed=3)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.rgb, build_mosaic(patches, seed=4).rgb)


def test_folder_reader_parses_sources_and_refuses_bad_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label, name in [("tumor", "tumor_073_100_200"), ("normal", "tumor_004_5_6"),
                        ("normal", "other")]:  # fmt: skip
        (tmp_path / label).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (P, P, 4), dtype=np.uint8)).save(
            tmp_path / label / f"{name}.png"
        )
    patches = read_patch_folder(tmp_path)
    assert [(p.source, p.tumor) for p in patches] == [
        ("tumor_073", True), ("other", False), ("tumor_004", False),
    ]  # fmt: skip
    assert patches[0].pixels.shape == (P, P, 3)  # alpha dropped
    with pytest.raises(SlidesiftError, match="no patches"):
        read_patch_folder(tmp_path / "tumor")
    Image.fromarray(np.zeros((P, P + 1, 3), np.uint8)).save(tmp_path / "tumor" / "x_1_2.png")
    with pytest.raises(SlidesiftError, match="one size"):
        read_patch_folder(tmp_path)
    (tmp_path / "tumor" / "x_1_2.png").write_bytes(b"not a png")
    with pytest.raises(SlidesiftError, match=r"x_1_2\.png"):
        read_patch_folder(tmp_path)


def test_written_mosaic_reads_back_with_its_truth_and_mpp(tmp_path: Path) -> None:
    from slidesift.io.annotations import read_truth
    from slidesift.io.slide import open_slide, read_thumb

    smooth = [Patch(cv2.GaussianBlur(p.pixels, (9, 9), 3), p.tumor, p.source, p.name)
              for p in _patches(6, 6)]  # fmt: skip
    m = build_mosaic(smooth, seed=1)
    slide, mask = write_mosaic(m, tmp_path / "s" / "m.tif", tmp_path / "k" / "m_mask.tif", mpp=0.25)
    with open_slide(slide) as s:
        thumb = read_thumb(s, longest=max(m.rgb.shape[:2]))
        assert s.mpp == pytest.approx((0.25, 0.25))
    np.testing.assert_array_equal(np.asarray(read_truth(mask, thumb), np.uint8), m.truth)
    assert np.abs(thumb.pixels.astype(int) - m.rgb).mean() < 4  # JPEG q 95
