"""The cohort runner on a real Dask process cluster, and ``slidesift evaluate``."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import Learned
from slidesift.checkpoint import load_checkpoint
from slidesift.cli.main import main
from slidesift.cohort import (
    OUTCOME_FILE,
    CohortError,
    MissingExtraError,
    SlideRun,
    run_cohort,
)
from slidesift.errors import ConfigError
from slidesift.evaluate import evaluate_slides
from slidesift.manifest import ManifestEntry, read_manifest, write_manifest
from slidesift.segment import SegmentSpec
from slidesift.segment_outputs import OutputSpec

SPEC = SegmentSpec(stride=32)
OUTPUTS = ("mask.png", "overlay.png", "errors.png", "tumor.geojson", "tiles.csv", "locations.png")


@pytest.fixture(scope="module")
def cohort(learned: Learned) -> Path:
    """The manifest of the session's learned binary model's cohort."""
    return learned.manifest


@pytest.fixture(scope="module")
def checkpoint(learned: Learned) -> Path:
    """The session's learned binary model (N = 1000, T = 96)."""
    return learned.best


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real local cluster of two one-thread worker processes; its scheduler's address."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as c:
        yield c.scheduler_address


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.slow
def test_cluster_run_matches_in_process_scores(
    cohort: Path, checkpoint: Path, cluster: str, tmp_path: Path
) -> None:
    import distributed

    entries = read_manifest(cohort).split("test")
    seen: list[SlideRun] = []
    result = run_cohort(
        checkpoint, entries, SPEC, out=tmp_path, scheduler=cluster, on_slide=seen.append
    )
    assert sorted(r.name for r in seen) == sorted(e.name for e in entries)
    assert [r.name for r in result.rows] == [e.name for e in entries]  # manifest order
    assert all(r.status == "ok" for r in result.rows)
    with distributed.Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
    ran = {int(r.worker.rsplit(":", 1)[1]) for r in result.rows}
    assert ran <= pids and os.getpid() not in ran  # the tasks ran on the workers
    rows = list(csv.DictReader(result.scores_csv.open()))
    assert [r["slide"] for r in rows] == [e.name for e in entries]
    assert all(r["status"] == "ok" and r["error"] == "" for r in rows)
    for e in entries:
        for kind in OUTPUTS:
            assert (tmp_path / e.name / f"{e.name}_{kind}").stat().st_size > 0
        doc = json.loads((tmp_path / e.name / OUTCOME_FILE).read_text())
        assert doc["name"] == e.name and doc["fingerprint"]["spec"]["stride"] == 32
    here = evaluate_slides(entries, load_checkpoint(checkpoint), SPEC)
    for mine, ref in zip(result.outcomes, here, strict=True):
        assert mine.scores is not None and ref.scores is not None
        for k in ("jaccard", "dice", "precision", "recall"):
            assert _same(getattr(mine.scores, k), getattr(ref.scores, k)), (mine.name, k)
        assert (mine.vote, mine.counts, mine.kept_tiles) == (ref.vote, ref.counts, ref.kept_tiles)
    figures = json.loads(result.summary_json.read_text())
    assert (figures["slides"], figures["ok"], figures["failed"]) == (2, 2, 0)
    assert figures["mean_slides"] == 2


@pytest.mark.slow
def test_failing_slides_are_reported_and_the_others_finish(
    cohort: Path, checkpoint: Path, tmp_path: Path
) -> None:
    good = read_manifest(cohort).split("test")
    broken = tmp_path / "data" / "broken.tif"
    broken.parent.mkdir()
    broken.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000))  # TIFF magic, garbage
    odd = shutil.copy(good[0].slide, tmp_path / "data" / "odd.svs")
    narrow = tmp_path / "data" / "narrow_mask.png"
    cv2.imwrite(str(narrow), np.full((10, 60), 255, np.uint8))  # aspect 6:1, the slide's not
    manifest = write_manifest(
        tmp_path / "data" / "manifest.csv",
        [*good, ManifestEntry(broken, None, "solid", "test"),
         ManifestEntry(Path(odd), narrow, "solid", "test")],
    )  # fmt: skip
    entries = list(read_manifest(manifest))
    out = tmp_path / "out"
    # the default scheduler: a new local cluster (of one process, to start quickly)
    result = run_cohort(checkpoint, entries, SPEC, out=out, workers=1)
    assert [r.status for r in result.rows] == ["ok", "ok", "failed", "failed"]
    failed = {r.name: r for r in result.failures}
    assert failed["broken"].error_type == "SlideReadError"
    assert failed["odd"].error_type == "AnnotationError" and "aspect" in failed["odd"].error
    rows = {r["slide"]: r for r in csv.DictReader((out / "scores.csv").open())}
    assert rows["broken"]["status"] == "failed" and "broken.tif" in rows["broken"]["error"]
    assert rows["odd"]["error_type"] == "AnnotationError" and rows["odd"]["kept_tiles"] == ""
    assert rows[good[0].name]["status"] == "ok" and rows[good[0].name]["jaccard"] != ""
    figures = json.loads((out / "summary.json").read_text())
    assert (figures["ok"], figures["failed"], figures["mean_slides"]) == (2, 2, 2)
    assert [f["slide"] for f in figures["failures"]] == ["broken", "odd"]
    assert not (out / "broken" / OUTCOME_FILE).exists()
    assert not (out / "odd" / OUTCOME_FILE).exists()
    for e in good:
        assert (out / e.name / OUTCOME_FILE).is_file()


