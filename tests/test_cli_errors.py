"""Mistakes a new user makes, each ending in one message, the documented exit code, no traceback.

The exit codes are the table of :mod:`slidesift.errors`. Files are tiny and built here: a
phantom slide, a checkpoint-shaped safetensors file written byte by byte (no torch needed).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from slidesift.cli.main import main
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.phantom import he_like_image
from slidesift.rails import Rails


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (whitespace collapsed: messages may wrap) of one command."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, " ".join(err.split())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A slide, its tumor mask, a checkpoint-shaped file, a truncated copy, rails fitted at 96."""
    root = tmp_path_factory.mktemp("errors")
    pixels, tumor = he_like_image((600, 800), seed=2, nucleus_px=5.0)
    slide = write_pyramidal_tiff(root / "case.svs", pixels, mpp=0.5, flavor="aperio")
    mask = write_pyramidal_tiff(
        root / "case_mask.tif", tumor.astype(np.uint8), compression="deflate", nearest=True,
        max_levels=1,
    )  # fmt: skip
    # the layout save_checkpoint writes: 8-byte header length, JSON header, tensor bytes
    header = {
        "w": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]},
        "__metadata__": {"slidesift": json.dumps({"format": "slidesift-checkpoint/1"})},
    }
    head = json.dumps(header).encode().ljust(0x230)  # space-padded as safetensors pads it
    data = struct.pack("<Q", len(head)) + head + bytes(256)
    checkpoint = root / "run" / "epoch_004.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(data)
    cut = root / "run" / "epoch_005.safetensors"  # interrupted while written by hand
    cut.write_bytes(data[: len(data) // 2])
    rails = Rails(5.0, 7.5, "rgb", 96, 100).save(root / "rails96.json")
    return {"slide": slide, "mask": mask, "checkpoint": checkpoint, "cut": cut, "rails": rails}


def test_checkpoint_given_as_rails(capsys, files, tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "sift", files["slide"], "-N", "400", "-T", "96", "--rails", files["checkpoint"],
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 6
    assert "this is a checkpoint (safetensors), not rails JSON" in err
    assert "slidesift rails --out" in err


def test_segment_with_swapped_arguments_names_the_slide_and_the_order(capsys, files) -> None:
    code, _, err = run(capsys, "segment", files["slide"], files["checkpoint"])
    assert code == 6
    assert "this is a slide (TIFF), not a slidesift checkpoint" in err
    assert "slidesift segment CHECKPOINT SLIDE|MANIFEST" in err
    assert "truncated" not in err and "--resume" not in err


def test_truncated_checkpoint_still_says_truncated_and_resume(capsys, files, tmp_path) -> None:
    # cut inside the tensors, and after the header length, whose bytes (30 02 00 ...) are also
    # valid UTF-8: still a checkpoint, not "text"
    stub = tmp_path / "epoch_006.safetensors"
    stub.write_bytes(files["checkpoint"].read_bytes()[:9])
    for cut in (files["cut"], stub):
        code, _, err = run(capsys, "segment", cut, files["slide"])
        assert code == 6
        assert "truncated" in err and "--resume" in err
        assert "not a slidesift checkpoint" not in err


def test_evaluate_given_a_slide_points_to_segment(capsys, files) -> None:
    code, _, err = run(capsys, "evaluate", files["checkpoint"], files["slide"])
    assert code == 4
    assert "this is a slide (TIFF), not a manifest CSV" in err
    assert f"slidesift segment {files['checkpoint']} {files['slide']}" in err
    assert "UTF-8" not in err


def test_a_slide_or_checkpoint_given_as_manifest_is_named(capsys, files, tmp_path) -> None:
    # the test checkpoint's first bytes are valid UTF-8: a CSV reader would look for columns
    code, _, err = run(capsys, "train", files["checkpoint"], "--out", tmp_path / "run")
    assert code == 4
    assert "this is a checkpoint (safetensors), not a manifest CSV" in err
    assert "order of the arguments" in err
    code, _, err = run(capsys, "train", files["slide"], "--out", tmp_path / "run")
    assert code == 4
    assert "this is a slide (TIFF), not a manifest CSV" in err
    assert "to segment one slide: slidesift segment CHECKPOINT SLIDE" in err


def test_rails_fitted_at_another_tile_size_are_refused(
    capsys, files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slidesift.cli.sift_cmd as sift_cmd

    def read(*_: object) -> None:  # refused before the slide is read (minutes at N = 6000)
        raise AssertionError("the slide was read")

    monkeypatch.setattr(sift_cmd, "read_slide_thumb", read)
    code, _, err = run(
        capsys, "sift", files["slide"], "-N", "400", "-T", "128", "--rails", files["rails"],
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 2
    assert "invalid tile=128: the rails were fitted at T=96" in err
    assert "sift at -T 96" in err and "slidesift rails" in err and "-T 128" in err


def test_sift_refuses_rails_of_another_tile_size_but_not_of_an_unknown_one() -> None:
    from slidesift.errors import ConfigError
    from slidesift.sift import measure_tiles, sift
    from slidesift.tiles import TileGrid

    pixels, _ = he_like_image((256, 256), seed=1)
    stats = measure_tiles(pixels, TileGrid.from_overlap((256, 256), tile=128, overlap=0.5))
    with pytest.raises(ConfigError, match="fitted at T=96"):
        sift(stats, Rails(0.0, 8.0, tile=96))
    assert sift(stats, Rails(0.0, 8.0, tile=128)).keep.sum() == stats.keep_background.sum()
    assert sift(stats, Rails(0.0, 8.0)).keep.sum() == stats.keep_background.sum()  # old files


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["info", "{missing}"], "case_1.svs"),
        (["sift", "{missing}"], "case_1.svs"),
        (["sift", "{slide}", "--rails", "{missing}"], "rails_400.json"),
        (["sift", "{slide}", "--truth", "{missing}"], "case.xml"),
        (["rails", "-s", "{missing}", "-t", "{mask}"], "case_1.svs"),
        (["rails", "-s", "{slide}", "-t", "{missing}"], "case_1_mask.tif"),
        (["segment", "{checkpoint}", "{missing}"], "case_1.svs"),
        (["segment", "{missing}", "{slide}"], "run/epoch_009.safetensors"),
        (["evaluate", "{checkpoint}", "{missing}"], "cohort/manifest.csv"),
        (["train", "{missing}", "--out", "run"], "cohort/manifest.csv"),
        (["select", "{missing}", "cohort.csv"], "run2"),
        (["subsets", "{missing}"], "manifest.csv"),
        (["report", "{missing}"], "seg"),
    ],
)
def test_a_missing_input_is_exit_2_for_every_command(
    capsys, files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, missing
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths, shown as typed
    argv = [a.format(missing=missing, **files) for a in args]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert f"'{missing}' does not exist" in err


def test_tables_in_a_file_keep_their_full_width(capsys, files, tmp_path: Path) -> None:
    # capsys, like a file or a pipe, is no terminal: rich would guess 80 columns and cut
    name = "TCGA-CR-7395-01A-01-TS1.3F2A9C1E-7B4D-4E8A-9C6F-1D2E3F4A5B6C_rescan_2024-03-18.svs"
    slide = tmp_path / name
    slide.write_bytes(files["slide"].read_bytes())
    code, out, err = run(capsys, "sift", slide, "-N", "400", "-T", "96", "--out", tmp_path / "maps")
    assert code == 0, err
    row = next(line for line in out.splitlines() if name[:20] in line)
    assert name in row and "…" not in out
    assert len(row) > 80


def test_the_training_line_says_tiles_per_second(tmp_path: Path) -> None:
    from rich.console import Console

    from slidesift.cli.views import training_progress
    from slidesift.train import EpochRecord

    console = Console(record=True, width=200)
    progress, callbacks = training_progress(console)
    assert callbacks.on_epoch_start is not None and callbacks.on_epoch_end is not None
    with progress:
        callbacks.on_epoch_start(1, 10)
        record = EpochRecord(1, 0.5, 0.75, seconds=4.0, tiles_per_second=25.0)
        callbacks.on_epoch_end(record, tmp_path / "epoch_001.safetensors")
    line = next(x for x in console.export_text().splitlines() if x.startswith("epoch"))
    assert line.endswith("25 tiles/s")


def test_a_truncated_svs_gives_only_slidesifts_error(
    capsys, files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Aperio writes the first IFD after the pixels: a cut file's header points past its end,
    # and tifffile logs "<tifffile.TiffPages @...> invalid offset to first page" to stderr
    cut = tmp_path / "cut.svs"
    cut.write_bytes(b"II*\x00" + struct.pack("<I", 1_000_000) + files["slide"].read_bytes()[8:4096])
    cut_late = tmp_path / "cut_late.svs"  # IFD first (as slidesift writes), cut in the pixels
    data = files["slide"].read_bytes()
    cut_late.write_bytes(data[: len(data) // 2])
    for path, why in ((cut, "invalid offset to first page 1000000"), (cut_late, "")):
        code, _, err = run(capsys, "info", path)
        assert code == 3
        assert f"cannot read slide '{path}': the TIFF cannot be decoded ({why}" in err
        assert "truncated or corrupt" in err
        assert "tifffile" not in err and "TiffPages" not in err
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]  # nor a log handler


def test_readme_says_how_to_run_slidesift_after_make() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    first_steps = readme[: readme.index("## ")]  # beside the make commands, before any section
    assert "source .venv/bin/activate" in first_steps and ".venv/bin/slidesift" in first_steps


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_unknown_outputs_are_a_usage_error_that_lists_the_kinds(
    capsys, files, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "out"
    code, _, err = run(capsys, command, files["checkpoint"], files["slide"], "--outputs",
                       "mask,pdf,overlays", "--out", out)  # fmt: skip
    assert code == 2 and "Invalid value for '--outputs': 'overlays,pdf': names from" in err
    assert "names from mask, overlay, errors, geojson, tiles, locations, or all" in err
    code, _, err = run(capsys, command, files["checkpoint"], files["slide"], "--preview-px", "8",
                       "--out", out)  # fmt: skip
    assert code == 2 and "'--preview-px': 8: at least 16 px, or 0 for the thumbnail's full" in err
    assert not out.exists()


def test_brackets_in_a_message_are_printed_not_taken_for_markup(capsys) -> None:
    """The pip extra in a missing-extra message (``slidesift[cohort]``) and a path with
    brackets reach the terminal as written: rich markup once swallowed ``[cohort]``, leaving
    the advice ``pip install 'slidesift'``, which installs nothing new."""
    import click

    from slidesift.cli.main import cli
    from slidesift.errors import MissingExtraError, SlideReadError

    @click.command("needs-dask")
    def needs_dask() -> None:
        raise MissingExtraError("dask", "cohort", "running a cohort on Dask")

    @click.command("bad-slide")
    def bad_slide() -> None:
        raise SlideReadError(Path("/data/[red]case[/].svs"), "not a slide")

    cli.add_command(needs_dask)
    cli.add_command(bad_slide)
    try:
        code, _, err = run(capsys, "needs-dask")
        assert code == 7
        assert "pip install 'slidesift[cohort]'" in err
        code, _, err = run(capsys, "bad-slide")
        assert code == 3
        assert "[red]case[/].svs" in err
    finally:
        del cli.commands["needs-dask"], cli.commands["bad-slide"]
