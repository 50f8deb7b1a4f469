"""The command line: outputs, exit codes, clean error messages (help: test_help_examples)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from slidesift import Rails
from slidesift.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info(capsys, camelyon_like) -> None:
    code, out, _ = run(capsys, "info", str(camelyon_like.slide))
    assert code == 0
    assert "generic-tiff" in out and "4096 x 3072" in out and "0.25" in out


def test_sift_with_truth_writes_maps_and_table(capsys, camelyon_like, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "sift", str(camelyon_like.slide), "-N", "1024", "-T", "64", "--overlap", "0.5",
        "--truth", str(camelyon_like.xml), "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, err
    assert "fitted rails" in out
    summary = json.loads((out_dir / "node_summary.json").read_text())
    assert summary["tile"] == 64 and summary["stride"] == 32
    with (out_dir / "node_tiles.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["tiles"] == 31 * 23
    assert sum(int(r["keep"]) for r in rows) == summary["kept"]
    assert 0 < summary["kept"] < summary["tiles"]
    locations = cv2.imread(str(out_dir / "node_locations.png"), cv2.IMREAD_GRAYSCALE)
    assert locations.shape == (768, 1024)
    assert set(locations.ravel().tolist()) <= {0, 255}


def test_rails_command_fits_and_saves(capsys, camelyon_like, tmp_path: Path) -> None:
    path = tmp_path / "rails.json"
    code, out, err = run(
        capsys, "rails", "-s", str(camelyon_like.slide), "-t", str(camelyon_like.xml),
        "-N", "1024", "-T", "64", "--spread", "32,128", "--out", str(path),
    )  # fmt: skip
    assert code == 0, err
    rails = Rails.load(path)
    assert rails.tile == 64 and 0 < rails.lo < rails.hi <= 8
    assert "spread" in out and "128" in out
    # the saved rails sift another run
    code, _, err = run(
        capsys, "sift", str(camelyon_like.slide), "-N", "1024", "-T", "64",
        "--rails", str(path), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["sift", "missing.svs"], 2, "Path 'missing.svs' does not exist"),
        (["sift", "{slide}", "--overlap", "1.5", "-N", "512"], 2, "invalid overlap=1.5"),
        (["sift", "{slide}", "-T", "900", "-N", "512"], 2, "invalid tile=900"),
        (["sift", "{slide}", "--mpp", "1", "-N", "512"], 2, "not both"),
        (["rails", "-s", "{slide}", "-t", "{slide}", "-N", "512"], 2, "invalid tile=400"),
        (["rails", "-s", "{slide}", "-t", "{square}", "-T", "64"], 4, "aspect"),
        (["rails", "-s", "{slide}", "-s", "{slide}", "-t", "{square}"], 2, "pair them"),
    ],
)
def test_errors_are_one_clear_message(
    capsys, camelyon_like, tmp_path: Path, args, code, message
) -> None:
    square = tmp_path / "square_mask.png"
    cv2.imwrite(str(square), cv2.UMat(100, 100, cv2.CV_8UC1, 0).get())
    argv = [a.format(slide=camelyon_like.slide, square=square) for a in args]
    got, out, err = run(capsys, *argv)
    assert got == code
    assert message in (out + err)
    assert "Traceback" not in out + err


@pytest.mark.slow
@pytest.mark.learn
def test_demo_runs_end_to_end(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "demo"))
    assert code == 0, err
    assert "tumor covered" in out
    (overlay,) = (tmp_path / "demo" / "rails").glob("*_locations_overlay.png")
    assert max(cv2.imread(str(overlay)).shape[:2]) == 1200
    assert (tmp_path / "demo" / "phantom" / "manifest.csv").exists()
    assert Rails.load(tmp_path / "demo" / "rails.json").tile == 96
    log = (tmp_path / "demo" / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 5 and "held-out raw tiles: acc" in out
    assert (tmp_path / "demo" / "run" / "epoch_005.safetensors").exists()
    # selection, Dask segmentation of the two test slides, scores table, report
    best = json.loads((tmp_path / "demo" / "run" / "selection.json").read_text())["epoch"]
    assert 1 <= best <= 5 and "model selection" in out
    rows = list(csv.DictReader((tmp_path / "demo" / "segment" / "scores.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    # the demo's model finds the tumor (measured: Jaccard 0.889 and 0.842, recall 0.948 and
    # 0.903 on the 2-core VM); a broken method does not
    assert all(float(r["jaccard"]) >= 0.6 and float(r["recall"]) >= 0.7 for r in rows), rows
    log = list(csv.DictReader((tmp_path / "demo" / "run" / "log.csv").open()))
    assert float(log[best - 1]["holdout_raw_accuracy"]) >= 0.9
    for r in rows:
        assert r["slide"] in out
    assert "Jaccard" in out and "precision" in out and "recall" in out
    report = tmp_path / "demo" / "segment" / "report.html"
    html = report.read_text()
    assert all(r["slide"] in html for r in rows) and "data:image/png;base64" in html
    tail = "".join(out.split("open the report:")[-1].split())  # rich may wrap the path
    assert tail == str(report)


def test_slidesift_warnings_print_as_one_advice_line(capsys) -> None:
    import warnings

    from slidesift.cli.main import _show_warning
    from slidesift.segment import OutOfDomainWarning

    _show_warning(OutOfDomainWarning("the slide has no MPP"), OutOfDomainWarning, "x.py", 3)
    err = capsys.readouterr().err
    assert err.strip() == "warning: the slide has no MPP"
    with warnings.catch_warnings(record=True) as shown:  # others go to Python's own display
        _show_warning(UserWarning("from elsewhere"), UserWarning, "lib.py", 7)
    assert "warning: from elsewhere" not in capsys.readouterr().err
    assert [str(w.message) for w in shown] == ["from elsewhere"]
    before = warnings.showwarning
    assert main(["--version"]) == 0
    assert warnings.showwarning is before  # main leaves Python's display as it found it
