"""Train/val/test splits: the paper's subsets (METHOD.md section 7) and validation draws.

k subsets of a cohort, each splitting the slides into train and test with every label's
proportion kept, and the test slides of the minority label (the rarest subtype) different in
every subset, so that each of those slides is tested once. :func:`draw_validation` moves a
share of each label's training slides to ``val``: the slides epochs are chosen on, so that
``test`` is scored once, by the chosen epoch (METHOD.md section 8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from slidesift.errors import ConfigError
from slidesift.manifest import Manifest, ManifestEntry, write_manifest

__all__ = ["draw_validation", "make_subsets", "write_subsets"]


def _label(e: ManifestEntry) -> str:
    return e.label if e.label is not None else ""


def _test_counts(groups: dict[str, list[int]], minority: str, k: int, total: int) -> dict[str, int]:
    """Test slides per label: the minority's share capped at ``n_min // k`` (unique test
    slides), the rest of ``total`` split over the other labels in proportion to their size."""
    n_min = len(groups[minority])
    share = total * n_min / sum(len(v) for v in groups.values())
    counts = {minority: max(1, min(round(share), n_min // k, n_min - 1))}
    others = {lab: len(v) for lab, v in groups.items() if lab != minority}
    left = max(len(others), total - counts[minority])
    size = sum(others.values())
    exact = {lab: left * n / size for lab, n in others.items()} if size else {}
    floor = {lab: int(x) for lab, x in exact.items()}
    by_remainder = sorted(exact, key=lambda lab: (floor[lab] - exact[lab], lab))
    for lab in by_remainder[: left - sum(floor.values())]:
        floor[lab] += 1
    for lab, n in floor.items():
        if not 1 <= n < others[lab]:
            raise ConfigError(
                "test_fraction",
                total,
                f"label {lab or '(none)'!r} has {others[lab]} slide(s) and would get {n} test "
                "slides; each subset needs at least one train and one test slide of it",
            )
        counts[lab] = n
    return counts


def draw_validation(
    entries: Sequence[ManifestEntry], fraction: float, *, seed: int = 0
) -> list[ManifestEntry]:
    """Move ``fraction`` of each label's training slides to ``val``, drawn at random.

    Training slides are those with split ``train`` or none; each label with at least two of
    them gives ``max(1, round(fraction * n))`` (leaving at least one to train on); a label with
    one training slide gives none. Other rows are returned unchanged, in their order.

    Parameters
    ----------
    entries
        The manifest's rows.
    fraction
        Share of each label's training slides to validate on, in ``(0, 1)``.
    seed
        Seed of the draw (the same seed gives the same split).

    Returns
    -------
    list of ManifestEntry
        The rows with ``split`` set to ``train`` or ``val`` for the training slides.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError("val_fraction", fraction, "a fraction in (0, 1), e.g. 0.2")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if e.split in (None, "train"):
            groups.setdefault(_label(e), []).append(i)
    rng = np.random.default_rng([seed, 7])
    val: set[int] = set()
    for _, idx in sorted(groups.items()):
        if len(idx) >= 2:
            n = min(len(idx) - 1, max(1, round(fraction * len(idx))))
            val.update(int(i) for i in rng.choice(idx, size=n, replace=False))
    out = []
    for i, e in enumerate(entries):
        if e.split in (None, "train"):
            e = replace(e, split="val" if i in val else "train")
        out.append(e)
    return out


def make_subsets(
    entries: Sequence[ManifestEntry],
    k: int = 3,
    *,
    test_fraction: float = 18 / 47,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> list[Manifest]:
    """``k`` train/test assignments of ``entries`` keeping label proportions.

    Parameters
    ----------
    entries
        The cohort (any ``split`` they carry is replaced).
    k
        Number of subsets (paper: 3).
    test_fraction
        Share of the slides put in test (paper: 18 of 47). The minority label gets its share
        but at most ``n_minority // k`` (its test slides differ between subsets: the paper's
        4 of 12 MSI-H), and the other labels share the rest in proportion (14 of 35 MSI-L).
    val_fraction
        Share of each label's training slides moved to ``val`` (:func:`draw_validation`); 0
        keeps the paper's train/test only.
    seed
        Seed of the draws.

    Returns
    -------
    list of Manifest
        ``k`` manifests over the same entries with ``split`` set to ``train``, ``val`` or
        ``test``.

    Raises
    ------
    ConfigError
        Fewer minority slides than subsets, or a fraction that leaves a label without train
        or test slides.
    """
    if k < 1:
        raise ConfigError("k", k, "at least 1 subset (paper: 3)")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError("test_fraction", test_fraction, "a fraction in (0, 1), paper 18/47")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        groups.setdefault(_label(e), []).append(i)
    minority = min(groups, key=lambda lab: (len(groups[lab]), lab))
    n_min = len(groups[minority])
    if min(n_min // k, n_min - 1) < 1:
        raise ConfigError(
            "k",
            k,
            f"at most {n_min if n_min > 1 else 0}: the minority label {minority or '(none)'!r} has "
            f"{n_min} slide(s); every subset needs its own test slide of it and one to train on",
        )
    n_test = _test_counts(groups, minority, k, round(len(entries) * test_fraction))
    rng = np.random.default_rng(seed)
    minority_order = rng.permutation(groups[minority])
    subsets: list[Manifest] = []
    for j in range(k):
        test: set[int] = set()
        for lab, idx in sorted(groups.items()):
            if lab == minority:
                chunk = minority_order[j * n_test[lab] : (j + 1) * n_test[lab]]
            else:
                chunk = rng.choice(idx, size=n_test[lab], replace=False)
            test.update(int(i) for i in chunk)
        chosen = [replace(e, split="test" if i in test else "train") for i, e in enumerate(entries)]
        if val_fraction > 0:
            chosen = draw_validation(chosen, val_fraction, seed=seed + j)
        subsets.append(Manifest(None, tuple(chosen)))
    return subsets


def write_subsets(
    folder: str | os.PathLike[str], subsets: Sequence[Manifest], *, stem: str = "subset"
) -> list[Path]:
    """Write each subset as ``folder/<stem>_<j>.csv`` (paths relative to the folder)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    return [
        write_manifest(root / f"{stem}_{j}.csv", m.entries) for j, m in enumerate(subsets, start=1)
    ]
