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
lightweight CNN (T 96 at the patches' resolution) or, for the ``unet`` conditions, the paper's
baseline U-Net/EfficientNet-B0 (T 64: the paper's 256-px U-Net tiles beside its 400-px CNN
tiles, in proportion; 20 epochs as the paper's; Otsu input, the 70% tile rule), chooses the
epoch on val
(:func:`slidesift.select.select_epoch`), and evaluates that epoch once on test, beside the two
references every evaluation carries: the all-tissue baseline and the tile-oracle ceiling.
Goal (issue 12): model Jaccard at least 90% of the oracle's and at least 0.15 above all tissue.
Beside the scores: trainable parameters, training seconds, kept tiles classified per second
while evaluating, the checkpoint's size and the peak resident memory of the condition.

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
import contextlib
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
from slidesift.checkpoint import UNET, load_checkpoint
from slidesift.evaluate import evaluate_slides, summary
from slidesift.manifest import ManifestEntry, read_manifest, write_manifest
from slidesift.mosaic import Patch, build_mosaic, read_patch_folder, write_mosaic
from slidesift.prepare import prepare_slides, prepare_tilesets
from slidesift.select import select_epoch
from slidesift.tileset import TileSetSpec
from slidesift.train import train
from slidesift.train_spec import TrainSpec
from slidesift.unet_train import UNET_EPOCHS, UNET_LR, train_unet

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
#: The U-Net's tile: the paper's 256 px against its CNN's 400, at the CNN's 96 here.
UNET_TILE = 64


@dataclass(frozen=True)
class Condition:
    """One training recipe of the comparison."""

    name: str
    source: str = "raw"
    normalize: str | None = None
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    arch: str = "lightweight-cnn"


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
        Condition("unet", arch=UNET),
        Condition("unet+reinhard", normalize="reinhard", arch=UNET),
    ]
}


