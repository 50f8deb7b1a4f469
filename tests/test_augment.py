"""Training augmentations: rotations, HED stain jitter, scale jitter (slidesift.augment)."""

from __future__ import annotations

import numpy as np
import pytest

from slidesift.augment import (
    HED_FROM_RGB,
    RGB_FROM_HED,
    AugmentSpec,
    augment_tile,
    hed_jitter,
    scale_jitter,
)
from slidesift.errors import ConfigError
from slidesift.phantom import he_like_image


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    pixels, _ = he_like_image((96, 96), seed=2, tumor_fraction=0.5)
    return pixels


def test_stain_matrices_are_inverse_and_haematoxylin_absorbs_red_most() -> None:
    np.testing.assert_allclose(RGB_FROM_HED @ HED_FROM_RGB, np.eye(3), atol=1e-12)
    assert RGB_FROM_HED[0, 0] > RGB_FROM_HED[1, 0]  # H absorbs more red than E
    assert RGB_FROM_HED[1, 1] == RGB_FROM_HED[1].max()  # E absorbs green most


def hed_reference(tile: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel by pixel, as Tellez et al. write it."""
    out = np.empty_like(tile)
    for (y, x), _ in np.ndenumerate(tile[..., 0]):
        od = -np.log((tile[y, x].astype(float) + 1) / 256)
        s = np.linalg.solve(RGB_FROM_HED.T, od)  # od = s @ RGB_FROM_HED
        rgb = 256 * np.exp(-((s * a + b) @ RGB_FROM_HED)) - 1
        out[y, x] = np.clip(np.rint(rgb), 0, 255)
    return out


def test_hed_jitter_equals_the_per_pixel_formula(tile: np.ndarray) -> None:
    small = np.ascontiguousarray(tile[:12, :12])
    got = hed_jitter(small, 0.2, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0.8, 1.2, 3), rng.uniform(-0.2, 0.2, 3)
    np.testing.assert_array_equal(got, hed_reference(small, a, b))
    assert np.abs(got.astype(int) - small).max() > 3


def test_hed_jitter_with_no_strength_is_identity(tile: np.ndarray) -> None:
    np.testing.assert_array_equal(hed_jitter(tile, 0.0, np.random.default_rng(0)), tile)


def test_more_haematoxylin_darkens_the_nuclei_channel_only_through_the_stain(
    tile: np.ndarray,
) -> None:
    class Fixed:
        """An rng whose draws put +0.3 OD of haematoxylin and nothing else."""

        def uniform(self, lo: float, hi: float, n: int) -> np.ndarray:
            return np.ones(n) if lo > 0 else np.array([0.3, 0.0, 0.0])

    out = hed_jitter(tile, 0.5, Fixed())  # type: ignore[arg-type]
    drop = tile.astype(float).mean((0, 1)) - out.astype(float).mean((0, 1))
    assert (drop > 0).all()  # darker everywhere
    assert drop[0] > drop[2]  # more in red than in blue, as haematoxylin absorbs


def test_scale_jitter_keeps_shape_and_content_near_identity(tile: np.ndarray) -> None:
    for seed in range(8):
        out = scale_jitter(tile, 0.2, np.random.default_rng(seed))
        assert out.shape == tile.shape and out.dtype == np.uint8
    # a zoom range that rounds to the same side changes nothing
    np.testing.assert_array_equal(scale_jitter(tile, 0.001, np.random.default_rng(0)), tile)


def test_scale_jitter_zooms_a_known_pattern() -> None:
    stripes = np.zeros((96, 96, 3), np.uint8)
    stripes[:, ::8] = 255  # vertical lines every 8 px
    zoomed_in = [scale_jitter(stripes, 0.5, np.random.default_rng(s)) for s in range(20)]
    periods = []
    for z in zoomed_in:
        row = z[48, :, 0].astype(float)
        spectrum = np.abs(np.fft.rfft(row - row.mean()))
        periods.append(96 / (int(spectrum[1:].argmax()) + 1))
    assert min(periods) < 7.5 and max(periods) > 8.5  # both smaller and larger scales occur


def test_augment_tile_is_a_function_of_tile_and_seed(tile: np.ndarray) -> None:
    spec = AugmentSpec(rotations=True, hed=0.05, scale=0.1)
    a = augment_tile(tile, spec, 11)
    np.testing.assert_array_equal(a, augment_tile(tile, spec, 11))
    assert not np.array_equal(a, augment_tile(tile, spec, 12))
    assert augment_tile(tile, AugmentSpec(), 11) is tile


def test_rotations_alone_are_exact_quarter_turns(tile: np.ndarray) -> None:
    spec = AugmentSpec(rotations=True)
    turns = {np.rot90(tile, k).tobytes(): k for k in range(4)}
    seen = {turns[augment_tile(tile, spec, s).tobytes()] for s in range(16)}
    assert seen == {0, 1, 2, 3}


def test_spec_validates_and_round_trips() -> None:
    with pytest.raises(ConfigError):
        AugmentSpec(hed=-0.1)
    with pytest.raises(ConfigError):
        AugmentSpec(scale=1.5)
    spec = AugmentSpec(True, 0.05, 0.1)
    assert AugmentSpec.from_dict(spec.to_dict()) == spec
    assert AugmentSpec.from_dict(None) == AugmentSpec()
    assert spec.describe() == "rot90 + HED 0.05 + scale 0.1"
    assert AugmentSpec().describe() == "none" and not AugmentSpec().active
