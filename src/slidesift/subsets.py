"""Train/test subsets as the paper made them (METHOD.md section 7).

k subsets of a cohort, each splitting the slides into train and test with every label's
proportion kept, and the test slides of the minority label (the rarest subtype) different in
every subset, so that each of those slides is tested once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from slidesift.errors import ConfigError
from slidesift.manifest import Manifest, ManifestEntry, write_manifest

__all__ = ["make_subsets", "write_subsets"]


def _label(e: ManifestEntry) -> str:
    return e.label if e.label is not None else ""


def make_subsets(
    entries: Sequence[ManifestEntry],
    k: int = 3,
    *,
    test_fraction: float = 18 / 47,
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
        Share of each label's slides put in test (paper: 18 of 47).
    seed
        Seed of the draws.

    Returns
    -------
    list of Manifest
        ``k`` manifests over the same entries with ``split`` set to ``train`` or ``test``.

    Raises
    ------
    ConfigError
        Too few minority slides to give every subset its own test slides, or a fraction that
        leaves a label without train or test slides.
    """
    if k < 1:
        raise ConfigError("k", k, "at least 1 subset (paper: 3)")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError("test_fraction", test_fraction, "a fraction in (0, 1), paper 18/47")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        groups.setdefault(_label(e), []).append(i)
    n_test = {lab: max(1, round(len(idx) * test_fraction)) for lab, idx in groups.items()}
    for lab, idx in groups.items():
        if n_test[lab] >= len(idx):
            raise ConfigError(
                "test_fraction",
                test_fraction,
                f"label {lab or '(none)'!r} has {len(idx)} slide(s); each subset needs at least "
                "one train and one test slide of it",
            )
    minority = min(groups, key=lambda lab: (len(groups[lab]), lab))
    need = k * n_test[minority]
    if need > len(groups[minority]):
        raise ConfigError(
            "k",
            k,
            f"at most {len(groups[minority]) // n_test[minority]}: the minority label "
            f"{minority or '(none)'!r} has {len(groups[minority])} slides and each subset tests "
            f"{n_test[minority]} of them, all different",
        )
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
        chosen = tuple(
            replace(e, split="test" if i in test else "train") for i, e in enumerate(entries)
        )
        subsets.append(Manifest(None, chosen))
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
