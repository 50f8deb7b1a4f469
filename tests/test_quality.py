"""The method works: a model trained by slidesift finds the tumor of held-out phantom slides.

These tests guard the whole chain (tile labels, training, probabilities, the sift, assembly,
scoring) with thresholds a broken chain cannot meet. The thresholds are what the session's
learned model (``conftest.learned``: HED jitter 0.05) measured on the 2-core CI VM minus a
margin for the float differences between CPUs and thread counts (AMX, AVX-512, AVX2, 1 or 2
threads give slightly different training runs); two runs on an AMD EPYC:

==============================  ============  ============  =========
figure                          2 threads     1 thread      asserted
==============================  ============  ============  =========
held-out raw-tile accuracy      0.906         0.955         >= 0.85
held-out raw balanced accuracy  0.930         0.963         >= 0.88
per-slide Jaccard               0.741, 0.670  0.721, 0.744  >= 0.40
per-slide recall                0.762, 0.912  0.727, 0.894  >= 0.45
mean Jaccard                    0.705         0.732         >= 0.55
mean recall                     0.837         0.811         >= 0.60
mean Jaccard - all tissue       +0.40         +0.42         >= +0.30
mean Jaccard / tile oracle      0.87          0.90          >= 0.70
==============================  ============  ============  =========

(torch 2.13.0 CPU, 2026-12-03; default segmentation: overlap 0.8, mean assembly. The epoch is
chosen by held-out balanced accuracy; its plain accuracy ranged 0.86-0.95 over the epochs of
one run, hence the wider margin on it.)
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import Learned
from slidesift.ceilings import all_tissue_mask, sift_ceiling, tile_oracle_mask
from slidesift.checkpoint import load_checkpoint
from slidesift.evaluate import read_slide
from slidesift.metrics import confusion, scores
from slidesift.segment import SegmentSpec, segment

pytestmark = pytest.mark.learn


def _log(learned: Learned) -> list[dict[str, str]]:
    return list(csv.DictReader((learned.run / "log.csv").open()))


def test_the_learned_model_classifies_raw_held_out_tiles(learned: Learned) -> None:
    rows = _log(learned)
    best = next(r for r in rows if learned.best.name == f"epoch_{int(r['epoch']):03d}.safetensors")
    assert float(best["holdout_raw_accuracy"]) >= 0.85
    assert float(best["holdout_raw_balanced_accuracy"]) >= 0.88
    assert int(best["holdout_raw_tiles"]) >= 300
    # training made it better than its first epoch's coin flip
    assert (
        float(best["holdout_raw_balanced_accuracy"])
        > float(rows[0]["holdout_raw_balanced_accuracy"])
        or best is rows[0]
    )


def test_checkpoint_records_the_training_slides_scale(learned: Learned) -> None:
    from slidesift.io.slide import open_slide
    from slidesift.manifest import read_manifest

    ck = load_checkpoint(learned.best)
    expected_um, expected_l0 = [], []
    for e in read_manifest(learned.manifest).split("train"):
        with open_slide(e.slide) as s:
            w, h = s.dimensions
            expected_um.append(s.mpp[0] * max(w, h) / ck.downsample.longest)
            expected_l0.append(max(w, h))
    scale = ck.meta["training_scale"]
    assert scale["um_per_px"] == pytest.approx(float(np.median(expected_um)), rel=2e-3)
    assert scale["l0_longest"] == int(np.median(expected_l0))
    assert scale["slides_without_mpp"] == 0


def test_logged_raw_accuracy_is_measured_on_the_raw_pixels(
    learned: Learned, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Recompute the best epoch's held-out raw-tile accuracy from the slides themselves: it is
    the log's figure; the same tiles with the other class blacked out score differently."""
    from slidesift.cache import ThumbCache
    from slidesift.loading import load_slides
    from slidesift.tile_truth import SEGMENT_OVERLAP, classify_raw_tiles, raw_tiles
    from slidesift.tiles import stride_for_overlap
    from slidesift.torch_inference import TorchTiles

    ck = load_checkpoint(learned.best)
    cache = ThumbCache(tmp_path_factory.mktemp("thumbs"))
    slides = load_slides(learned.test_entries, longest=ck.downsample.longest, cache=cache)
    rows = _log(learned)
    logged = next(r for r in rows if f"epoch_{int(r['epoch']):03d}" == learned.best.stem)
    t = ck.tile
    tiles = raw_tiles(
        [(np.asarray(s.pixels), np.asarray(s.tumor), 1) for s in slides],
        tile=t, stride=stride_for_overlap(t, SEGMENT_OVERLAP), spec=ck.sift, rails=ck.rails,
    )  # fmt: skip
    assert len(tiles) == int(logged["holdout_raw_tiles"])
    raw = [np.asarray(s.pixels) for s in slides]
    acc = float((classify_raw_tiles(tiles, raw, TorchTiles(ck), tile=t) == tiles.label).mean())
    assert acc == pytest.approx(float(logged["holdout_raw_accuracy"]), abs=1.5 / len(tiles))
    masked = [np.where(np.asarray(s.tumor)[..., None], np.asarray(s.pixels), 0).astype(np.uint8)
              for s in slides]  # fmt: skip
    other = classify_raw_tiles(tiles, masked, TorchTiles(ck), tile=t)
    assert abs(float((other == tiles.label).mean()) - acc) > 2 / len(tiles)


@pytest.fixture(scope="module")
def outcomes(learned: Learned) -> list[dict[str, float]]:
    """Per test slide: the model's scores at the default grid, the oracle's and the baseline's."""
    ck = load_checkpoint(learned.best)
    spec = SegmentSpec()  # what a user runs: overlap 0.8, mean assembly at 0.5
    out = []
    for entry in learned.test_entries:
        thumb, truth = read_slide(entry, ck.downsample)
        assert truth is not None and truth.any()
        r = segment(entry.slide, ck, spec, thumb=thumb)
        oracle = tile_oracle_mask(r.pixels, truth, r.grid, r.keep, ck.sift)
        model_s = scores(confusion(r.mask, truth))
        out.append(
            {
                "jaccard": model_s.jaccard,
                "recall": model_s.recall,
                "precision": model_s.precision,
                "oracle": scores(confusion(oracle, truth)).jaccard,
                "all_tissue": scores(confusion(all_tissue_mask(r.pixels, ck.sift), truth)).jaccard,
                "sift_ceiling": sift_ceiling(r.grid, r.keep, truth),
            }
        )
    return out


def test_masks_find_the_tumor_of_every_test_slide(outcomes: list[dict[str, float]]) -> None:
    assert len(outcomes) == 2
    for o in outcomes:
        assert o["jaccard"] >= 0.40, o
        assert o["recall"] >= 0.45, o
    assert np.mean([o["jaccard"] for o in outcomes]) >= 0.55
    assert np.mean([o["recall"] for o in outcomes]) >= 0.60


def test_masks_beat_all_tissue_and_come_near_the_tile_oracle(
    outcomes: list[dict[str, float]],
) -> None:
    model = np.mean([o["jaccard"] for o in outcomes])
    baseline = np.mean([o["all_tissue"] for o in outcomes])
    oracle = np.mean([o["oracle"] for o in outcomes])
    assert model >= baseline + 0.30
    assert model >= 0.70 * oracle
    # the ceilings are themselves sane: the sift keeps most tumor, the oracle finds it
    assert all(o["sift_ceiling"] >= 0.8 and o["oracle"] >= 0.6 for o in outcomes)
