"""``slidesift info``: what a slide is, its levels and its MPP."""

from __future__ import annotations

from pathlib import Path

import click

from slidesift.cli.options import output_console
from slidesift.io.slide import describe, open_slide


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
