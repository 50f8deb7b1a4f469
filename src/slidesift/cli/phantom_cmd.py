"""``slidesift phantom``: write a synthetic cohort with exact ground truth and a manifest."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slidesift.cli.options import hold_output_folder, output_console
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.phantom.slide_layout import ARTIFACTS, REGIMES


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.replace(":", "-").split("-")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give px like 10000 or a range 8000-12000") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise click.BadParameter(f"{text!r}: give px like 10000 or a range 8000-12000")


def _artifacts(text: str) -> float | tuple[str, ...]:
    if text in ("none", "0"):
        return 0.0
    if text == "all":
        return ARTIFACTS
    try:
        return float(text)
    except ValueError:
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = sorted(set(names) - set(ARTIFACTS))
        if bad:
            raise click.BadParameter(
                f"unknown {', '.join(bad)}; choose from {', '.join(ARTIFACTS)}, 'all', 'none' "
                "or a probability"
            ) from None
        return names


@click.command("phantom")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("phantom-cohort"),
    show_default=True,
    help="Folder for slides, truth, manifest.csv and cohort.json.",
)
@click.option(
    "--count", "-n", type=int, default=CohortSpec.count, show_default=True, help="Number of slides."
)
@click.option(
    "--size",
    "size_text",
    default="{}-{}".format(*CohortSpec.longest),
    show_default=True,
    help="Level-0 longer side in px, or a range MIN-MAX (up to 200000).",
)
@click.option(
    "--mpp",
    type=float,
    default=CohortSpec.mpp,
    show_default=True,
    help="Microns per level-0 px; textures are physical, so 0.5 gives 20x slides.",
)
@click.option(
    "--regime",
    type=click.Choice(list(REGIMES)),
    default=CohortSpec.regime,
    show_default=True,
    help="paip: large contiguous tumors, SVS + TIFF masks. camelyon: lymph nodes with "
    "small lesions, half tumor-free, TIFF + ASAP XML.",
)
@click.option(
    "--subtypes",
    type=click.IntRange(1, 2),
    default=CohortSpec.subtypes,
    show_default=True,
    help="Tumor morphologies: 1 (glandular) or 2 (glandular and solid; the slide "
    "label is the subtype).",
)
@click.option(
    "--difficulty",
    type=click.FloatRange(0, 1),
    default=CohortSpec.difficulty,
    show_default=True,
    help="0: tumor texture far from normal; 1: indistinguishable.",
)
@click.option(
    "--artifacts",
    "artifacts_text",
    default="0.3",
    show_default=True,
    help=f"Probability of each artifact per slide, 'none', 'all', or names from "
    f"{', '.join(ARTIFACTS)}.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=1 / 3,
    show_default="1/3",
    help="Share of each label's slides in the test split.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Same seed and options, same bytes."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a cohort of other options in --out (a same-spec rerun resumes).",
)
def phantom(
    out_dir: Path, count: int, size_text: str, mpp: float, regime: str, subtypes: int,
    difficulty: float, artifacts_text: str, test_fraction: float, seed: int, overwrite: bool,
) -> None:  # fmt: skip
    """Write a phantom cohort: H&E-like pyramidal slides with exact tumor truth.

    Each slide is a JPEG-tiled pyramidal TIFF with MPP that OpenSlide reads; truth comes as
    users receive it: level-0 TIFF masks (paip), ASAP XML (camelyon) and QuPath GeoJSON. The
    manifest.csv lists slide, annotation, label and split for every other command.

    \b
    Writes, for --out cohort:
      cohort/manifest.csv, cohort/cohort.json
      cohort/slides/paip_000.svs ...       (camelyon: slides/camelyon_000.tif ...)
      cohort/masks/paip_000_mask.tif ...   (camelyon: annotations/camelyon_000.xml ...)
      cohort/annotations/paip_000.geojson ...

    \b
    Examples:
      slidesift phantom --out cohort --count 10
      slidesift phantom --out nodes --regime camelyon --count 8 --size 12000 --subtypes 1
      slidesift phantom --out big --count 1 --size 20000 --mpp 0.5 --artifacts all
    """
    hold_output_folder(out_dir)
    console = output_console()
    spec = CohortSpec(
        count=count, longest=_size(size_text), mpp=mpp, regime=regime, subtypes=subtypes,
        difficulty=difficulty, artifacts=_artifacts(artifacts_text),
        test_fraction=test_fraction, seed=seed,
    )  # fmt: skip
    start = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("planning", total=count)

        def progress(i: int, name: str, done: int, total: int) -> None:
            bar.update(task, completed=i + done / max(1, total),
                       description=f"slide {i + 1}/{count} {name}")  # fmt: skip

        manifest = make_cohort(spec, out_dir, overwrite=overwrite, on_progress=progress)
    table = Table(title=f"phantom cohort in {out_dir}")
    for col in ("slide", "annotation", "label", "split"):
        table.add_column(col)
    root = out_dir.resolve()
    for e in manifest:
        ann = e.annotation.relative_to(root).as_posix() if e.annotation else "-"
        table.add_row(e.slide.relative_to(root).as_posix(), ann, e.label or "-", e.split or "-")
    console.print(table)
    console.print(
        f"{len(manifest)} slides in {time.perf_counter() - start:.1f} s; "
        f"manifest: {root / 'manifest.csv'}"
    )
