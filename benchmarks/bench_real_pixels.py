"""The whole pipeline on real pixels: CAMELYON16 patches laid out as mosaic slides.

Real H&E patches with known labels (the CAMELYON16 sample patches of DIDSR's
DeepLearningCamelyon_II, ``data/sample_patches_256``, CC0: 256 px at about 0.24 um/px, tumor
patches from inside lesion annotations, normal ones from outside) become mosaic slides with an
exact truth mask (:mod:`slidesift.mosaic`). The split is held out by source slide, as a new
centre would be:

* test: every patch of ``--test-source`` (default ``tumor_073``, from UMC Utrecht, a bluer
  stain than the Radboud slides the others come from), two mosaics;
* val: a stratified quarter of the remaining patches, one mosaic (in two arrangements);
* train: the rest, in three mosaics, each laid out twice (the same pixels in new neighbourhoods).

For each condition (tile source, stain normalisation, augmentation), the benchmark trains the
lightweight CNN (T 96 at the patches' resolution), chooses the epoch on val
(:func:`slidesift.select.select_epoch`), and evaluates that epoch once on test, beside the two
references every evaluation carries: the all-tissue baseline and the tile-oracle ceiling.
Goal (issue 12): model Jaccard at least 90% of the oracle's and at least 0.15 above all tissue.

The same comparison runs on a PAIP-like phantom cohort with ``--phantom`` (10 slides of 3000-3200
px at 1 um/px, read at N 1000: 4 train, 2 val, 4 test), so that each recipe is measured on both.

Run::

    .venv/bin/python benchmarks/bench_real_pixels.py PATCH_FOLDER [--conditions NAME,...]
    .venv/bin/python benchmarks/bench_real_pixels.py --phantom [--conditions NAME,...]

``PATCH_FOLDER`` holds ``tumor/*.png`` and ``normal/*.png``. Each condition's result is kept in
``--work`` and reused, so an interrupted run resumes; the table and ``bench-results/
real_pixels.json`` cover every condition done so far.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _common import report
from slidesift.augment import AugmentSpec
from slidesift.cache import ThumbCache
from slidesift.checkpoint import load_checkpoint
from slidesift.evaluate import evaluate_slides, summary
from slidesift.manifest import ManifestEntry, read_manifest, write_manifest
from slidesift.mosaic import Patch, build_mosaic, read_patch_folder, write_mosaic
from slidesift.prepare import prepare_tilesets
from slidesift.select import select_epoch
from slidesift.tileset import TileSetSpec
from slidesift.train import train
from slidesift.train_spec import TrainSpec

#: The patches' resolution (RUMC slides; tumor_073 is UMC Utrecht's, about 0.226).
PATCH_MPP = {"tumor_073": 0.226}
DEFAULT_MPP = 0.243
TILE = 96
COLUMNS = [
    "condition", "epoch (val)", "Jaccard", "precision", "recall", "oracle J", "all-tissue J",
    "J / oracle", "J - all tissue", "goal met",
]  # fmt: skip
EPOCHS = 8
LR = 5e-4
PHANTOM_EPOCHS = 5
PHANTOM_N = 1000


@dataclass(frozen=True)
class Condition:
    """One training recipe of the comparison."""

    name: str
    source: str = "raw"
    normalize: str | None = None
    augment: AugmentSpec = field(default_factory=AugmentSpec)


HED = AugmentSpec(hed=0.05)
ALL_AUG = AugmentSpec(rotations=True, hed=0.05, scale=0.1)
HED_STRONG = AugmentSpec(hed=0.2)
ALL_STRONG = AugmentSpec(rotations=True, hed=0.2, scale=0.1)
CONDITIONS = {
    c.name: c
    for c in [
        Condition("masked", source="masked"),
        Condition("raw"),
        Condition("masked+reinhard", source="masked", normalize="reinhard"),
        Condition("raw+reinhard", normalize="reinhard"),
        Condition("raw+macenko", normalize="macenko"),
        Condition("raw+vahadane", normalize="vahadane"),
        Condition("raw+rot90", augment=AugmentSpec(rotations=True)),
        Condition("raw+hed", augment=HED),
        Condition("raw+scale", augment=AugmentSpec(scale=0.1)),
        Condition("raw+all-aug", augment=ALL_AUG),
        Condition("raw+reinhard+hed", normalize="reinhard", augment=HED),
        Condition("raw+reinhard+all-aug", normalize="reinhard", augment=ALL_AUG),
        Condition("raw+vahadane+all-aug", normalize="vahadane", augment=ALL_AUG),
        Condition("raw+hed-strong", augment=HED_STRONG),
        Condition("raw+reinhard+hed-strong", normalize="reinhard", augment=HED_STRONG),
        Condition("raw+macenko+hed-strong", normalize="macenko", augment=HED_STRONG),
        Condition("raw+vahadane+hed-strong", normalize="vahadane", augment=HED_STRONG),
        Condition("raw+reinhard+all-strong", normalize="reinhard", augment=ALL_STRONG),
        Condition("raw+vahadane+all-strong", normalize="vahadane", augment=ALL_STRONG),
        Condition("masked+reinhard+hed-strong", "masked", "reinhard", HED_STRONG),
        Condition(
            "masked+reinhard+all-aug", source="masked", normalize="reinhard", augment=ALL_AUG
        ),
    ]
}


def _groups(items: list[Patch], k: int, rng: np.random.Generator) -> list[list[Patch]]:
    """``items`` dealt into ``k`` groups, each class spread evenly."""
    groups: list[list[Patch]] = [[] for _ in range(k)]
    for tumor in (True, False):
        cls = [p for p in items if p.tumor == tumor]
        for j, i in enumerate(rng.permutation(len(cls))):
            groups[j % k].append(cls[int(i)])
    return groups


def make_cohort(patches: list[Patch], out: Path, test_source: str, seed: int) -> Path:
    """Write the mosaic cohort (slides, masks, manifest.csv) into ``out``; returns the manifest."""
    manifest = out / "manifest.csv"
    if manifest.exists():
        return manifest
    rng = np.random.default_rng(seed)
    test = [p for p in patches if p.source == test_source]
    pool = [p for p in patches if p.source != test_source]
    if not test or not any(p.tumor for p in test):
        raise SystemExit(f"no tumor patches of {test_source!r} to test on")
    val_mask = np.zeros(len(pool), bool)
    for tumor in (True, False):
        idx = [i for i, p in enumerate(pool) if p.tumor == tumor]
        val_mask[rng.choice(idx, size=max(1, round(len(idx) / 4)), replace=False)] = True
    val = [p for p, v in zip(pool, val_mask, strict=True) if v]
    training = [p for p, v in zip(pool, val_mask, strict=True) if not v]
    plan: list[tuple[str, list[Patch], str]] = []
    for g, group in enumerate(_groups(training, 3, rng)):
        plan += [(f"train_{g}{r}", group, "train") for r in "ab"]
    plan += [(f"val_0{r}", val, "val") for r in "ab"]
    plan += [(f"test_{g}", group, "test") for g, group in enumerate(_groups(test, 2, rng))]
    entries = []
    for k, (name, group, split) in enumerate(plan):
        mpp = PATCH_MPP.get(group[0].source, DEFAULT_MPP)
        mosaic = build_mosaic(group, seed=seed * 1000 + k)
        slide, mask = write_mosaic(
            mosaic, out / "slides" / f"{name}.tif", out / "masks" / f"{name}_mask.tif", mpp=mpp
        )
        entries.append(ManifestEntry(slide, mask, "tumor", split))
    write_manifest(manifest, entries)
    sources = {s: sorted({p.source for p in g}) for s, g in
               (("train", training), ("val", val), ("test", test))}  # fmt: skip
    (out / "cohort.json").write_text(json.dumps({
        "patches": {s: {"tumor": sum(p.tumor for p in g), "normal": sum(not p.tumor for p in g)}
                    for s, g in (("train", training), ("val", val), ("test", test))},
        "sources": sources, "mosaics": [n for n, _, _ in plan],
    }, indent=1) + "\n")  # fmt: skip
    return manifest


def make_phantom_cohort(out: Path, seed: int) -> Path:
    """A PAIP-like phantom cohort with a val split (see the module docs); returns the manifest."""
    from slidesift.phantom.cohort import CohortSpec
    from slidesift.phantom.cohort import make_cohort as make_phantoms
    from slidesift.subsets import draw_validation

    manifest = out / "manifest_val.csv"
    if manifest.exists():
        return manifest
    spec = CohortSpec(count=10, longest=(3000, 3200), mpp=1.0, seed=seed + 11, artifacts=0.0)
    made = make_phantoms(spec, out)
    write_manifest(manifest, draw_validation(list(made), 1 / 3, seed=seed))
    rows = read_manifest(manifest)
    splits = {s: len(rows.split(s)) for s in ("train", "val", "test")}
    cohort = {"spec": "CohortSpec(count=10, longest=(3000, 3200), mpp=1.0)", "splits": splits}
    (out / "bench_cohort.json").write_text(json.dumps(cohort, indent=1) + "\n")
    return manifest


def run_condition(
    cond: Condition, manifest: Path, work: Path, epochs: int, downsample: dict[str, Any]
) -> dict[str, Any]:
    """Train, select on val, evaluate on test; the result as plain values (cached in work)."""
    done = work / "result.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    spec = TileSetSpec(tile=TILE, source=cond.source, **downsample)  # type: ignore[arg-type]
    started = time.perf_counter()
    prepared = prepare_tilesets(
        manifest,
        spec,
        normalize=cond.normalize,
        cache=ThumbCache(work.parent / "thumbs"),  # type: ignore[arg-type]
    )
    resume = (work / "run" / "run.json").exists()  # an interrupted run continues
    result = train(
        prepared.train, work / "run",
        TrainSpec(epochs=epochs, lr=LR, augment=cond.augment), holdout=prepared.holdout,
        normalization=prepared.normalization, resume=resume,
    )  # fmt: skip
    trained = time.perf_counter() - started
    entries = read_manifest(manifest)
    selection = select_epoch(work / "run", entries.split("val"))
    if selection.best is None:
        raise SystemExit(f"{cond.name}: no epoch qualified on val")
    ck = load_checkpoint(selection.best.path)
    outcomes = evaluate_slides(entries.split("test"), ck)
    figures = summary(outcomes, ck.classes)
    per_slide = [
        {
            "slide": o.name,
            "jaccard": o.scores.jaccard if o.scores else None,
            "precision": o.scores.precision if o.scores else None,
            "recall": o.scores.recall if o.scores else None,
            "oracle_jaccard": o.ceilings.oracle.jaccard if o.ceilings else None,
            "all_tissue_jaccard": o.ceilings.all_tissue.jaccard if o.ceilings else None,
            "sift_ceiling": o.ceilings.sift_ceiling if o.ceilings else None,
        }
        for o in outcomes
    ]
    record = {
        "condition": cond.name,
        "recipe": {
            "source": cond.source,
            "normalize": cond.normalize,
            "augment": asdict(cond.augment),
        },
        "chosen_epoch": selection.best.epoch,
        "val_jaccard_by_epoch": [round(e.figures["mean_jaccard"], 4) for e in selection.epochs],
        "val_raw_balanced_accuracy_by_epoch": [
            r.holdout_raw_balanced_accuracy for r in result.records
        ],
        "test": {k: v for k, v in figures.items() if isinstance(v, float)},
        "test_slides": per_slide,
        "train_tiles": len(prepared.train),
        "seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(trained, 1),
    }
    done.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patches", type=Path, nargs="?",
                        help="folder with tumor/*.png and normal/*.png")  # fmt: skip
    parser.add_argument("--phantom", action="store_true", help="a phantom cohort instead")
    parser.add_argument("--conditions", default="raw,raw+reinhard,raw+reinhard+all-aug",
                        help=f"comma-separated, of: {', '.join(CONDITIONS)}; or 'all'")  # fmt: skip
    parser.add_argument("--test-source", default="tumor_073")
    epochs_help = f"default {EPOCHS} (real pixels), {PHANTOM_EPOCHS} (phantom)"
    parser.add_argument("--epochs", type=int, default=None, help=epochs_help)
    parser.add_argument("--seed", type=int, default=0)
    mpp_help = "um/px the mosaics are read at (a 96-px tile covers 23 um at 0.243)"
    parser.add_argument("--mpp", type=float, default=DEFAULT_MPP, help=mpp_help)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-real-pixels"))
    args = parser.parse_args()
    names = list(CONDITIONS) if args.conditions == "all" else args.conditions.split(",")
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise SystemExit(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    if args.phantom == (args.patches is not None):
        parser.error("give PATCH_FOLDER or --phantom")
    epochs = args.epochs or (PHANTOM_EPOCHS if args.phantom else EPOCHS)
    if args.phantom:
        root = args.work / f"phantom-seed{args.seed}-e{epochs}"
        manifest = make_phantom_cohort(root / "cohort", args.seed)
        downsample: dict[str, Any] = {"longest": PHANTOM_N, "mpp": None}
        cohort_info = root / "cohort" / "bench_cohort.json"
        name, title = "real_pixels_phantom", "PAIP-like phantoms"
    else:
        patches = read_patch_folder(args.patches)
        at = "" if args.mpp == DEFAULT_MPP else f"-mpp{args.mpp:g}"
        root = args.work / f"seed{args.seed}-{args.test_source}-e{epochs}{at}"
        manifest = make_cohort(patches, root / "cohort", args.test_source, args.seed)
        downsample = {"longest": None, "mpp": args.mpp}
        cohort_info = root / "cohort" / "cohort.json"
        name = "real_pixels"
        title = f"Real CAMELYON16 pixels at {args.mpp:g} um/px, test on {args.test_source}"
        name += "" if args.mpp == DEFAULT_MPP else f"_mpp{args.mpp:g}"
        name += "" if epochs == EPOCHS else f"_e{epochs}"
        name += "" if args.seed == 0 else f"_seed{args.seed}"
    warnings.simplefilter("ignore", UserWarning)  # out-of-domain notes on tiny mosaics
    records = []
    for cname in names:
        print(f"== {cname}", flush=True)
        records.append(run_condition(CONDITIONS[cname], manifest, root / cname, epochs, downsample))
    rows = []
    for r in records:
        t = r["test"]
        oracle, tissue = (
            t.get("mean_oracle_jaccard", float("nan")),
            t.get("mean_all_tissue_jaccard", float("nan")),
        )
        j = t["mean_jaccard"]
        rows.append([
            r["condition"], r["chosen_epoch"], j, t["mean_precision"], t["mean_recall"],
            oracle, tissue, j / oracle if oracle else float("nan"), j - tissue,
            "yes" if j >= 0.9 * oracle and j >= tissue + 0.15 else "no",
        ])  # fmt: skip
    cohort = json.loads(cohort_info.read_text())
    report(
        name,
        f"{title} (T {TILE}, {epochs} epochs)",
        [
            "condition",
            "epoch (val)",
            "Jaccard",
            "precision",
            "recall",
            "oracle J",
            "all-tissue J",
            "J / oracle",
            "J - all tissue",
            "goal met",
        ],
        rows,
        {
            "cohort": cohort,
            "conditions": records,
            "tile": TILE,
            "epochs": epochs,
            "lr": LR,
            "seed": args.seed,
            "mpp": None if args.phantom else args.mpp,
        },
    )


if __name__ == "__main__":
    main()
