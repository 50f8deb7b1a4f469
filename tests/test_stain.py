"""Stain normalisation: Macenko against torchstain, Reinhard's statistics, Vahadane on known
stains, bands, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from slidesift import stain
from slidesift.phantom import plan_slide, render_image
from slidesift.sift import SiftSpec, to_gray
from slidesift.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    VahadaneNormalizer,
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


@pytest.mark.parametrize("method", ["reinhard", "macenko", "vahadane"])
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
    with pytest.raises(Exception, match="vahadane"):
        normalizer_from_dict({"method": "retinex"})
    assert normalizer_from_dict(None) is None
    assert background_hint(SiftSpec()) is not None
    assert background_hint(SiftSpec(background="peak-frequency")) is None


def _lasso_objective(od: np.ndarray, w: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
    r = od - c @ w
    return 0.5 * (r * r).sum(axis=1) + lam * c.sum(axis=1)


def test_two_stain_nonnegative_lasso_is_the_exact_minimum() -> None:
    rng = np.random.default_rng(0)
    w = np.abs(rng.normal(size=(2, 3)))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    od = np.abs(rng.normal(size=(300, 3))) * rng.uniform(0, 2, (300, 1))
    od[:20] *= -1  # pixels no stain explains
    for lam in (0.0, 0.1, 0.5):
        c = stain._nonneg_lasso_2(od, w, lam)
        assert (c >= 0).all()
        # the slow obvious reference: every point of a fine grid around the answer
        grid = np.linspace(-0.05, 0.05, 11)
        best = _lasso_objective(od, w, c, lam)
        for d0 in grid:
            for d1 in grid:
                other = np.maximum(c + np.array([d0, d1]), 0)
                assert (_lasso_objective(od, w, other, lam) >= best - 1e-12).all()


def test_vahadane_recovers_known_stain_vectors() -> None:
    """An image mixed from two known stains with sparse concentrations: the learned vectors
    lie within a few degrees of the true ones, haematoxylin first."""
    rng = np.random.default_rng(3)
    h = np.array([0.60, 0.72, 0.35])
    e = np.array([0.15, 0.85, 0.50])
    w = np.stack([h / np.linalg.norm(h), e / np.linalg.norm(e)])
    n = 120 * 120
    conc = np.zeros((n, 2))
    which = rng.integers(0, 3, n)  # mostly one stain per pixel, some both
    conc[which == 0, 0] = rng.uniform(0.3, 1.5, (which == 0).sum())
    conc[which == 1, 1] = rng.uniform(0.3, 1.2, (which == 1).sum())
    conc[which == 2] = rng.uniform(0.2, 0.8, ((which == 2).sum(), 2))
    od = conc @ w
    rgb = np.clip(240 * np.exp(-od) - 1, 0, 255).round().astype(np.uint8).reshape(120, 120, 3)
    fitted = VahadaneNormalizer.fit([rgb])
    got = np.asarray(fitted.he).T  # rows H, E
    for true, est in zip(w, got, strict=True):
        angle = np.degrees(np.arccos(np.clip(true @ est / np.linalg.norm(est), -1, 1)))
        assert angle < 5, (true, est)
    assert fitted.method == "vahadane" and fitted.to_dict()["lambda1"] == 0.1


def test_vahadane_moves_a_source_stain_towards_the_target(images: list[np.ndarray]) -> None:
    target = VahadaneNormalizer.fit([images[1]])
    out = target.apply(images[0])
    he_out, _ = target.stains(out)
    he_src, _ = target.stains(images[0])
    goal = np.asarray(target.he)
    assert np.abs(he_out - goal).sum() < np.abs(he_src - goal).sum()
