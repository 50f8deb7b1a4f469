"""``slidesift info``: what a slide is, its levels and its MPP."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from slidesift.io.slide import describe, open_slide


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
def info(slides: tuple[Path, ...]) -> None:
    """Print format, pyramid levels and MPP of each SLIDE.

    \b
    Example:
      slidesift info CMU-1-Small-Region.svs
    """
    out = Console(highlight=False)
    for path in slides:
        with open_slide(path) as slide:
            out.print(describe(slide))
