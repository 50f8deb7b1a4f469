"""``slidesift info``: what a slide is, its levels and its MPP."""

from __future__ import annotations

from pathlib import Path

import click

from slidesift.cli.options import output_console
from slidesift.io.slide import Slide, open_slide


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
def info(slides: tuple[Path, ...]) -> None:
    """Print format, pyramid levels and MPP of each SLIDE.

    \b
    Examples (slides of `slidesift phantom --out cohort --count 10`):
      slidesift info cohort/slides/paip_000.svs
      slidesift info cohort/slides/*.svs
    """
    out = output_console()
    for path in slides:
        with open_slide(path) as slide:
            out.print(describe(slide))


def describe(slide: Slide) -> str:
    """A few human-readable lines about a slide: format, levels and their readers, MPP; for a
    thumbnail `slidesift thumb` wrote, what its slidesift record says."""
    lines = [f"{slide.path.name}: {slide.format}, {slide.level_count} level(s)"]
    for i, ((w, h), d) in enumerate(
        zip(slide.level_dimensions, slide.level_downsamples, strict=True)
    ):
        lines.append(f"  level {i}: {w} x {h} px (downsample {d:.6g}, {slide.reader_for(i)})")
    if slide.mpp:
        lines.append(f"  MPP: {slide.mpp[0]:.4g} x {slide.mpp[1]:.4g} um/px at level 0")
    else:
        lines.append("  MPP: none (the file carries no microns-per-pixel metadata)")
    if slide.mpp and slide.mpp[0] < 2.0:
        lines.append(f"  about {10.0 / slide.mpp[0]:.0f}x objective equivalent")
    if slide.thumb_meta is not None:
        lines.extend(slide.thumb_meta.describe())
    return "\n".join(lines)
