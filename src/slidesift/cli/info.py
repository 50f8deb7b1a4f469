"""``slidesift info``: what a slide is, its levels and its MPP; or what a model is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from slidesift.cli.options import output_console
from slidesift.io.slide import Slide, open_slide

if TYPE_CHECKING:
    from slidesift.checkpoint import Checkpoint


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
def info(slides: tuple[Path, ...]) -> None:
    """Print format, pyramid levels and MPP of each SLIDE.

    Given a checkpoint or a model bundle instead, print what the model was trained with: T,
    N or um/px, classes, rails, sift options, stain normalisation, epoch and metrics.

    \b
    Examples (slides of `slidesift phantom --out cohort --count 10`):
      slidesift info cohort/slides/paip_000.svs
      slidesift info cohort/slides/*.svs
      slidesift info run/epoch_005.safetensors
    """
    from slidesift.io.sniff import file_kind

    out = output_console()
    for path in slides:
        if file_kind(path) in ("checkpoint (safetensors)", "zip archive"):
            from slidesift.checkpoint import load_checkpoint

            out.print(escape(describe_model(load_checkpoint(path))), highlight=False)
            continue
        with open_slide(path) as slide:
            out.print(describe(slide))


def describe_model(checkpoint: Checkpoint) -> str:
    """A few human-readable lines about a checkpoint or a model bundle."""
    name = checkpoint.path.name if checkpoint.path is not None else "<memory>"
    kind = "model bundle" if checkpoint.is_bundle else "checkpoint"
    scale = checkpoint.downsample.to_dict()
    at = f"{scale['mpp']} um/px" if scale.get("mpp") else f"N = {scale.get('longest')} px"
    rails, sift = checkpoint.rails, checkpoint.sift
    norm = checkpoint.normalizer
    lines = [
        f"{name}: slidesift {kind}, epoch {checkpoint.epoch}",
        f"  tile T = {checkpoint.tile} px, thumbnails at {at}",
        f"  classes: {', '.join(checkpoint.classes)}",
        f"  rails: [{rails.lo:.3f}, {rails.hi:.3f}] bits ({sift.entropy} entropy), background "
        f"{sift.background}, at most {sift.max_background:.0%} a tile",
        f"  stain normalisation: {norm.method if norm is not None else 'none'}",
    ]
    if checkpoint.architecture == "unet-effb0":  # the baseline sifts by Otsu, not by rails
        params = checkpoint.meta.get("parameters") or {}
        rule = checkpoint.meta.get("tile_rule", 0.7)
        lines[3] = (
            f"  model: U-Net/EfficientNet-B0 (the paper's baseline), "
            f"{params.get('trainable', '?'):,} trainable parameters; Otsu-thresholded input, a "
            f"tile tumor when >= {rule:.0%} of its pixels are"
        )
    shown = {k: v for k, v in checkpoint.metrics.items() if isinstance(v, (int, float))}
    if shown:
        lines.append("  metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))
    if checkpoint.is_bundle:
        from slidesift.bundle import bundle_summary

        made = bundle_summary(checkpoint)
        graphs = ", ".join(f"{n} ({b / 2**20:.2f} MB)" for n, b in made["graphs"].items())
        lines.append(f"  exported from {made['source']} (digest {made['digest']})")
        lines.append(f"  graphs: {graphs}")
    return "\n".join(lines)


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
