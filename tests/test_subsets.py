"""Train/test subsets: proportions kept, minority test slides unique, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from slidesift.errors import ConfigError
from slidesift.manifest import ManifestEntry, read_manifest
from slidesift.subsets import draw_validation, make_subsets, write_subsets


def _cohort(n_high: int = 12, n_low: int = 35) -> list[ManifestEntry]:
    labels = ["msi-h"] * n_high + ["msi-l"] * n_low
    return [
        ManifestEntry(Path(f"/s/{i:02d}.svs"), Path(f"/s/{i:02d}.tif"), lab)
        for i, lab in enumerate(labels)
    ]


def test_paper_protocol_three_subsets_of_29_and_18() -> None:
    entries = _cohort()
    subsets = make_subsets(entries, 3, seed=1)
    minority_tests = []
    for m in subsets:
        test = m.split("test")
        assert len(test) == 18 and len(m.split("train")) == 29
        assert sum(e.label == "msi-h" for e in test) == 4  # paper: 4 MSI-H + 14 MSI-L
        assert sum(e.label == "msi-h" for e in m.split("train")) == 8
        assert {e.slide for e in m} == {e.slide for e in entries}
        minority_tests.append({e.slide for e in test if e.label == "msi-h"})
    a, b, c = minority_tests
    assert not (a & b) and not (a & c) and not (b & c)
    assert [m.entries for m in make_subsets(entries, 3, seed=1)] == [m.entries for m in subsets]


def test_too_many_subsets_for_the_minority_are_refused() -> None:
    with pytest.raises(ConfigError, match="at most 2"):
        make_subsets(_cohort(2, 30), 3)
    with pytest.raises(ConfigError, match="at least one train and one test"):
        make_subsets(_cohort(3, 2), 1, test_fraction=0.9)


def test_written_subsets_read_back(tmp_path: Path) -> None:
    entries = _cohort(6, 12)
    paths = write_subsets(tmp_path, make_subsets(entries, 2))
    assert [p.name for p in paths] == ["subset_1.csv", "subset_2.csv"]
    back = read_manifest(paths[0], check_files=False)
    assert len(back) == 18 and {e.split for e in back} == {"train", "test"}


def test_validation_is_drawn_per_label_from_training_rows_only() -> None:
    entries = _cohort(6, 10)
    entries[0] = replace(entries[0], split="test")
    entries[7] = replace(entries[7], split="test")
    drawn = draw_validation(entries, 0.25, seed=3)
    assert [e.slide for e in drawn] == [e.slide for e in entries]  # order kept
    assert drawn[0].split == drawn[7].split == "test"  # test rows untouched
    val = [e for e in drawn if e.split == "val"]
    # 5 msi-h and 9 msi-l training slides: round(0.25 * n) of each
    assert sum(e.label == "msi-h" for e in val) == 1 and sum(e.label == "msi-l" for e in val) == 2
    assert all(e.split in ("train", "val", "test") for e in drawn)
    assert draw_validation(entries, 0.25, seed=3) == drawn
    assert draw_validation(entries, 0.25, seed=4) != drawn
    # a label with one training slide keeps it for training; fractions out of (0, 1) refused
    lone = [ManifestEntry(Path("/s/a.svs"), None, "x"), *_cohort(0, 3)]
    assert draw_validation(lone, 0.9, seed=0)[0].split == "train"
    assert sum(e.split == "val" for e in draw_validation(lone, 0.9, seed=0)) == 2
    with pytest.raises(ConfigError, match="val_fraction"):
        draw_validation(entries, 1.0)


def test_subsets_with_a_validation_split(tmp_path: Path) -> None:
    subsets = make_subsets(_cohort(), 3, val_fraction=0.2, seed=1)
    for m in subsets:
        assert len(m.split("test")) == 18  # the paper's test sets, unchanged
        assert len(m.split("val")) + len(m.split("train")) == 29 and len(m.split("val")) == 6
        assert {e.label for e in m.split("val")} == {"msi-h", "msi-l"}
    back = read_manifest(write_subsets(tmp_path, subsets[:1])[0], check_files=False)
    assert [e.split for e in back] == [e.split for e in subsets[0]]