def _reset_peak_memory() -> None:
    """Restart this process's peak resident memory count (Linux ``clear_refs`` 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_mb() -> float | None:
    """This process's peak resident memory since the last reset, MB (``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _trainable(state: dict[str, Any]) -> int:
    """Parameters of a state dict, BatchNorm's running statistics left out."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return int(sum(np.asarray(v).size for k, v in state.items() if not k.endswith(skip)))


def _train_unet(
    cond: Condition, manifest: Path, work: Path, epochs: int, downsample: dict[str, Any]
) -> tuple[Any, int]:
    """Train the U-Net baseline for ``cond``: the training result and its tile count."""
    slides = prepare_slides(
        manifest, normalize=cond.normalize, cache=ThumbCache(work.parent / "thumbs"),  # type: ignore[arg-type]
        **downsample,
    )  # fmt: skip
    resume = (work / "run" / "run.json").exists()
    result = train_unet(
        slides.train, work / "run", TrainSpec(epochs=epochs, lr=UNET_LR),
        TileSetSpec(tile=UNET_TILE, **downsample), holdout=slides.holdout,
        normalization=slides.normalizer.to_dict() if slides.normalizer else None, resume=resume,
    )  # fmt: skip
    run = json.loads((work / "run" / "run.json").read_text())
    return result, int(run["tiles"]["count"])


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


def make_phantom_cohort(out: Path, seed: int, regime: str = "paip") -> Path:
    """A PAIP-like (or CAMELYON-like: lymph nodes, metastases small and large, half the slides
    normal) phantom cohort with a val split (see the module docs); returns the manifest."""
    from slidesift.phantom.cohort import CohortSpec
    from slidesift.phantom.cohort import make_cohort as make_phantoms
    from slidesift.subsets import draw_validation

    manifest = out / "manifest_val.csv"
    if manifest.exists():
        return manifest
    if regime == "camelyon":
        spec = CohortSpec(count=12, longest=(4000, 4400), mpp=1.0, regime="camelyon", subtypes=1,
                          seed=seed + 11, artifacts=0.0)  # fmt: skip
    else:
        spec = CohortSpec(count=10, longest=(3000, 3200), mpp=1.0, seed=seed + 11, artifacts=0.0)
    made = make_phantoms(spec, out)
    write_manifest(manifest, draw_validation(list(made), 1 / 3, seed=seed))
    rows = read_manifest(manifest)
    splits = {s: len(rows.split(s)) for s in ("train", "val", "test")}
    cohort = {"spec": repr(spec), "splits": splits}
    (out / "bench_cohort.json").write_text(json.dumps(cohort, indent=1) + "\n")
    return manifest


def run_condition(
    cond: Condition,
    manifest: Path,
    work: Path,
    epochs: int,
    downsample: dict[str, Any],
    min_accuracy: float = 0.6,
) -> dict[str, Any]:
    """Train, select on val, evaluate on test; the result as plain values (cached in work).
    ``min_accuracy``: :func:`select_epoch`'s slide classification floor."""
    done = work / "result.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    _reset_peak_memory()
    started = time.perf_counter()
    if cond.arch == UNET:
        epochs = UNET_EPOCHS if epochs <= 0 else epochs
        result, n_tiles = _train_unet(cond, manifest, work, epochs, downsample)
    else:
        spec = TileSetSpec(tile=TILE, source=cond.source, **downsample)  # type: ignore[arg-type]
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
        n_tiles = len(prepared.train)
    trained = time.perf_counter() - started
    entries = read_manifest(manifest)
    selection = select_epoch(work / "run", entries.split("val"), min_accuracy=min_accuracy)
    if selection.best is None:
        raise SystemExit(f"{cond.name}: no epoch qualified on val")
    ck = load_checkpoint(selection.best.path)
    outcomes = evaluate_slides(entries.split("test"), ck)
    figures = summary(outcomes, ck.classes)
    classify_s = sum(o.seconds.get("classify", 0.0) for o in outcomes)
    kept = sum(o.kept_tiles for o in outcomes)
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
            "arch": cond.arch,
            "tile": UNET_TILE if cond.arch == UNET else TILE,
            "epochs": epochs,
            "source": cond.source,
            "normalize": cond.normalize,
            "augment": asdict(cond.augment),
        },
        "parameters": _trainable(ck.state),
        "checkpoint_mb": round(selection.best.path.stat().st_size / 2**20, 2),
        "inference_tiles_per_s": round(kept / classify_s, 1) if classify_s > 0 else None,
        "peak_rss_mb": _peak_memory_mb(),
        "chosen_epoch": selection.best.epoch,
        "val_jaccard_by_epoch": [round(e.figures["mean_jaccard"], 4) for e in selection.epochs],
        "val_raw_balanced_accuracy_by_epoch": [
            r.holdout_raw_balanced_accuracy for r in result.records
        ],
        "test": {k: v for k, v in figures.items() if isinstance(v, float)},
        "test_slides": per_slide,
        "train_tiles": n_tiles,
        "seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(trained, 1),
        # the epochs' own seconds, those of an interrupted and resumed run included
        "epoch_seconds": round(sum(r.seconds for r in result.records), 1),
    }
    done.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patches", type=Path, nargs="?",
                        help="folder with tumor/*.png and normal/*.png")  # fmt: skip
    parser.add_argument("--phantom", action="store_true", help="a phantom cohort instead")
    parser.add_argument("--regime", choices=("paip", "camelyon"), default="paip",
                        help="the phantom cohort's kind")  # fmt: skip
    parser.add_argument("--conditions", default="raw,raw+reinhard,raw+reinhard+all-aug",
                        help=f"comma-separated, of: {', '.join(CONDITIONS)}; or 'all'")  # fmt: skip
    parser.add_argument("--test-source", default="tumor_073")
    epochs_help = (
        f"default {EPOCHS} (real pixels), {PHANTOM_EPOCHS} (phantom); the unet conditions "
        f"train --unet-epochs"
    )
    parser.add_argument("--epochs", type=int, default=None, help=epochs_help)
    parser.add_argument("--unet-epochs", type=int, default=UNET_EPOCHS,
                        help=f"epochs of the unet conditions (paper: {UNET_EPOCHS})")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    mpp_help = "um/px the mosaics are read at (a 96-px tile covers 23 um at 0.243)"
    parser.add_argument("--mpp", type=float, default=DEFAULT_MPP, help=mpp_help)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-real-pixels"))
    name_help = "JSON name under bench-results/ [default: from the options]"
    parser.add_argument("--name", default=None, help=name_help)
    args = parser.parse_args()
    names = list(CONDITIONS) if args.conditions == "all" else args.conditions.split(",")
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise SystemExit(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    if args.phantom == (args.patches is not None):
        parser.error("give PATCH_FOLDER or --phantom")
    epochs = args.epochs or (PHANTOM_EPOCHS if args.phantom else EPOCHS)
    if args.phantom:
        kind = "" if args.regime == "paip" else f"-{args.regime}"
        root = args.work / f"phantom{kind}-seed{args.seed}-e{epochs}"
        manifest = make_phantom_cohort(root / "cohort", args.seed, args.regime)
        downsample: dict[str, Any] = {"longest": PHANTOM_N, "mpp": None}
        cohort_info = root / "cohort" / "bench_cohort.json"
        name = "real_pixels_phantom" + kind.replace("-", "_")
        title = f"{args.regime.upper()}-like phantoms"
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
        cond = CONDITIONS[cname]
        n = args.unet_epochs if cond.arch == UNET else epochs
        # CAMELYON-like val slides are few and half normal: an early model that calls one of
        # them wrongly fails the 60% floor, so every epoch is eligible there (chosen by Jaccard)
        floor = -1.0 if args.phantom and args.regime == "camelyon" else 0.6
        records.append(run_condition(cond, manifest, root / cname, n, downsample, floor))
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
            r["parameters"] / 1e6 if "parameters" in r else float("nan"),
            r.get("epoch_seconds", r["train_seconds"]), r.get("inference_tiles_per_s"),
            r.get("checkpoint_mb"),
            r.get("peak_rss_mb"),
        ])  # fmt: skip
    cohort = json.loads(cohort_info.read_text())
    report(
        args.name or name,
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
            "params (M)",
            "epochs s",
            "tiles/s",
            "MB",
            "peak MB",
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
