"""``slidesift thumb``: the thumbnail a model needs, to send instead of the slide."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.markup import escape

from slidesift.cli.options import output_console
from slidesift.errors import ConfigError
from slidesift.io.downsample import Downsample
from slidesift.io.thumb_meta import JPEG_QUALITY, thumb_format
from slidesift.thumbnail import BUDGET_BYTES, make_thumbnail, write_thumbnail


def _check_out(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """``--out``: a .jpg/.jpeg/.png name, refused before the slide is read."""
    try:
        thumb_format(value)
    except ConfigError as exc:
        raise click.BadParameter(f"{str(value)!r}: {exc.valid}", ctx, param) from exc
    return value


@click.command("thumb")
@click.argument("slide", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--longest", "-N", type=click.IntRange(min=1), default=None,
    help="Longer side of the thumbnail in px (the model's N).",
)  # fmt: skip
@click.option(
    "--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Microns per thumbnail px instead (needs the slide's MPP).",
)  # fmt: skip
@click.option(
    "--model", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
    help="A checkpoint: its N or um/px, and its stain normaliser applied, as `slidesift "
    "segment` reads the slide.",
)  # fmt: skip
@click.option(
    "--out", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True,
    callback=_check_out, help="case.jpg (small, for sending) or case.png (lossless).",
)  # fmt: skip
@click.option(
    "--quality", type=click.IntRange(1, 95), default=None,
    help=f"JPEG quality [default: {JPEG_QUALITY}]; lower is smaller.",
)  # fmt: skip
@click.option(
    "--name", default=None,
    help="Slide name recorded in the file [default: SLIDE's file name, never its folder]; "
    "--name '' records none.",
)  # fmt: skip
def thumb_command(
    slide: Path,
    longest: int | None,
    mpp: float | None,
    model: Path | None,
    out: Path,
    quality: int | None,
    name: str | None,
) -> None:
    """Write the thumbnail of SLIDE a model needs, with its um/px in the file.

    The telemedicine case: send a 1-3 MB thumbnail, not a 2 GB slide. The pixels are those
    `slidesift segment` classifies; the file records its um/px (PNG pHYs, JPEG JFIF density)
    and a slidesift record (the slide's name, level-0 size, downsample, target, stain
    normaliser, model digest), so `slidesift segment MODEL case.png` segments it at its scale
    and `slidesift info case.png` shows what it is. Give one of -N, --mpp or --model.

    \b
    Examples (cohort of `slidesift phantom --out cohort --count 10`, run of
    `slidesift train cohort/manifest.csv --out run -N 1500 -T 96 --epochs 5`):
      slidesift thumb cohort/slides/paip_006.svs --model run/epoch_005.safetensors \\
        --out paip_006.jpg
      slidesift thumb cohort/slides/paip_006.svs -N 1500 --out paip_006.png --name case-17
      slidesift thumb cohort/slides/paip_006.svs --mpp 4 --out paip_006_4um.jpg --quality 80
    """
    options = (("-N", longest), ("--mpp", mpp), ("--model", model))
    given = [flag for flag, value in options if value is not None]
    if len(given) != 1:
        raise click.UsageError(
            "give one of -N/--longest, --mpp or --model"
            + (f", not {' and '.join(given)}" if given else " (the scale the model reads at)")
        )
    if quality is not None and thumb_format(out) != "jpeg":
        raise click.UsageError("--quality is for JPEG; a PNG is lossless (write case.jpg)")
    console = output_console()
    checkpoint = None
    if model is not None:
        from slidesift.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(model)
    start = time.perf_counter()
    with console.status(f"reading {escape(slide.name)}"):
        downsample = None if checkpoint is not None else Downsample(longest=longest, mpp=mpp)
        thumbnail = make_thumbnail(slide, downsample=downsample, checkpoint=checkpoint, name=name)
        size = write_thumbnail(out, thumbnail, quality=quality or JPEG_QUALITY)
    seconds = time.perf_counter() - start
    meta = thumbnail.meta
    um = meta.um_per_px
    if um is None:
        scale = "no um/px (the slide carries no MPP)"
    elif f"{um[0]:.4g}" == f"{um[1]:.4g}":
        scale = f"{um[0]:.4g} um/px"
    else:
        scale = f"{um[0]:.4g} x {um[1]:.4g} um/px"
    kind = thumb_format(out).upper()
    console.print(
        f"wrote {escape(str(out))}: {meta.size[0]} x {meta.size[1]} px, "
        f"{size / 1e6:.2f} MB {kind}, {scale}, in {seconds:.1f} s"
    )
    if checkpoint is not None:
        norm = f"stain-normalised ({meta.normalizer})" if meta.normalizer else "no normaliser"
        console.print(f"  for {escape(model.name if model else '')}: {meta.asked}, {escape(norm)}")
    if size > BUDGET_BYTES:
        q = quality or JPEG_QUALITY
        if kind == "PNG":
            advice = "write a JPEG instead (--out case.jpg)"
        elif q > 75:
            advice = f"lower --quality (now {q}; 75 is often enough)"
        else:
            advice = (
                f"at --quality {q}, a smaller file needs fewer px: a model read at a smaller N "
                "or a coarser um/px"
            )
        console.print(
            f"[yellow]warning:[/] {escape(out.name)} is {size / 1e6:.1f} MB, over the "
            f"{BUDGET_BYTES / 1e6:.0f} MB a telemedicine link takes (1-3 MB): {advice}",
            highlight=False,
        )
