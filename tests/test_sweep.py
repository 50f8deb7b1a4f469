"""``slidesift sweep``: an N x T grid of real (tiny) trainings, resumed, refused, failed, on Dask.

One in-process 2 x 2 sweep (N 640, 800 x T 96, 112; one epoch a cell, one torch thread) is the
reference every other run is compared with: the same seed gives the same figures, so an
interrupted and resumed sweep, and the cells of a Dask run, must reproduce it exactly.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slidesift.cli.main import main
from slidesift.errors import ConfigError, SweepError
from slidesift.report import build_report
from slidesift.segment import SegmentSpec
from slidesift.sweep import (
    CELLS_DIR,
    CSV_FILE,
    HEATMAP_FILE,
    SWEEP_FILE,
    SweepResult,
    SweepSpec,
    read_sweep,
    run_sweep,
)
from slidesift.tileset import TileSetSpec

pytestmark = pytest.mark.learn

NS, TS = (640, 800), (96, 112)
#: Raw tiles and a higher learning rate: one epoch is enough for tumor to be found (nonzero
#: scores, so "the same figures" means something); no accuracy floor, so that an epoch that
#: calls the val slide normal still qualifies; segmentation at 50% overlap (fast).
SPEC = SweepSpec(ns=NS, ts=TS, epochs=1, lr=5e-4, min_accuracy=None,
                 segment=SegmentSpec(overlap=0.5), tileset=TileSetSpec(source="raw"))  # fmt: skip
FIGURES = ("jaccard", "precision", "recall", "dice", "nonzero_jaccard", "slides")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five small PAIP-like slides (one label: 3 train, of which 1 is drawn as val; 2 test)."""
    from slidesift.phantom.cohort import CohortSpec, make_cohort

    root = tmp_path_factory.mktemp("sweep_cohort")
    make_cohort(
        CohortSpec(count=5, longest=(1100, 1300), mpp=2.0, subtypes=1, seed=5, artifacts=0.0),
        root,
    )
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep_cache")


