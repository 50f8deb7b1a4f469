"""The reference points beside a score: tile oracle, all tissue, sift ceiling."""

from __future__ import annotations

import json

import numpy as np

from slidesift.ceilings import (
    Ceilings,
    all_tissue_mask,
    ceilings,
    sift_ceiling,
    tile_oracle_mask,
)
from slidesift.cohort_task import outcome_doc, outcome_from_doc
from slidesift.evaluate import SlideOutcome, summary
from slidesift.metrics import confusion, scores
from slidesift.results import outcomes_csv
from slidesift.sift import SiftSpec, to_gray
from slidesift.tiles import TileGrid


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, TileGrid, np.ndarray]:
    pixels = rng.integers(20, 230, (70, 90, 3), dtype=np.uint8)
    pixels[:, :20] = 250  # glass
    truth = np.zeros((70, 90), bool)
    truth[10:50, 30:75] = True
    grid = TileGrid.from_stride((70, 90), tile=20, stride=10)
    keep = rng.random(grid.grid_shape) < 0.7
    return pixels, truth, grid, keep


def test_oracle_is_the_assembly_of_tiles_labelled_by_majority_truth(
    rng: np.random.Generator,
) -> None:
    pixels, truth, grid, keep = _case(rng)
    gray = to_gray(pixels)
    tissue = (gray >= 15) & (gray <= 235)
    count = np.zeros(truth.shape)
    total = np.zeros(truth.shape)
    hit = np.zeros(truth.shape, bool)
    for r in range(grid.n_rows):  # paint every tile, pixel by pixel
        for c in range(grid.n_cols):
            ys, xs = slice(r * 10, r * 10 + 20), slice(c * 10, c * 10 + 20)
            n = tissue[ys, xs].sum()
            tumor = n > 0 and (tissue[ys, xs] & truth[ys, xs]).sum() / n >= 0.5
            count[ys, xs] += 1
            if keep[r, c] and tumor:
                total[ys, xs] += 1
                hit[ys, xs] = True
    mean = tile_oracle_mask(pixels, truth, grid, keep, SiftSpec())
    np.testing.assert_array_equal(mean, (count > 0) & (total > 0.5 * count))
    union = tile_oracle_mask(pixels, truth, grid, keep, SiftSpec(), mode="dominant")
    np.testing.assert_array_equal(union, hit)


def test_all_tissue_and_sift_ceiling(rng: np.random.Generator) -> None:
    pixels, truth, grid, keep = _case(rng)
    gray = to_gray(pixels)
    np.testing.assert_array_equal(all_tissue_mask(pixels, SiftSpec()), (gray >= 15) & (gray <= 235))
    covered = np.zeros(truth.shape, bool)
    for r, c in zip(*np.nonzero(keep), strict=True):
        covered[r * 10 : r * 10 + 20, c * 10 : c * 10 + 20] = True
    assert sift_ceiling(grid, keep, truth) == (covered & truth).sum() / truth.sum()
    assert sift_ceiling(grid, np.zeros_like(keep), truth) == 0.0
    assert np.isnan(sift_ceiling(grid, keep, np.zeros_like(truth)))


def test_ceilings_reach_scores_csv_the_summary_and_the_cohort_record(
    rng: np.random.Generator,
) -> None:
    pixels, truth, grid, keep = _case(rng)
    c = ceilings(pixels, truth, grid, keep, SiftSpec())
    oracle = tile_oracle_mask(pixels, truth, grid, keep, SiftSpec())
    assert c.oracle == scores(confusion(oracle, truth))
    s = scores(confusion(np.zeros_like(truth), truth))
    with_c = SlideOutcome("a", "tumor", None, {}, s, 3, "x", {}, None, c)
    without = SlideOutcome("b", None, None, {}, None, 0, "x", {})
    lines = outcomes_csv([with_c, without]).splitlines()
    header = lines[0].split(",")
    assert header[-5:] == ["oracle_jaccard", "oracle_precision", "oracle_recall",
                           "all_tissue_jaccard", "sift_ceiling"]  # fmt: skip
    row = dict(zip(header, lines[1].split(","), strict=True))
    assert float(row["oracle_jaccard"]) == round(c.oracle.jaccard, 6)
    assert float(row["sift_ceiling"]) == round(c.sift_ceiling, 6)
    assert lines[2].endswith(",,,,,")
    f = summary([with_c, without], ("non-tumor", "tumor"))
    assert f["mean_oracle_jaccard"] == c.oracle.jaccard
    assert f["mean_all_tissue_jaccard"] == c.all_tissue.jaccard
    assert f["mean_sift_ceiling"] == c.sift_ceiling
    # a Dask worker's outcome.json keeps them
    back = outcome_from_doc(json.loads(json.dumps(outcome_doc(with_c))))
    assert isinstance(back.ceilings, Ceilings) and back.ceilings == c
