"""Write a phantom cohort: slides, ground truth as users receive it, and a manifest.

Layout of the output folder::

    cohort.json                 the spec and, per slide, its size, levels, tumor share, artifacts
    manifest.csv                slide, annotation, label, split (see slidesift.manifest)
    slides/paip_000.svs         SVS-like pyramidal TIFF (paip) or generic TIFF (camelyon)
    masks/paip_000_mask.tif     level-0 aligned 0/1 tumor mask (paip)
    annotations/camelyon_003.xml      ASAP XML, groups _0 / _1 / _2 (camelyon, tumor slides)
    annotations/paip_000.geojson      the same polygons for QuPath (every tumor slide)

Everything follows from the spec: the same spec gives byte-identical files. A rerun with the
same spec keeps slides already complete, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidesift.errors import ConfigError
from slidesift.io.asap import write_asap_xml
from slidesift.io.atomic import atomic_write_text
from slidesift.io.geojson import polygons_to_geojson, write_geojson
from slidesift.io.tiff import pyramid_shapes
from slidesift.manifest import Manifest, ManifestEntry, write_manifest
from slidesift.phantom.plan import plan_slide
from slidesift.phantom.render import write_mask, write_slide
from slidesift.phantom.slide_layout import ARTIFACTS, REGIMES, SUBTYPES, SlideLayout

__all__ = ["CohortSpec", "make_cohort", "plan_cohort"]


@dataclass(frozen=True)
class CohortSpec:
    """What cohort to make.

    Attributes
    ----------
    count
        Number of slides.
    longest
        ``(min, max)`` of the level-0 longer side in px; each slide draws its own.
    mpp
        Microns per level-0 px. Textures are physical: the default 2.5 puts about 19 x 14 mm
        of glass in 7,500 px (a 4x scan), so a 6000-px thumbnail has about 3 um/px as the
        paper's PAIP2020 thumbnails; 0.5 makes 20x slides five times as large.
    regime
        ``paip`` (large contiguous tumors, every slide positive) or ``camelyon`` (lymph nodes,
        small lesions and archipelagos, half of the slides tumor-free).
    subtypes
        1 (every tumor ``glandular``) or 2 (``glandular`` and ``solid``, half each; the
        slide label is the subtype).
    difficulty
        0 (tumor texture far from normal) to 1 (indistinguishable).
    artifacts
        Probability of each artifact per slide, or the names of artifacts every slide gets.
    test_fraction
        Share of each label's slides put in the ``test`` split (the rest is ``train``).
    seed
        Seed of the whole cohort.
    """

    count: int = 10
    longest: tuple[int, int] = (7000, 8000)
    mpp: float = 2.5
    regime: str = "paip"
    subtypes: int = 2
    difficulty: float = 0.5
    artifacts: float | tuple[str, ...] = 0.3
    test_fraction: float = 1 / 3
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if self.count < 1:
            raise ConfigError("count", self.count, "at least 1")
        lo, hi = self.longest
        if not 256 <= lo <= hi <= 200_000:
            raise ConfigError("longest", self.longest, "256 <= min <= max <= 200000 px")
        if self.regime not in REGIMES:
            raise ConfigError("regime", self.regime, " | ".join(REGIMES))
        if self.subtypes not in (1, 2):
            raise ConfigError("subtypes", self.subtypes, "1 or 2")
        if not 0 <= self.difficulty <= 1:
            raise ConfigError("difficulty", self.difficulty, "0 (easy) to 1 (hard)")
        if not 0 <= self.test_fraction < 1:
            raise ConfigError("test_fraction", self.test_fraction, "0 <= fraction < 1")
        if isinstance(self.artifacts, tuple):
            unknown = sorted(set(self.artifacts) - set(ARTIFACTS))
            if unknown:
                raise ConfigError("artifacts", unknown, ", ".join(ARTIFACTS))
        elif not 0 <= self.artifacts <= 1:
            raise ConfigError("artifacts", self.artifacts, "a probability 0-1 or names")


@dataclass(frozen=True)
class PlannedSlide:
    """One slide of a planned cohort: its name, label, split and layout."""

    name: str
    label: str
    split: str
    layout: SlideLayout
    files: dict[str, str] = field(default_factory=dict)


def _labels(spec: CohortSpec, rng: np.random.Generator) -> list[tuple[str | None, str]]:
    """(subtype or None, label) per slide: balanced subtypes, half negative for camelyon."""
    n = spec.count
    positive = n if spec.regime == "paip" else (n + 1) // 2
    kinds = [SUBTYPES[i % spec.subtypes] for i in range(positive)]
    out: list[tuple[str | None, str]] = [(k, k if spec.subtypes == 2 else "tumor") for k in kinds]
    out += [(None, "normal")] * (n - positive)
    order = rng.permutation(n)
    return [out[i] for i in order]


def plan_cohort(spec: CohortSpec) -> list[PlannedSlide]:
    """Draw every slide's name, label, split and layout from the spec (no pixels yet)."""
    spec.check()
    root = np.random.SeedSequence(spec.seed)
    rng = np.random.default_rng(root)
    labels = _labels(spec, rng)
    splits = ["train"] * spec.count
    for label in sorted({lab for _, lab in labels}):
        members = [i for i, (_, lab) in enumerate(labels) if lab == label]
        n_test = round(len(members) * spec.test_fraction)
        for i in members[len(members) - n_test :]:
            splits[i] = "test"
    artifacts: frozenset[str] | float = (
        frozenset(spec.artifacts) if isinstance(spec.artifacts, tuple) else spec.artifacts
    )
    planned = []
    for i, child in enumerate(root.spawn(spec.count)):
        srng = np.random.default_rng(child)
        longest = int(srng.integers(spec.longest[0], spec.longest[1] + 1))
        other = max(256, round(longest * srng.uniform(0.68, 0.82)))
        shape = (other, longest)  # (H, W): landscape like a scanned glass slide
        subtype, label = labels[i]
        layout = plan_slide(
            shape, seed=int(srng.integers(2**31)), mpp=spec.mpp, regime=spec.regime,
            subtype=subtype, difficulty=spec.difficulty, artifacts=artifacts,
        )  # fmt: skip
        planned.append(PlannedSlide(f"{spec.regime}_{i:03d}", label, splits[i], layout))
    return planned