@pytest.fixture(scope="module")
def reference(cohort: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    """The uninterrupted 2 x 2 sweep, in this process."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    return run_sweep(cohort, out, SPEC, cache=cache, threads=1)


def _figures(cell: dict[str, Any]) -> dict[str, Any]:
    return {
        "epoch": cell["epoch"],
        "tiles": cell["tiles"],
        "rails": cell["rails"],
        **{f"test_{k}": cell["test"][k] for k in FIGURES},
        **{f"val_{k}": cell["val"][k] for k in ("jaccard", "precision", "recall")},
    }


def _cell_json(out: Path, key: str) -> dict[str, Any]:
    return dict(json.loads((out / CELLS_DIR / key / "cell.json").read_text()))


def test_the_reference_sweep_has_every_cell(reference: SweepResult) -> None:
    out = reference.out
    assert [c["key"] for c in reference.cells] == [
        "N640_T96", "N640_T112", "N800_T96", "N800_T112"
    ]  # fmt: skip
    assert all(c["status"] == "ok" for c in reference.cells), reference.failures
    assert any(c["test"]["jaccard"] > 0 for c in reference.cells)  # the scores mean something
    for c in reference.cells:
        assert c["epoch"] == 1 and c["tiles"]["train"] > 0 and c["tiles"]["val"] > 0
        assert (out / CELLS_DIR / c["key"] / "run" / "epoch_001.safetensors").is_file()
        assert (out / CELLS_DIR / c["key"] / "run" / "selection.json").is_file()
    doc = read_sweep(out)
    assert doc is not None and doc["rows"] == list(NS) and doc["columns"] == list(TS)
    best = reference.best
    assert best is not None and doc["best"] == best["key"]
    assert best["test"]["jaccard"] == max(c["test"]["jaccard"] for c in reference.cells)
    rows = list(csv.DictReader((out / CSV_FILE).open()))
    assert [(int(r["n"]), int(r["t"])) for r in rows] == [(n, t) for n in NS for t in TS]
    assert (out / HEATMAP_FILE).read_bytes().startswith(b"\x89PNG")
    split = {r["slide"].split("/")[-1].split(".")[0]: r["split"]
             for r in csv.DictReader((out / "manifest.csv").open())}  # fmt: skip
    assert sorted(split.values()) == ["test", "test", "train", "train", "val"]
    # the table is rows N, columns T: table()[i][j] is (NS[i], TS[j])
    by_key = {c["key"]: c for c in reference.cells}
    for i, n in enumerate(NS):
        for j, t in enumerate(TS):
            assert reference.table()[i][j] == by_key[f"N{n}_T{t}"]["test"]["jaccard"]


def _mtimes(out: Path, key: str) -> dict[str, int]:
    folder = out / CELLS_DIR / key
    return {p.name: p.stat().st_mtime_ns for p in [folder / "cell.json", *(folder / "run").glob(
        "epoch_*.safetensors")] if p.exists()}  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_to_the_same_table(
    reference: SweepResult, cohort: Path, cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    seen: list[str] = []

    def stop_in_cell_2(key: str, stage: str) -> None:  # after cell 1, inside cell 2's run
        if key == "N640_T112" and stage.startswith("choosing"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cohort, out, SPEC, cache=cache, threads=1, on_stage=stop_in_cell_2,
                  on_cell=lambda c: seen.append(c["key"]))  # fmt: skip
    assert seen == ["N640_T96"]
    doc = read_sweep(out)
    assert doc is not None
    assert [c["status"] for c in doc["cells"]] == ["ok", "pending", "pending", "pending"]
    assert not (out / CELLS_DIR / "N640_T112" / "cell.json").exists()
    first = _mtimes(out, "N640_T96")
    second = _mtimes(out, "N640_T112")
    assert set(second) == {"epoch_001.safetensors"}  # trained, not yet chosen or scored

    result = run_sweep(cohort, out, SPEC, cache=cache, threads=1)
    assert [c["status"] for c in result.cells] == ["resumed", "ok", "ok", "ok"]
    assert _mtimes(out, "N640_T96") == first  # the finished cell was not touched
    assert _mtimes(out, "N640_T112")["epoch_001.safetensors"] == second["epoch_001.safetensors"]
    assert result.cells[1]["resumed_from_epoch"] == 1  # its training resumed, not redone
    for mine, ref in zip(result.cells, reference.cells, strict=True):
        assert mine["key"] == ref["key"]
        assert _figures(mine) == _figures(ref), mine["key"]
    assert result.table() == reference.table()


def test_another_recipe_in_the_same_folder_is_refused(
    reference: SweepResult, cohort: Path, cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    shutil.copytree(reference.out, out)
    before = (out / SWEEP_FILE).read_bytes()
    other = SweepSpec(**{**SPEC.__dict__, "epochs": 2})
    with pytest.raises(SweepError, match=r"another recipe \(epochs: 1 -> 2\)") as info:
        run_sweep(cohort, out, other, cache=cache)
    assert "--force" in str(info.value)
    assert (out / SWEEP_FILE).read_bytes() == before
    # a larger grid of the same recipe is no other recipe: the finished cells are reused,
    # and a cell that fails (N 80: every 96-px tile is larger than the thumbnails) is
    # recorded while the others finish
    wider = SweepSpec(**{**SPEC.__dict__, "ns": (80, *NS), "ts": (96,)})
    ck = out / CELLS_DIR / "N800_T96" / "cell.json"
    ck.unlink()  # this cell is computed again (its training resumed: all epochs are there)
    result = run_sweep(cohort, out, wider, cache=cache, threads=1)
    assert [c["status"] for c in result.cells] == ["failed", "resumed", "ok"]
    failed = result.cells[0]
    assert failed["key"] == "N80_T96" and failed["error_type"] and failed["error"]
    assert json.loads((out / CELLS_DIR / "N80_T96" / "cell.json").read_text())["status"] == (
        "failed"
    )
    assert _figures(result.cells[2]) == _figures(reference.cells[2])
    rows = list(csv.DictReader((out / CSV_FILE).open()))
    assert [r["status"] for r in rows] == ["failed", "resumed", "ok"]
    assert rows[0]["error"] == failed["error"]


def test_a_tile_below_the_cnn_minimum_is_refused_up_front(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"T.*80.*at least 94"):
        SweepSpec(ns=(400,), ts=(96, 80))
    code = main(["sweep", str(cohort), "--N", "400", "--T", "96,64", "--out",
                 str(tmp_path / "never")])  # fmt: skip
    assert code == 2
    assert not (tmp_path / "never").exists()


def _resume_with_cli(
    reference: SweepResult, cohort: Path, cache: Path, tmp_path: Path, run: Callable[..., Any]
) -> tuple[int, str]:
    out = tmp_path / "sweep"
    shutil.copytree(reference.out, out)
    code = run(
        "sweep", str(cohort), "--N", "640,800", "--T", "96,112", "--epochs", "1", "--lr",
        "5e-4", "--min-accuracy", "none", "--tile-source", "raw", "--overlap", "0.5",
        "--out", str(out), "--cache", str(cache),
    )  # fmt: skip
    return code, str(out)


def test_the_command_prints_the_table_rows_n_columns_t(
    reference: SweepResult, cohort: Path, cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, _ = _resume_with_cli(reference, cohort, cache, tmp_path, lambda *a: main(list(a)))
    text = capsys.readouterr().out
    assert code == 0, text
    assert text.count("resumed") == 4  # every cell was the reference's
    lines = [line for line in text.splitlines() if re.search(r"\b(N|640|800)\b.*[│┃]", line)]
    header = next(line for line in lines if "T 96" in line)
    assert header.index("T 96") < header.index("T 112")
    by_key = {c["key"]: c for c in reference.cells}  # not table(): it is what is tested
    j = [[f"{by_key[f'N{n}_T{t}']['test']['jaccard']:.3f}" for t in TS] for n in NS]
    row1 = next(line for line in lines if line.strip("│┃ ").startswith("640"))
    row2 = next(line for line in lines if line.strip("│┃ ").startswith("800"))
    for row, (a, b) in ((row1, j[0]), (row2, j[1])):  # rows N, columns T: (N, 96) then (N, 112)
        assert row.index(a) < row.index(b, row.index(a) + 5), (row, a, b)
    best = reference.best
    assert best is not None and f"best test jaccard: {best['key']}" in " ".join(text.split())


def test_the_report_draws_table_2_and_the_heatmap(reference: SweepResult) -> None:
    page = build_report(reference.out)
    table = page[page.index('id="sweep-table"') : page.index("</table>", page.index("sweep-table"))]
    assert re.findall(r"<th>T (\d+)</th>", table) == ["96", "112"]
    rows = re.findall(r"<tr><th>N (\d+)</th>(.*?)</tr>", table)
    assert [r[0] for r in rows] == ["640", "800"]
    by_key = {c["key"]: c for c in reference.cells}
    best = reference.best
    assert best is not None
    for n, body in rows:
        tds = re.findall(r"<td([^>]*)>", body)
        marked = [t for t, attrs in zip(TS, tds, strict=True) if 'class="best"' in attrs]
        assert marked == ([best["t"]] if best["n"] == int(n) else []), (n, marked, best["key"])
        cells = re.findall(r'<span class="j">([\d.]+)', body)
        assert cells == [f"{by_key[f'N{n}_T{t}']['test']['jaccard']:.3f}" for t in TS]
        epochs = re.findall(r"epoch (\d+)", body)
        assert epochs == ["1", "1"]
    assert table.count("★") == 1 and table.count('class="best"') == 1
    assert 'id="heatmap"' in page and "data:image/png;base64," in page
    assert "N640_T112" in page[page.index('id="cells"') :]


@pytest.mark.slow
def test_a_dask_run_gives_the_same_cells(
    reference: SweepResult, cohort: Path, cache: Path, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "sweep"
    row = SweepSpec(**{**SPEC.__dict__, "ns": (800,)})
    result = run_sweep(cohort, out, row, cache=cache, workers=2)
    assert [c["status"] for c in result.cells] == ["ok", "ok"]
    workers = {c["worker"] for c in result.cells}
    assert all(not w.endswith(f":{__import__('os').getpid()}") for w in workers)
    for key in ("N800_T96", "N800_T112"):
        assert _figures(_cell_json(out, key)) == _figures(_cell_json(reference.out, key)), key