@pytest.mark.slow
def test_rerun_resumes_only_unfinished_slides(
    cohort: Path, checkpoint: Path, cluster: str, tmp_path: Path
) -> None:
    a, b = read_manifest(cohort).split("test")
    first = run_cohort(checkpoint, [a, b], SPEC, out=tmp_path, scheduler=cluster)
    before = _mtimes(tmp_path / a.name)
    (tmp_path / b.name / OUTCOME_FILE).unlink()  # b was interrupted before its last write
    again = run_cohort(checkpoint, [a, b], SPEC, out=tmp_path, scheduler=cluster)
    assert [r.status for r in again.rows] == ["resumed", "ok"]
    assert _mtimes(tmp_path / a.name) == before  # a was not touched
    assert (tmp_path / b.name / OUTCOME_FILE).is_file()
    was, back = first.outcomes[0], again.outcomes[0]  # a's row comes back from outcome.json
    assert was.scores is not None and back.scores is not None
    assert _same(was.scores.jaccard, back.scores.jaccard) and was.counts == back.counts
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert [r["status"] for r in rows] == ["resumed", "ok"]
    # other options: nothing matches, everything is recomputed
    smoother = SegmentSpec(stride=32, smooth=3)
    third = run_cohort(checkpoint, [a, b], smoother, out=tmp_path, scheduler=cluster)
    assert [r.status for r in third.rows] == ["ok", "ok"]
    assert _mtimes(tmp_path / a.name)[OUTCOME_FILE] > before[OUTCOME_FILE]
    # a slide whose outputs were lost is recomputed too
    (tmp_path / a.name / f"{a.name}_mask.png").unlink()
    fourth = run_cohort(checkpoint, [a, b], smoother, out=tmp_path, scheduler=cluster)
    assert [r.status for r in fourth.rows] == ["ok", "resumed"]


def test_evaluate_command_in_process(
    capsys: pytest.CaptureFixture[str], cohort: Path, checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(checkpoint), str(cohort), "--split", "test", "--stride", "32",
            "--out", str(out), "--workers", "0"]  # fmt: skip
    code = main(args)
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "mean Jaccard" in text and "2 computed, 0 resumed" in text
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert json.loads((out / "summary.json").read_text())["ok"] == 2
    assert main(args) == 0
    assert "0 computed, 2 resumed" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0
    assert "2 computed, 0 resumed" in capsys.readouterr().out
    # other outputs: recomputed, and only those files
    assert main([*args, "--outputs", "tiles,mask"]) == 0
    assert "2 computed, 0 resumed" in capsys.readouterr().out
    name = rows[0]["slide"]
    assert sorted(p.name for p in (out / name).iterdir()) == [
        OUTCOME_FILE,
        f"{name}_mask.png",
        f"{name}_tiles.csv",
    ]
    assert main([*args, "--outputs", "mask,tiles"]) == 0
    assert "0 computed, 2 resumed" in capsys.readouterr().out


def test_rerun_respects_the_outputs_choice(cohort: Path, checkpoint: Path, tmp_path: Path) -> None:
    entry = read_manifest(cohort).split("test")[0]
    folder, name = tmp_path / entry.name, entry.name

    def status(outputs: object) -> str:
        result = run_cohort(checkpoint, [entry], SPEC, out=tmp_path, scheduler="sync",
                            outputs=outputs)  # type: ignore[arg-type]  # fmt: skip
        return result.rows[0].status

    assert status("mask,geojson") == "ok"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [OUTCOME_FILE, f"{name}_mask.png", f"{name}_tumor.geojson"]
    doc = json.loads((folder / OUTCOME_FILE).read_text())
    assert doc["files"] == files[1:]
    assert doc["fingerprint"]["outputs"] == {"kinds": ["mask", "geojson"], "preview_px": 2000}
    assert status(["geojson", "mask"]) == "resumed"  # the same choice, spelt otherwise
    assert status(None) == "ok"  # the default writes more: recomputed
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [OUTCOME_FILE, *(f"{name}_{k}" for k in OUTPUTS)]
    )
    assert status(OutputSpec(preview_px=200)) == "ok"  # other previews: recomputed
    overlay = cv2.imread(str(folder / f"{name}_overlay.png"))
    assert max(overlay.shape[:2]) == 200
    assert status(OutputSpec(preview_px=200)) == "resumed"
    with pytest.raises(ConfigError, match="overlays"):
        run_cohort(checkpoint, [entry], SPEC, out=tmp_path, outputs="overlays")


def test_evaluate_command_fails_only_when_every_slide_fails(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a slide")
    manifest = write_manifest(tmp_path / "m.csv", [ManifestEntry(bad)])
    code = main(["evaluate", str(checkpoint), str(manifest), "--workers", "0",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    text, err = capsys.readouterr()
    assert code == 1
    assert "SlideReadError" in text and "all 1 slide(s) failed" in err


def test_missing_dask_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, cohort: Path, checkpoint: Path, tmp_path: Path
) -> None:
    entries = read_manifest(cohort).split("test")[:1]
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'slidesift\[cohort\]'"):
        run_cohort(checkpoint, entries, SPEC, out=tmp_path / "dask")
    # in process needs no Dask
    result = run_cohort(checkpoint, entries, SPEC, out=tmp_path / "sync", scheduler="sync")
    assert [r.status for r in result.rows] == ["ok"]


def test_bad_options_and_clashing_names(cohort: Path, checkpoint: Path, tmp_path: Path) -> None:
    entries = read_manifest(cohort).split("test")
    with pytest.raises(ConfigError, match="scheduler"):
        run_cohort(checkpoint, entries, out=tmp_path, scheduler="my-cluster")
    with pytest.raises(ConfigError, match="workers"):
        run_cohort(checkpoint, entries, out=tmp_path, scheduler="tcp://127.0.0.1:1", workers=2)
    twin = ManifestEntry(tmp_path / "elsewhere" / entries[0].slide.name)
    with pytest.raises(CohortError, match="share a name"):
        run_cohort(checkpoint, [*entries, twin], out=tmp_path)
