"""Stain normalisation: Macenko against torchstain, Reinhard's statistics, bands, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from slidesift import stain
from slidesift.phantom import plan_slide, render_image
from slidesift.sift import SiftSpec, to_gray
from slidesift.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    background_hint,
    fit_normalizer,
    key_of,
    normalizer_from_dict,
)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Two phantom H&E images with different stains (the phantom draws a stain per slide)."""
    out = []
    for seed in (2, 5):
        layout = plan_slide((900, 1100), seed=seed, mpp=8.0)
        out.append(render_image(layout))
    return out


def test_macenko_matches_torchstain(images: list[np.ndarray]) -> None:
    torchstain = pytest.importorskip("torchstain")
    source, target = images[0], images[1]  # under a million pixels: our fit sees them all
    ref = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    ref.fit(target)
    expected, _, _ = ref.normalize(I=source, stains=False)
    ours = MacenkoNormalizer.fit([target])
    np.testing.assert_allclose(np.asarray(ours.he), ref.HERef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(ours.max_c), ref.maxCRef, rtol=1e-9)
    got = ours.apply(source)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1  # float rounding at .astype(uint8) boundaries
    assert (diff == 0).mean() > 0.999


def test_reinhard_matches_target_statistics(images: list[np.ndarray]) -> None:
    target = ReinhardNormalizer.fit([images[1]])
    out = target.apply(images[0])
    gray = to_gray(images[0])
    tissue = (gray >= 15) & (gray <= 235)  # the pixels the source statistics came from
    lab = stain._lab(out[tissue]).astype(np.float64)
    mean, std = lab.mean(axis=0), lab.std(axis=0)
    np.testing.assert_allclose(mean, target.mean, atol=1.5)
    np.testing.assert_allclose(std, target.std, rtol=0.1)
    before, _ = ReinhardNormalizer.stats([images[0]])
    assert np.abs(before - np.asarray(target.mean)).max() > np.abs(mean - target.mean).max()


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_bands_equal_whole_image_and_dicts_round_trip(
    images: list[np.ndarray], method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    norm = fit_normalizer(method, images)  # type: ignore[arg-type]
    whole = norm.apply(images[0])
    monkeypatch.setattr(stain, "_BAND", 7)
    np.testing.assert_array_equal(norm.apply(images[0]), whole)
    back = normalizer_from_dict(norm.to_dict())
    assert back == norm and key_of(back) == key_of(norm)  # type: ignore[arg-type]
    assert whole.shape == images[0].shape and whole.dtype == np.uint8


def test_reference_vectors_and_errors(images: list[np.ndarray]) -> None:
    assert fit_normalizer("macenko", images, reference=True) == MacenkoNormalizer()
    blank = np.full((64, 64, 3), 250, np.uint8)
    with pytest.raises(Exception, match="stained pixels"):
        MacenkoNormalizer().apply(blank)
    with pytest.raises(Exception, match="no tissue"):
        ReinhardNormalizer.fit([blank])
    with pytest.raises(Exception, match="reinhard"):
        normalizer_from_dict({"method": "vahadane"})
    assert normalizer_from_dict(None) is None
    assert background_hint(SiftSpec()) is not None
    assert background_hint(SiftSpec(background="peak-frequency")) is None
