"""Options shared by several commands, declared once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import click
from rich.console import Console

from slidesift.errors import ConfigError
from slidesift.io.downsample import Downsample
from slidesift.io.lock import output_lock
from slidesift.segment import SegmentSpec
from slidesift.segment_outputs import MIN_PREVIEW_PX, OUTPUT_KINDS, PREVIEW_PX, OutputSpec
from slidesift.segment_types import InferenceMode
from slidesift.sift import SiftSpec

F = TypeVar("F", bound=Callable[..., Any])

#: Line width in a file or a pipe: wide enough that no table or message is ever cut.
UNLIMITED_WIDTH = 100_000


def output_console(*, stderr: bool = False) -> Console:
    """The console a command prints on: its terminal's width, or unlimited in a file or pipe.

    rich guesses 80 columns when the stream is not a terminal, so ``slidesift ... > log.txt``
    got tables cut to 80 columns (long slide names ellipsised) and messages wrapped; there,
    lines are as long as they need (tables keep their natural width, text is not padded).
    """
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = UNLIMITED_WIDTH
    return console


def hold_output_folder(folder: Path) -> None:
    """Lock the command's output folder until the command ends (:func:`output_lock`).

    Taken first thing, so a second run on the same folder is refused at once rather than after
    minutes of reading slides; the click context releases it when the command returns or fails.
    """
    click.get_current_context().with_resource(output_lock(folder))


def downsample_options(f: F) -> F:
    """``--longest`` / ``--mpp``: how far to downsample the slide."""
    f = click.option(
        "--mpp",
        type=float,
        default=None,
        help="Downsample to this many microns per px instead (needs MPP metadata).",
    )(f)
    return click.option(
        "--longest",
        "-N",
        type=int,
        default=None,
        show_default="6000",
        help="Longer side of the downsampled slide in px (paper: 6000 PAIP, 15000 CAMELYON).",
    )(f)


def grid_options(f: F) -> F:
    """``--tile`` / ``--overlap`` / ``--stride``."""
    f = click.option(
        "--stride", type=int, default=None, help="Step between tiles in px (overrides --overlap)."
    )(f)
    f = click.option(
        "--overlap",
        type=float,
        default=0.8,
        show_default=True,
        help="Fraction in [0, 1) that neighbouring tiles share.",
    )(f)
    return click.option(
        "--tile", "-T", type=int, default=400, show_default=True, help="Tile side in px."
    )(f)


def sift_options(f: F) -> F:
    """Background and entropy options: a :class:`SiftSpec`."""
    d = SiftSpec()
    f = click.option(
        "--entropy",
        type=click.Choice(["rgb", "gray"]),
        default=d.entropy,
        show_default=True,
        help="Entropy over all RGB values (paper) or over grey values.",
    )(f)
    f = click.option(
        "--max-background",
        type=float,
        default=d.max_background,
        show_default=True,
        help="Drop tiles whose background fraction exceeds this.",
    )(f)
    return click.option(
        "--background",
        type=click.Choice(["gray-limits", "peak-frequency"]),
        default=d.background,
        show_default=True,
        help="Background test: grey < 15 or > 235, or the k most frequent values "
        "(for stain-normalised images).",
    )(f)


def sift_spec(background: str, max_background: float, entropy: str) -> SiftSpec:
    """Build a :class:`SiftSpec` from the shared options."""
    return SiftSpec(
        background=background,  # type: ignore[arg-type]
        max_background=max_background,
        entropy=entropy,  # type: ignore[arg-type]
    )


def resolve_downsample(longest: int | None, mpp: float | None) -> Downsample:
    """The :class:`Downsample` of ``-N/--longest`` and ``--mpp``: N 6000 when neither is given."""
    if longest is not None and mpp is not None:
        raise click.UsageError("give -N/--longest or --mpp, not both")
    return Downsample.of(longest, mpp)


def segment_options(f: F) -> F:
    """Options of a :class:`SegmentSpec`, shared by ``segment`` and ``select``."""
    d = SegmentSpec()
    for option in reversed(
        [
            click.option(
                "--overlap",
                type=float,
                default=d.overlap,
                show_default=True,
                help="Tile overlap (paper: 0.8).",
            ),
            click.option(
                "--stride", type=int, default=None, help="Explicit stride (overrides --overlap)."
            ),
            click.option(
                "--round-stride",
                is_flag=True,
                help="Round the stride to a multiple of 16 so the fast dense path applies.",
            ),
            click.option(
                "--mode",
                type=click.Choice(["union", "dominant", "mean"]),
                default=None,
                help="Assembly [default: mean for binary models, dominant for subtypes].",
            ),
            click.option(
                "--smooth",
                type=int,
                default=0,
                show_default=True,
                help="Opening kernel diameter in thumbnail px (paper: 50-150 at N=6000).",
            ),
            click.option(
                "--shrink",
                type=float,
                default=0.0,
                show_default=True,
                help="Shrink each region about its centroid by this fraction.",
            ),
            click.option("--no-rails", is_flag=True, help="Sift by background only (ablation)."),
            click.option(
                "--inference",
                type=click.Choice(list(get_args(InferenceMode))),
                default="auto",
                show_default=True,
                help="auto: with a CUDA GPU, torch-dense (the dense path on the GPU, bf16); "
                "on the CPU, the dense backend (fp32, int8, bf16) the probe chose where exact, "
                "else ONNX per tile. torch: per tile in torch.",
            ),
        ]
    ):
        f = option(f)
    return f


def make_spec(
    overlap: float,
    stride: int | None,
    round_stride: bool,
    mode: str | None,
    smooth: int,
    shrink: float,
    no_rails: bool,
    inference: str,
) -> SegmentSpec:
    """A :class:`SegmentSpec` from the shared options."""
    return SegmentSpec(
        overlap=overlap,
        stride=stride,
        round_stride=round_stride,
        mode=mode,  # type: ignore[arg-type]
        smooth=smooth,
        shrink=shrink,
        rails=not no_rails,
        inference=inference,  # type: ignore[arg-type]
    )


def _check_outputs(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--outputs``: a usage error that lists the valid names, before any slide is read."""
    try:
        return ",".join(OutputSpec.of(value).kinds)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc.value!r}: {exc.valid}", ctx, param) from exc


def output_options(f: F) -> F:
    """``--outputs`` / ``--preview-px``: which files a slide gets, how large its pictures are."""
    f = click.option(
        "--preview-px",
        type=click.IntRange(min=0),
        default=PREVIEW_PX,
        show_default=True,
        help="Longest side of the overlay, error and location pictures in px (the report shows "
        "them at <= 1200 px); 0: the thumbnail's full size (7x slower to write). The mask, "
        "GeoJSON and tile table are always at full size.",
    )(f)
    return click.option(
        "--outputs",
        metavar="KINDS",
        default="all",
        show_default=True,
        callback=_check_outputs,
        help=f"Files to write per slide, comma-separated: {', '.join(OUTPUT_KINDS)} (errors only "
        "with truth), or all. E.g. --outputs mask,geojson for the fastest run; the report needs "
        "overlay, errors and locations.",
    )(f)


def make_outputs(outputs: str, preview_px: int) -> OutputSpec:
    """An :class:`OutputSpec` from ``--outputs`` and ``--preview-px`` (0: full size)."""
    if 0 < preview_px < MIN_PREVIEW_PX:
        raise click.BadParameter(
            f"{preview_px}: at least {MIN_PREVIEW_PX} px, or 0 for the thumbnail's full size",
            param_hint="'--preview-px'",
        )
    return OutputSpec(tuple(outputs.split(",")), preview_px or None)