def _tumor_share(layout: SlideLayout) -> tuple[float, float]:
    """(tumor px / tissue px, tissue px / slide px) on a coarse grid."""
    h, w = layout.shape
    f = max(1.0, max(h, w) / 1024)
    size = (max(1, round(w / f)), max(1, round(h / f)))
    scale = (w / size[0], h / size[1])
    codes = layout.regions(size, scale)
    tissue = (codes != 0) & (codes != 5)
    tumor = codes == 2
    return float(tumor.sum() / max(1, tissue.sum())), float(tissue.mean())


def make_cohort(
    spec: CohortSpec,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    workers: int | None = None,
    on_progress: Callable[[int, str, int, int], None] | None = None,
) -> Manifest:
    """Write a phantom cohort into ``out`` (see the module docs for the layout).

    Parameters
    ----------
    spec
        The cohort.
    out
        Output folder (created).
    overwrite
        Replace a cohort made from a different spec; otherwise that is an error.
    workers
        Threads per slide (rendering and encoding).
    on_progress
        Called with ``(slide_index, slide_name, rows_done, rows_total)`` while writing.

    Returns
    -------
    Manifest
        The manifest written to ``out/manifest.csv``.
    """
    from slidesift.manifest import read_manifest

    spec.check()
    root = Path(out)
    spec_json = asdict(spec)
    info_path = root / "cohort.json"
    if info_path.exists():
        try:
            old = json.loads(info_path.read_text()).get("spec")
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(spec_json)) and not overwrite:
            raise ConfigError(
                "out", str(root),
                "an empty folder, or the folder of a cohort with the same spec (it resumes); "
                "pass overwrite=True (--overwrite) to replace the cohort there",
            )  # fmt: skip
    for sub in ("slides", "masks", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # The spec goes first, so that a rerun after an interruption knows what it resumes.
    atomic_write_text(info_path, json.dumps({"spec": spec_json, "slides": []}, indent=1) + "\n")
    planned = plan_cohort(spec)
    entries: list[ManifestEntry] = []
    slides_info: list[dict[str, Any]] = []
    for i, item in enumerate(planned):
        lay = item.layout
        paip = spec.regime == "paip"
        slide_path = root / "slides" / f"{item.name}{'.svs' if paip else '.tif'}"
        annotation: Path | None = None
        files = {"slide": slide_path}
        if lay.has_tumor:
            files["geojson"] = root / "annotations" / f"{item.name}.geojson"
            if paip:
                files["mask"] = annotation = root / "masks" / f"{item.name}_mask.tif"
            else:
                files["xml"] = annotation = root / "annotations" / f"{item.name}.xml"
        if overwrite or not all(p.exists() for p in files.values()):

            def rows(done: int, total: int, i: int = i, name: str = item.name) -> None:
                if on_progress is not None:
                    on_progress(i, name, done, total)

            write_slide(lay, slide_path, flavor="aperio" if paip else "generic",
                        workers=workers, on_rows=rows)  # fmt: skip
            if lay.has_tumor:
                write_geojson(files["geojson"], polygons_to_geojson(list(lay.tumors)))
                if paip:
                    write_mask(lay, files["mask"], workers=workers)
                else:
                    write_asap_xml(files["xml"], lay.tumors)
        if on_progress is not None:
            on_progress(i, item.name, lay.shape[0], lay.shape[0])
        share, tissue = _tumor_share(lay)
        entries.append(ManifestEntry(slide_path, annotation, item.label, item.split))
        slides_info.append({
            "name": item.name, "label": item.label, "split": item.split,
            "subtype": lay.subtype, "shape": list(lay.shape), "mpp": lay.mpp,
            "levels": len(pyramid_shapes(lay.shape)), "tumor_share_of_tissue": round(share, 4),
            "tissue_share": round(tissue, 4), "lesions": len(lay.tumors),
            "artifacts": lay.artifacts.names(),
            "files": {k: v.relative_to(root).as_posix() for k, v in files.items()},
        })  # fmt: skip
    info = {
        "spec": spec_json,
        "slides": slides_info,
        "mpp": spec.mpp,
        "thumbnail_um_per_px_at_6000": round(spec.mpp * math.fsum(spec.longest) / 2 / 6000, 3),
    }
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    write_manifest(root / "manifest.csv", entries)
    return read_manifest(root / "manifest.csv")
