"""From a cohort manifest to training and held-out tile sets, in one call.

    manifest --train rows--> load (cache) --> [fit + apply stain normaliser] --> build_tileset
             --val rows----> load (cache) --> [apply the same normaliser]    --> build_tileset
             (test rows when there is no val)          (training rails, overlaps and classes)

Rows with no split count as training slides. The held-out set is the ``val`` rows (drawn from
the training rows with ``val_fraction`` when the manifest has none), else the ``test`` rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidesift.cache import ThumbCache
from slidesift.dataset import build_tileset
from slidesift.errors import ConfigError, DatasetError
from slidesift.loading import load_slides, normalize_slides
from slidesift.manifest import Manifest, ManifestEntry, read_manifest
from slidesift.stain import Method, StainNormalizer, fit_normalizer, normalizer_from_dict
from slidesift.subsets import draw_validation
from slidesift.tileset import SlideImage, TileSet, TileSetSpec

__all__ = ["Prepared", "PreparedSlides", "prepare_slides", "prepare_tilesets"]


@dataclass(frozen=True)
class Prepared:
    """Tile sets ready to train on.

    Attributes
    ----------
    train
        The training tile set (rails fitted on its tumor tiles).
    holdout
        The test slides' tiles, sifted by the training rails, or ``None`` without test rows.
    normalization
        The stain normaliser's parameters (``None`` when not normalising).
    manifest
        The manifest the sets came from (with the drawn ``val`` rows, if any).
    holdout_split
        ``val`` or ``test``: the rows the held-out set was cut from (``None``: no held-out).
    """

    train: TileSet
    holdout: TileSet | None
    normalization: dict[str, Any] | None
    manifest: Manifest
    holdout_split: str | None = None


@dataclass(frozen=True)
class PreparedSlides:
    """A manifest's slides read at N (and stain-normalised), before any tiling.

    Attributes
    ----------
    train, holdout
        The training slides, and the held-out slides (``val`` rows, else ``test``; empty when
        not asked for or when the manifest has neither).
    normalizer
        The fitted stain normaliser, or ``None``.
    manifest
        The manifest (with the drawn ``val`` rows, if any).
    holdout_split
        ``val`` or ``test``: the rows the held-out slides are.
    """

    train: list[SlideImage]
    holdout: list[SlideImage]
    normalizer: StainNormalizer | None
    manifest: Manifest
    holdout_split: str


def prepare_slides(
    manifest: Manifest | str | os.PathLike[str],
    *,
    longest: int | None,
    mpp: float | None,
    normalize: Method | None = None,
    normalization: dict[str, Any] | None = None,
    stain_reference: np.ndarray | None = None,
    holdout: bool = True,
    val_fraction: float | None = None,
    seed: int = 0,
    cache: ThumbCache | None = None,
    on_slide: Callable[[ManifestEntry], None] | None = None,
) -> PreparedSlides:
    """Read a manifest's training (and held-out) slides at N, stain-normalised when asked.

    The options are :func:`prepare_tilesets`'s; ``longest``/``mpp`` are the downsample target.
    Any model's training starts here (the lightweight CNN's tile sets, the U-Net's tiles).
    """
    cache = cache or ThumbCache()
    m = manifest if isinstance(manifest, Manifest) else read_manifest(Path(manifest))
    if val_fraction is not None:
        if m.split("val"):
            raise ConfigError(
                "val_fraction", val_fraction,
                f"none: the manifest already has {len(m.split('val'))} val rows (use them, or "
                "clear their split to draw anew)",
            )  # fmt: skip
        m = Manifest(m.path, tuple(draw_validation(list(m), val_fraction, seed=seed)))
    train_rows = [e for e in m if e.split in (None, "train")]
    held_split = "val" if m.split("val") else "test"
    test_rows = m.split(held_split) if holdout else []
    if not train_rows:
        raise DatasetError(
            f"the manifest has no training rows (split empty or 'train') among {len(m)} slides"
        )

    def load(rows: list[ManifestEntry]) -> list[SlideImage]:
        return load_slides(rows, longest=longest, mpp=mpp, cache=cache, on_slide=on_slide)

    train_slides, test_slides = load(train_rows), load(test_rows)
    normalizer: StainNormalizer | None = normalizer_from_dict(normalization)
    if normalizer is None and normalize is not None:
        images = (
            [stain_reference]
            if stain_reference is not None
            else [np.asarray(s.pixels) for s in train_slides]
        )
        normalizer = fit_normalizer(normalize, images)
    if normalizer is not None:
        train_slides = normalize_slides(train_slides, normalizer, cache=cache)
        test_slides = normalize_slides(test_slides, normalizer, cache=cache)
    return PreparedSlides(train_slides, test_slides, normalizer, m, held_split)


def prepare_tilesets(
    manifest: Manifest | str | os.PathLike[str],
    spec: TileSetSpec | None = None,
    *,
    normalize: Method | None = None,
    normalization: dict[str, Any] | None = None,
    stain_reference: np.ndarray | None = None,
    holdout: bool = True,
    val_fraction: float | None = None,
    seed: int = 0,
    cache: ThumbCache | None = None,
    on_slide: Callable[[ManifestEntry], None] | None = None,
) -> Prepared:
    """Load a manifest's slides and cut the training (and held-out) tile sets.

    Parameters
    ----------
    manifest
        A :class:`Manifest` or the path of its CSV.
    spec
        Tile set options.
    normalize
        Stain normalisation to fit and apply (``reinhard``, ``macenko`` or ``vahadane``), or
        ``None``.
    normalization
        Parameters of an already fitted normaliser (a resumed run); wins over ``normalize``.
    stain_reference
        ``(H, W, 3)`` uint8 image whose stain is the target; default: the training slides.
    holdout
        Also build the held-out tile set (``val`` rows, else ``test`` rows).
    val_fraction
        Draw this share of each label's training slides as ``val``
        (:func:`slidesift.subsets.draw_validation`); the manifest must have no ``val`` rows.
    seed
        Seed of that draw.
    cache
        Thumbnail cache (default folder when ``None``).
    on_slide
        Called after each slide is read.
    """
    spec = spec or TileSetSpec()
    slides = prepare_slides(
        manifest, longest=spec.longest, mpp=spec.mpp, normalize=normalize,
        normalization=normalization, stain_reference=stain_reference, holdout=holdout,
        val_fraction=val_fraction, seed=seed, cache=cache, on_slide=on_slide,
    )  # fmt: skip
    train_slides, test_slides, normalizer = slides.train, slides.holdout, slides.normalizer
    m, held_split = slides.manifest, slides.holdout_split
    train_set = build_tileset(train_slides, spec)
    holdout_set = None
    if test_slides:
        holdout_set = build_tileset(
            test_slides,
            spec,
            rails=train_set.rails,
            overlaps=train_set.overlaps,
            classes=train_set.classes,
        )
    return Prepared(
        train_set,
        holdout_set,
        normalizer.to_dict() if normalizer is not None else None,
        m,
        held_split if holdout_set is not None else None,
    )
