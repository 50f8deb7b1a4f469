"""``slidesift doctor``: what this installation can do, and what is missing for the rest."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from slidesift import __version__
from slidesift.cache import default_cache_dir
from slidesift.cli.options import output_console
from slidesift.errors import SlidesiftError
from slidesift.io.slide import open_slide


@dataclass(frozen=True)
class Check:
    """One line of the report: a component, what was found, and whether the job it serves works.

    ``essential`` components make ``doctor`` exit 1 when missing.
    """

    component: str
    found: str
    ok: bool
    serves: str
    essential: bool = False


def _module_version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "installed"))


def _openslide() -> Check:
    try:
        import openslide

        found = f"library {openslide.__library_version__}, python {openslide.__version__}"
        return Check("OpenSlide", found, True, "reading SVS / pyramidal TIFF slides", True)
    except Exception as exc:  # a broken native library raises OSError, not ImportError
        return Check("OpenSlide", f"missing ({exc})", False, "reading slides", True)


def _torch() -> list[Check]:
    version = _module_version("torch")
    if version is None:
        return [
            Check("torch", "missing: pip install 'slidesift[learn]'", False, "training"),
            Check("GPU", "unknown (no torch)", False, "fast training and segmentation"),
        ]
    import torch

    checks = [Check("torch", version, True, "training, torch inference")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        checks.append(Check("GPU", f"CUDA: {names}", True, "training and segmentation on GPU"))
    else:
        checks.append(Check("GPU", "none (CPU only)", True, "CPU paths are used"))
    return checks


def _onnxruntime() -> Check:
    from slidesift.inference import ORT_TELEMETRY_ENV

    os.environ.setdefault(ORT_TELEMETRY_ENV, "1")  # before the first import: no telemetry
    version = _module_version("onnxruntime")
    if version is None:
        return Check("ONNX Runtime", "missing: pip install 'slidesift[infer]'", False,
                     "fast CPU segmentation")  # fmt: skip
    import onnxruntime

    providers = ", ".join(onnxruntime.get_available_providers())
    return Check("ONNX Runtime", f"{version} ({providers})", True, "CPU segmentation (dense)")


def _optional(name: str, module: str, extra: str, serves: str) -> Check:
    version = _module_version(module)
    if version is None:
        return Check(name, f"missing: pip install 'slidesift[{extra}]'", False, serves)
    return Check(name, version, True, serves)


def _cache() -> Check:
    root = default_cache_dir()
    if root.exists():
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        found = f"{root} ({size / 1e6:.1f} MB)"
    else:
        found = f"{root} (empty, made on first use)"
    parent = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    writable = os.access(parent, os.W_OK)
    free = shutil.disk_usage(parent).free / 1e9
    return Check("thumbnail cache", f"{found}; {free:.1f} GB free", writable,
                 "reusing decoded thumbnails (set SLIDESIFT_CACHE to move it)")  # fmt: skip


def checks() -> list[Check]:
    """Every component slidesift uses, in the order a user cares about them."""
    found = [
        Check("slidesift", __version__, True, "", True),
        Check("Python", f"{platform.python_version()} ({platform.machine()})", True, "", True),
        Check("CPU cores", str(os.cpu_count() or 1), True, "threads for ONNX Runtime and Dask"),
        _openslide(),
        *_torch(),
        _onnxruntime(),
        _optional("Dask", "distributed", "cohort", "cohort runs (slidesift evaluate)"),
        _optional("matplotlib", "matplotlib", "report", "report figures"),
        _optional("wsidicom", "wsidicom", "dicom", "reading DICOM whole-slide images"),
        _cache(),
    ]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    found.append(
        Check(
            "Chromium",
            chromium or "not found (optional)",
            True,
            "only the report's screenshot test",
        )
    )
    return found


def slide_check(path: Path) -> Check:
    """Which reader opens ``path`` (per level, as ``read_thumb`` would use them), or why not."""
    try:
        with open_slide(path) as slide:
            readers = sorted({slide.reader_for(i) for i in range(slide.level_count)})
            found = f"opened by {', '.join(readers)} ({slide.format}, {slide.level_count} level(s))"
            return Check(f"slide {path.name}", found, True, "reading this slide")
    except SlidesiftError as exc:
        return Check(f"slide {path.name}", str(exc).splitlines()[0], False, "reading this slide")


@click.command()
@click.argument("slides", nargs=-1, type=click.Path(path_type=Path, exists=True))
def doctor(slides: tuple[Path, ...]) -> None:
    """Report versions (OpenSlide, wsidicom, torch, ONNX Runtime, Dask), GPU and cache folder.

    Exits 1 when something essential (OpenSlide) is missing; optional parts that are missing
    are listed with the pip extra that brings them. Each SLIDE given is opened, and the
    reader that opened it (openslide, tifffile, wsidicom, memory) is shown, or why it failed
    (then the exit code is 1).

    \b
    Examples:
      slidesift doctor
      slidesift doctor slide.svs scan.dcm
    """
    console = output_console()
    table = Table(title="slidesift doctor")
    for col in ("component", "found", "used for"):
        table.add_column(col)
    results = checks()
    opened = [slide_check(p) for p in slides]
    for c in results + opened:
        mark = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.essential else "[yellow]--[/]")
        if c in opened and not c.ok:
            mark = "[red]FAILED[/]"
        # escaped: `found` holds brackets that are no markup (pip install 'slidesift[learn]')
        table.add_row(f"{mark} {c.component}", escape(c.found), escape(c.serves))
    console.print(table)
    broken = [c.component for c in results if c.essential and not c.ok]
    if broken:
        raise click.ClickException(f"not usable: {', '.join(broken)} missing")
    unread = [c.component.removeprefix("slide ") for c in opened if not c.ok]
    if unread:
        raise click.ClickException(f"cannot read: {', '.join(unread)} (see the table)")
    missing = [c.component for c in results if not c.ok]
    if missing:
        console.print(f"ready; optional parts missing: {', '.join(missing)}")
    else:
        console.print("ready: every part slidesift uses is here")
