"""``slidesift train``: tile sets from a manifest, then the CNN (or the U-Net baseline), with a
checkpoint per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from slidesift.augment import AugmentSpec
from slidesift.cache import ThumbCache
from slidesift.checkpoint import CNN, UNET
from slidesift.cli.options import (
    downsample_options,
    hold_output_folder,
    output_console,
    resolve_downsample,
    sift_options,
    sift_spec,
)
from slidesift.cli.views import tiles_table, training_progress
from slidesift.errors import TrainingError
from slidesift.manifest import write_manifest
from slidesift.prepare import prepare_slides, prepare_tilesets
from slidesift.sift import SiftSpec
from slidesift.stain import background_hint
from slidesift.tileset import TileSet, TileSetSpec
from slidesift.train import train
from slidesift.train_run import (
    RUN_FILE,
    already_trained,
    read_resume_options,
    read_run,
    run_exists,
)
from slidesift.train_spec import TrainResult, TrainSpec
from slidesift.unet_train import UNET_EPOCHS, UNET_LR, UNET_TILES


@click.command("train")
@click.argument(
    "manifest", required=False, type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option(
    "--arch",
    type=click.Choice([CNN, UNET]),
    default=CNN,
    show_default=True,
    help=f"{CNN}: the paper's five-layer CNN with entropy rails. {UNET}: the paper's baseline, "
    "a U-Net with an EfficientNet-B0 encoder (10 M parameters) on Otsu-thresholded tiles, a "
    "tile tumor when >= 70% of its pixels are; T a multiple of 32 [default 256], 20 epochs, "
    "lr 1e-3 [defaults], binary only.",
)
@click.option(
    "--encoder-weights",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help=f"{UNET} only: start the encoder from ImageNet EfficientNet-B0 weights in this "
    "safetensors file (torchvision's key names; docs/results.md says how to make one) "
    "[default: from scratch].",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("run"),
    show_default=True,
    help="Run folder: checkpoints, log.csv, tile tables.",
)
@downsample_options
@click.option(
    "--tile",
    "-T",
    type=int,
    default=400,
    show_default=True,
    help="Tile side in px (paper: 400 PAIP2020, 200 CAMELYON16; at least 94).",
)
@click.option(
    "--tumor-overlap",
    type=float,
    default=None,
    help="Overlap of tumor tiles [default: chosen so the classes come out similar].",
)
@click.option(
    "--non-tumor-overlap",
    type=float,
    default=None,
    help="Overlap of non-tumor tiles [default: chosen likewise].",
)
@sift_options
@click.option(
    "--tumor-max-background",
    type=float,
    default=None,
    help="Background limit of the tumor tiles the rails are fitted on "
    "[default: --max-background]; 0.1 gives rails like the paper's 6.4-7.5 bits.",
)
@click.option(
    "--classes",
    type=click.Choice(["binary", "subtype"]),
    default="binary",
    show_default=True,
    help="Tumor vs non-tumor, or one class per slide label.",
)
@click.option(
    "--balance",
    type=click.Choice(["all", "tumor", "none"]),
    default="all",
    show_default=True,
    help="Random removal until all classes (or tumor vs non-tumor) are equal.",
)
@click.option(
    "--tile-source",
    type=click.Choice(["masked", "raw"]),
    default="masked",
    show_default=True,
    help="masked: the paper's tiles, cut with the other class blacked out; raw: tiles as "
    "segmentation sees them, labelled tumor when >= 75% of their tissue is truth and non-tumor "
    "when <= 25% (tiles between are dropped).",
)
@click.option(
    "--normalize",
    type=click.Choice(["none", "reinhard", "macenko", "vahadane"]),
    default="none",
    show_default=True,
    help="Stain-normalise thumbnails before tiling.",
)
@click.option(
    "--stain-reference",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Image whose stain is the target [default: the training slides].",
)
@click.option(
    "--val-fraction",
    type=float,
    default=None,
    help="Draw this share of each label's training slides as the validation split (written to "
    "OUT/manifest.csv) when the manifest has no val rows. Held-out figures in log.csv and "
    "`slidesift select` then use val, and test is scored once. [default: the manifest's val "
    "rows, else its test rows]",
)
@click.option("--epochs", type=int, default=75, show_default=True, help="Epochs in all.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--no-flips", is_flag=True, help="Turn off random horizontal/vertical flips.")
@click.option(
    "--rotations", is_flag=True, help="Also rotate training tiles by random multiples of 90 deg."
)
@click.option(
    "--hed-jitter",
    type=float,
    default=0.0,
    show_default=True,
    help="HED stain jitter strength (Tellez et al. 2019; 0.05 light, 0.2 strong): each tile's "
    "haematoxylin, eosin and DAB amounts are scaled by 1+-s and shifted by +-s.",
)
@click.option(
    "--scale-jitter",
    type=float,
    default=0.0,
    show_default=True,
    help="Zoom each training tile by a random factor in [1/(1+s), 1+s] (0.1: +-10%).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--workers", type=int, default=None, help="DataLoader workers [default: auto].")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its last complete epoch (same options; "
    "MANIFEST and tile options are read from the run).",
)
@click.option(
    "--export-tiles",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write the training tiles as PNGs in ImageFolder layout here.",
)
@click.option("--tiles-only", is_flag=True, help="Build and summarise the tile sets, do not train.")
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Thumbnail cache folder [default: $SLIDESIFT_CACHE or ~/.cache/slidesift].",
)
def train_command(
    manifest: Path | None,
    arch: str,
    encoder_weights: Path | None,
    out: Path,
    longest: int | None,
    mpp: float | None,
    tile: int,
    tumor_overlap: float | None,
    non_tumor_overlap: float | None,
    background: str,
    max_background: float,
    entropy: str,
    tumor_max_background: float | None,
    classes: str,
    balance: str,
    tile_source: str,
    normalize: str,
    stain_reference: Path | None,
    val_fraction: float | None,
    epochs: int,
    batch_size: int,
    lr: float,
    no_flips: bool,
    rotations: bool,
    hed_jitter: float,
    scale_jitter: float,
    seed: int,
    device: str,
    workers: int | None,
    resume: bool,
    export_tiles: Path | None,
    tiles_only: bool,
    cache: Path | None,
) -> None:
    """Train the lightweight CNN on a cohort manifest's train rows.

    Reads each slide at N (cached), cuts tumor and non-tumor tiles, fits the entropy rails on
    the tumor tiles, sifts, balances, and trains with Adam, saving a checkpoint after every
    epoch. Test rows are scored after each epoch: log.csv's holdout_raw_accuracy is the model's
    accuracy on the test slides' raw tiles, as segment cuts them (labelled by truth fraction).

    \b
    Examples (cohort of `slidesift phantom --out cohort --count 10`; writes
    run/epoch_001.safetensors ... run/epoch_005.safetensors and run/log.csv):
      slidesift train cohort/manifest.csv --out run -N 1500 -T 96 --epochs 5
    After an interrupt, or for more epochs (here a 6th):
      slidesift train --resume --out run --epochs 6
    With a validation split drawn from the training slides (OUT/manifest.csv):
      slidesift train cohort/manifest.csv --out runv -N 1500 -T 96 --val-fraction 0.25 --epochs 2
    One class per slide label (the phantom's subtypes):
      slidesift train cohort/manifest.csv --out run3 -N 1500 -T 96 --classes subtype --epochs 2
    One run on a subset of `slidesift subsets cohort/manifest.csv --out subsets -k 2`:
      slidesift train subsets/subset_1.csv --out run1 -N 1500 -T 96 --epochs 2
    Tiles as segmentation sees them (no blacked-out class) instead of the paper's:
      slidesift train cohort/manifest.csv --out runraw -N 1500 -T 96 --tile-source raw --epochs 2
    For slides from other centres (the best measured recipe across centres, docs/results.md):
      slidesift train cohort/manifest.csv --out runaug -N 1500 -T 96 --tile-source raw \\
        --normalize reinhard --hed-jitter 0.2 --rotations --scale-jitter 0.1 --epochs 2
    Only the tile sets, as PNGs in ImageFolder layout:
      slidesift train cohort/manifest.csv -N 1500 -T 96 --tiles-only --export-tiles tiles
    The paper's baseline, U-Net/EfficientNet-B0 (20 epochs by default, here 2; T 64 at
    N 1500 covers what the paper's 256 px covered at N 6000):
      slidesift train cohort/manifest.csv --arch unet-effb0 --out unet -N 1500 -T 64 \\
        --val-fraction 0.25 --epochs 2
    The paper's settings (N 6000, T 400, 75 epochs) are the defaults.
    """
    console = output_console()
    if not tiles_only:  # before minutes of tile preparation: a second run is refused at once
        hold_output_folder(out)
    normalization = None
    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    saved_arch = read_run(out).get("arch", CNN) if resume and (out / RUN_FILE).exists() else arch
    if UNET in (arch, saved_arch):
        cnn_only = [n for n in CNN_ONLY if given(n)]
        if cnn_only or classes != "binary":
            names = ", ".join("--" + n.replace("_", "-") for n in cnn_only or ["classes"])
            raise click.UsageError(f"{names}: the lightweight CNN's, not --arch {UNET}'s")
    elif encoder_weights is not None:
        raise click.UsageError(f"--encoder-weights is for --arch {UNET}")
    if resume and (out / RUN_FILE).exists():
        saved = read_resume_options(out)
        manifest, tileset_spec = saved["manifest"], saved["tileset"]
        normalization = saved["normalization"]
        train_spec = TrainSpec(
            **dict(saved["train"], **({"epochs": epochs} if given("epochs") else {}))
        )
        console.print(f"resuming {out} (options from {out / RUN_FILE})")
    else:
        if manifest is None:
            raise click.UsageError("give the cohort MANIFEST (or --resume with an existing --out)")
        if resume:
            raise click.UsageError(f"nothing to resume: {out / RUN_FILE} does not exist")
        if run_exists(out) and not tiles_only:
            raise TrainingError(*already_trained(out))
        spec: SiftSpec = sift_spec(background, max_background, entropy)
        downsample = resolve_downsample(longest, mpp)
        if arch == UNET:
            tile = tile if given("tile") else UNET_TILES["paip"]
            epochs = epochs if given("epochs") else UNET_EPOCHS
            lr = lr if given("lr") else UNET_LR
        tileset_spec = TileSetSpec(
            tile=tile,
            longest=downsample.longest,
            mpp=downsample.mpp,
            tumor_overlap=tumor_overlap,
            non_tumor_overlap=non_tumor_overlap,
            sift=spec,
            tumor_max_background=tumor_max_background,
            classes=classes,  # type: ignore[arg-type]
            balance=balance,  # type: ignore[arg-type]
            seed=seed,
            source=tile_source,  # type: ignore[arg-type]
        )
        train_spec = TrainSpec(
            epochs=epochs, batch_size=batch_size, lr=lr, flips=not no_flips, seed=seed,
            device=device, workers=workers,
            augment=AugmentSpec(rotations=rotations, hed=hed_jitter, scale=scale_jitter),
        )  # fmt: skip
    if normalize != "none" and normalization is None:
        hint = background_hint(tileset_spec.sift)
        if hint:
            console.print(f"[yellow]note:[/] {hint}")
    reference = None
    if stain_reference is not None:
        from slidesift.io.slide import open_slide, read_thumb

        with open_slide(stain_reference) as ref:
            reference = read_thumb(ref, longest=2000).pixels
    if UNET in (arch, saved_arch):
        _train_unet(
            manifest, out, tileset_spec, train_spec, normalize=normalize,
            normalization=normalization, reference=reference,
            val_fraction=None if resume else val_fraction, resume=resume, cache=cache,
            encoder_weights=encoder_weights,
        )  # fmt: skip
        return
    with console.status("reading slides (cached after the first run)") as status:
        prepared = prepare_tilesets(
            manifest,
            tileset_spec,
            normalize=None if normalize == "none" else normalize,  # type: ignore[arg-type]
            normalization=normalization,
            stain_reference=reference,
            val_fraction=None if resume else val_fraction,
            seed=train_spec.seed,
            cache=ThumbCache(cache) if cache is not None else None,
            on_slide=lambda e: status.update(f"read {e.name}"),
        )
    tiles = prepared.train
    console.print(tiles_table(tiles, f"training tiles (T={tile_of(tiles)}, {tiles.spec.classes})"))
    console.print(f"{tiles.rails}, fitted on {tiles.rails.n_tiles} tumor tiles")
    flips = "flips" if train_spec.flips else "no flips"
    console.print(f"augmentation: {flips}, {train_spec.augment.describe()}")
    if prepared.holdout is not None:
        split = prepared.holdout_split
        n_held = len(prepared.manifest.split(split or "test"))
        console.print(
            tiles_table(
                prepared.holdout, f"held-out tiles ({n_held} {split} slides, training rails)"
            )
        )
        if split == "test":
            console.print(
                "[yellow]note:[/] held out on the test slides (no val rows): fine to watch "
                "training, but choose epochs on a val split (--val-fraction 0.2) so that test is "
                "scored once"
            )
    if export_tiles is not None:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("writing tile PNGs", total=len(tiles))
            tiles.export_png(export_tiles, on_tile=lambda i: bar.advance(task))
        console.print(f"{len(tiles)} tiles written under {export_tiles}/<class>/")
    if tiles_only:
        return
    progress, callbacks = training_progress(console)
    out.mkdir(parents=True, exist_ok=True)
    used_manifest = Path(manifest).resolve()
    if val_fraction is not None and not resume:
        used_manifest = write_manifest(out / "manifest.csv", prepared.manifest.entries)
        console.print(f"train/val/test split written to {used_manifest}")
    with progress:
        result = train(
            tiles,
            out,
            train_spec,
            holdout=prepared.holdout,
            normalization=prepared.normalization,
            resume=resume,
            callbacks=callbacks,
            info={
                "manifest": str(used_manifest.resolve()),
                "holdout_split": prepared.holdout_split,
            },
        )
    _print_trained(console, result, out)


def tile_of(tiles: TileSet) -> int:
    """The set's tile side (for titles)."""
    return tiles.spec.tile


#: Options that shape the lightweight CNN's tile sets or augmentation only.
CNN_ONLY = (
    "tumor_overlap", "non_tumor_overlap", "tumor_max_background", "balance", "tile_source",
    "rotations", "hed_jitter", "scale_jitter", "export_tiles", "tiles_only",
)  # fmt: skip


def _train_unet(
    manifest: Path,
    out: Path,
    tileset_spec: TileSetSpec,
    train_spec: TrainSpec,
    *,
    normalize: str,
    normalization: dict[str, Any] | None,
    reference: Any,
    val_fraction: float | None,
    resume: bool,
    cache: Path | None,
    encoder_weights: Path | None,
) -> None:
    """``train --arch unet-effb0``: read the slides at N, then train with
    :func:`slidesift.unet_train.train_unet`."""
    from slidesift.unet_train import train_unet

    console = output_console()
    with console.status("reading slides (cached after the first run)") as status:
        prepared = prepare_slides(
            manifest, longest=tileset_spec.longest, mpp=tileset_spec.mpp,
            normalize=None if normalize == "none" else normalize,  # type: ignore[arg-type]
            normalization=normalization, stain_reference=reference, val_fraction=val_fraction,
            seed=train_spec.seed, cache=ThumbCache(cache) if cache is not None else None,
            on_slide=lambda e: status.update(f"read {e.name}"),
        )  # fmt: skip
    split = prepared.holdout_split if prepared.holdout else None
    console.print(
        f"U-Net/EfficientNet-B0 on {len(prepared.train)} training slides, T={tileset_spec.tile}, "
        f"{train_spec.epochs} epochs; held out: {len(prepared.holdout)} {split or '-'} slides"
    )
    if split == "test":
        console.print(
            "[yellow]note:[/] held out on the test slides (no val rows): choose epochs on a val "
            "split (--val-fraction 0.2) so that test is scored once"
        )
    used_manifest = Path(manifest).resolve()
    if val_fraction is not None and not resume:
        out.mkdir(parents=True, exist_ok=True)
        used_manifest = write_manifest(out / "manifest.csv", prepared.manifest.entries)
        console.print(f"train/val/test split written to {used_manifest}")
    progress, callbacks = training_progress(console)
    with progress:
        result = train_unet(
            prepared.train, out, train_spec, tileset_spec, holdout=prepared.holdout,
            normalization=(
                prepared.normalizer.to_dict() if prepared.normalizer is not None else None
            ),
            encoder_weights=encoder_weights, resume=resume, callbacks=callbacks,
            info={"manifest": str(used_manifest.resolve()), "holdout_split": split},
        )  # fmt: skip
    _print_trained(console, result, out)


def _print_trained(console: Any, result: TrainResult, out: Path) -> None:
    """The closing lines of a training run: epochs, device, resume point, last loss, folder."""
    if result.records:
        last = result.records[-1]
        console.print(
            f"trained {len(result.records)} epochs on {result.device}"
            + (f" (resumed after epoch {result.resumed_from})" if result.resumed_from else "")
            + f"; last: loss {last.train_loss:.4f}"
        )
    console.print(f"checkpoints and log.csv in [bold]{out}[/]")
