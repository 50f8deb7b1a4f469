"""``slidesift export``: a model bundle to hand on, and a static page that segments in a browser."""

from __future__ import annotations

from pathlib import Path

import click

from slidesift.cli.options import output_console


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write a model bundle here (one zip file, conventionally *.slidesift).",
)
@click.option(
    "--web",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write a static page that segments thumbnails in the browser into this folder.",
)
@click.option(
    "--int8/--no-int8",
    default=True,
    show_default=True,
    help="Put the int8 trunk and head in the bundle (quantised now if not cached).",
)
@click.option(
    "--runtime",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    envvar="SLIDESIFT_ORT_WEB",
    help="onnxruntime-web 1.31.1 for --web: its dist/ folder, package folder or the .tgz of "
    "`npm pack onnxruntime-web@1.31.1` [default: $SLIDESIFT_ORT_WEB, else the cache's copy "
    "that `make web-runtime` puts there].",
)
def export_command(
    checkpoint: Path, out: Path | None, web: Path | None, int8: bool, runtime: Path | None
) -> None:
    """Export a checkpoint as a bundle that segments without torch, or as a web page.

    A bundle holds the ONNX graphs (fp32, and int8 unless --no-int8), the rails, the sift
    options, the stain normaliser, N or um/px, T, the classes, and the source checkpoint's
    digest, epoch and metrics. segment, evaluate and select take it wherever they take a
    checkpoint; with a bundle they need only the `infer` extra (no torch):
    pip install 'slidesift[infer]'.

    The page (--web) takes a thumbnail as `slidesift thumb --model` writes it, sifts and
    classifies its tiles in the browser (onnxruntime-web, WASM), draws the mask with a
    threshold slider and offers the mask as PNG and QuPath GeoJSON. Nothing leaves the page;
    serve the folder with any static web server.

    \b
    Examples (a run of `slidesift train cohort/manifest.csv --out run ...`):
      slidesift export run/epoch_005.safetensors --out model.slidesift
      slidesift export model.slidesift --web page

    \b
    Then segment a slide with the bundle (no torch needed), or make a thumbnail for the
    page, serve the page and open http://localhost:8000 to drop case.png on it:
      slidesift segment model.slidesift cohort/slides/paip_006.svs --out paip_006
      slidesift thumb cohort/slides/paip_006.svs --model model.slidesift --out case.png
      python3 -m http.server -d page 8000
    """
    from slidesift.checkpoint import load_checkpoint

    if out is None and web is None:
        raise click.UsageError("give --out BUNDLE, --web FOLDER, or both")
    console = output_console()
    ck = load_checkpoint(checkpoint)
    if out is not None:
        from slidesift.bundle import bundle_summary, load_bundle, write_bundle

        with console.status("exporting the ONNX graphs" + (" and int8" if int8 else "")):
            write_bundle(ck, out, int8=int8)
        made = bundle_summary(load_bundle(out))  # read back: what a user will load
        console.print(
            f"bundle [bold]{out}[/] ({out.stat().st_size / 2**20:.1f} MB): "
            f"{', '.join(made['graphs'])}; from {made['source']} (epoch {made['epoch']}, "
            f"digest {made['digest']})"
        )
    if web is not None:
        from slidesift.web import export_web

        with console.status("writing the page"):
            page = export_web(ck, web, runtime=runtime)
        console.print(
            f"page in [bold]{page}[/]: serve it (python3 -m http.server -d {page} 8000) and "
            "open http://localhost:8000"
        )
