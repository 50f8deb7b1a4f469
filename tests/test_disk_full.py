"""A full disk at every write of every job: a clear error, no half file, earlier files intact.

Each job runs once cleanly into its folder, which records its writes in order (tests/faults.py
counts them at their fsync). Then, for each ``k``, the same command runs again into a copy of
that folder with the ``k``-th write failing half way with ENOSPC. The command must stop with
:class:`~slidesift.errors.OutputError` (exit code 8, one message naming the file and the full
disk, no traceback), leave no temporary file, leave every file complete, and leave the file it
failed to write as it was before. In a cohort, a slide whose outputs fail is reported failed
with the reason and the others finish.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import discriminative_checkpoint
from faults import Disk, DiskFull, check_folder, snapshot
from slidesift.cli.main import main
from slidesift.errors import OutputError

pytestmark = pytest.mark.learn
pytest.importorskip("torch", reason="needs torch, the 'learn' extra")

PREVIEW = ["--stride", "96", "--preview-px", "300"]


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Disk:
    """``disk_full.arm(k)``: the ``k``-th atomic write fails half way with ENOSPC."""
    return Disk(monkeypatch)


@dataclass(frozen=True)
class World:
    root: Path
    checkpoint: Path
    manifest: Path
    slide: Path
    mask: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Two 1000-px phantom slides with truth, a T = 96 checkpoint and its ONNX files; the
    module's cache folder (``SLIDESIFT_CACHE`` for this module only: it once leaked into every
    later test module, and the browser tests found no onnxruntime-web there)."""
    from slidesift.phantom.cohort import CohortSpec, make_cohort

    root = tmp_path_factory.mktemp("disk_full")
    spec = CohortSpec(count=2, longest=(1000, 1100), mpp=1.0, subtypes=1, seed=2, artifacts=0.0)
    make_cohort(spec, root / "cohort")
    (root / "model").mkdir()
    discriminative_checkpoint(96, root / "model")
    manifest = root / "cohort" / "manifest.csv"
    with manifest.open() as fh:
        first = next(csv.DictReader(fh))
    w = World(root, root / "model" / "t96.safetensors", manifest,
              root / "cohort" / first["slide"], root / "cohort" / first["annotation"])  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("SLIDESIFT_CACHE"):
            mp.setenv("SLIDESIFT_CACHE", str(root / "cache"))
        yield w


#: Job -> (its command line in a folder, the writes of a clean rerun into that folder).
JOBS: dict[str, tuple[Callable[[World, Path], list[str]], int]] = {
    "segment": (lambda w, d: ["segment", str(w.checkpoint), str(w.slide), "--truth", str(w.mask),
                              "--out", str(d / "seg"), *PREVIEW], 8),
    "evaluate": (lambda w, d: ["evaluate", str(w.checkpoint), str(w.manifest), "--out", str(d),
                               "--workers", "0", "--force", *PREVIEW], 16),
    "sift": (lambda w, d: ["sift", str(w.slide), "-N", "600", "-T", "96", "--truth", str(w.mask),
                           "--out", str(d)], 5),
    "rails": (lambda w, d: ["rails", "-s", str(w.slide), "-t", str(w.mask), "-N", "600",
                            "-T", "96", "--out", str(d / "rails.json")], 1),
    "report": (lambda w, d: ["report", str(d)], 1),
}  # fmt: skip


def cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, " ".join((out + err).split())  # rich wraps long lines


@pytest.fixture(scope="module")
def clean(world: World) -> dict[str, tuple[Path, list[Path]]]:
    """Each job run cleanly in its own folder: the folder, the writes into it (the first
    segmentation also caches the checkpoint's ONNX files, in the cache folder: not counted)."""
    folders: dict[str, tuple[Path, list[Path]]] = {}
    for job, (args, _) in JOBS.items():
        folder = world.root / "clean" / job
        if job == "report":  # the report of an evaluated cohort
            shutil.copytree(folders["evaluate"][0], folder)
        folder.mkdir(parents=True, exist_ok=True)
        fault = DiskFull()
        real, os.fsync = os.fsync, fault
        try:
            assert main(args(world, folder)) == 0, job
        finally:
            os.fsync = real
        folders[job] = (folder, [p for p in fault.writes if p.is_relative_to(folder)])
    return folders


def test_a_clean_rerun_writes_what_the_cases_expect(
    clean: dict[str, tuple[Path, list[Path]]],
) -> None:
    for job, (_, n) in JOBS.items():
        folder, writes = clean[job]
        assert len(writes) == n, (job, [str(p.relative_to(folder)) for p in writes])
        check_folder(folder)


#: Left to ``make test``: the middle writes of the two slowest jobs.
SLOW = {("evaluate", k) for k in range(1, 13)} | {("sift", k) for k in range(1, 4)}
CASES = [
    pytest.param(job, k, id=f"{job}-{k}",
                 marks=[pytest.mark.slow] if (job, k) in SLOW else [])
    for job, (_, n) in JOBS.items() for k in range(n)
]  # fmt: skip


@pytest.mark.parametrize(("job", "k"), CASES)
def test_disk_full_at_each_write(
    capsys: pytest.CaptureFixture[str],
    disk_full: Disk,
    world: World,
    clean: dict[str, tuple[Path, list[Path]]],
    tmp_path: Path,
    job: str,
    k: int,
) -> None:
    folder = tmp_path / job
    shutil.copytree(clean[job][0], folder)
    before = snapshot(folder)
    fault = disk_full.arm(k)
    code, text = cli(capsys, JOBS[job][0](world, folder))
    failed = fault.failed
    assert failed is not None and failed.is_relative_to(folder)
    rel = failed.relative_to(folder).as_posix()
    assert "Traceback" not in text
    assert "disk is full" in text and str(failed) in text, text
    slide_file = job == "evaluate" and "/" in rel
    if slide_file:  # the cohort goes on: that slide failed, the other is scored
        assert code == 0, text
        rows = {r["slide"]: r for r in csv.DictReader((folder / "scores.csv").open())}
        bad = rows[rel.split("/")[0]]
        assert bad["status"] == "failed" and bad["error_type"] == "OutputError"
        assert "disk is full" in bad["error"] and failed.name in bad["error"]
        assert [r["status"] for r in rows.values()].count("ok") == 1
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["ok"], summary["failed"]) == (1, 1)
        assert not (failed.parent / "outcome.json").exists()  # the slide is redone next time
    else:
        assert code == OutputError.exit_code, text
    check_folder(folder)
    after = snapshot(folder)
    if rel.endswith("/outcome.json"):  # removed when the slide starts: it is redone next time
        assert rel not in after
    else:
        assert after.get(rel) == before.get(rel), f"{rel} changed though its write failed"
    rewritten = {p.relative_to(folder).as_posix() for p in fault.writes} - {rel}
    for name, data in before.items():
        if name not in rewritten and name not in (
            "scores.csv",
            "summary.json",
            f"{rel.split('/')[0]}/outcome.json",
        ):
            assert after.get(name) == data, f"{name} of the earlier run changed"
    # the next run, with room on the disk, completes the job
    disk_full.heal()
    assert main(JOBS[job][0](world, folder)) == 0
    check_folder(folder)


# --- the ONNX export cache and the phantom maker -------------------------------


@pytest.mark.parametrize("k", [0, 1])
def test_disk_full_while_caching_the_onnx_export(
    capsys: pytest.CaptureFixture[str],
    disk_full: Disk,
    world: World,
    tmp_path: Path,
    k: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIDESIFT_CACHE", str(tmp_path / "cache"))  # an empty cache: export
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(world.checkpoint, model)
    ck = model / world.checkpoint.name
    args = ["segment", str(ck), str(world.slide), "--out", str(tmp_path / "seg"), *PREVIEW]
    fault = disk_full.arm(k)
    code, text = cli(capsys, args)
    assert fault.failed is not None and fault.failed.suffix == ".onnx"
    assert code == OutputError.exit_code and "disk is full" in text and str(fault.failed) in text
    assert "Traceback" not in text
    check_folder(model)
    disk_full.heal()  # undoes the test's monkeypatch, the cache folder too
    monkeypatch.setenv("SLIDESIFT_CACHE", str(tmp_path / "cache"))
    assert main(args) == 0
    check_folder(model)
    assert sorted(model.iterdir()) == [ck]  # the exports went to the cache, not beside it
    assert len(list((tmp_path / "cache" / "onnx").glob("*/*.onnx"))) == 2  # maps, head


@pytest.mark.slow
@pytest.mark.parametrize("k", range(9))  # the 9 files of a 2-slide cohort
def test_disk_full_while_making_a_phantom_cohort(
    capsys: pytest.CaptureFixture[str], disk_full: Disk, tmp_path: Path, k: int
) -> None:
    """The slides and masks are pyramidal TIFFs written by tifffile through atomic_write."""
    args = ["phantom", "--out", str(tmp_path / "c"), "-n", "2", "--size", "600-700", "--mpp", "1",
            "--artifacts", "none", "--seed", "3"]  # fmt: skip
    fault = disk_full.arm(k)
    code, text = cli(capsys, args)
    assert fault.failed is not None, len(fault.writes)
    assert code == OutputError.exit_code, text
    assert "disk is full" in text and str(fault.failed) in text and "Traceback" not in text
    check_folder(tmp_path / "c")
    disk_full.heal()
    assert main(args) == 0
    check_folder(tmp_path / "c")


# --- training: every epoch's files; resuming afterwards gives the same bits ----------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    """The tiny tile set, a clean 2-epoch run and a clean 1-epoch run."""
    from slidesift.train import train
    from slidesift.train_spec import TrainSpec
    from train_child import SPEC, tiles

    root = tmp_path_factory.mktemp("train_full")
    ts = tiles()
    train(ts, root / "two", TrainSpec(**{**SPEC, "epochs": 2}))  # type: ignore[arg-type]
    train(ts, root / "one", TrainSpec(**{**SPEC, "epochs": 1}))  # type: ignore[arg-type]
    return ts, root / "two", root / "one"


@pytest.mark.parametrize(
    ("start", "k"),
    [pytest.param(s, k, marks=[] if (s, k) in {("fresh", 2), ("resume", 3)} else
                  [pytest.mark.slow]) for s, n in (("fresh", 5), ("resume", 5)) for k in range(n)],
)  # fmt: skip
def test_disk_full_while_training(
    disk_full: Disk, runs: tuple[object, Path, Path], tmp_path: Path, start: str, k: int
) -> None:
    from slidesift.train import train
    from slidesift.train_spec import TrainSpec
    from train_child import SPEC, assert_same_run

    ts, two, one = runs
    out = tmp_path / "run"
    if start == "resume":  # epoch 1 on disk; epoch 2's writes fail
        shutil.copytree(one, out)
    before = snapshot(out) if out.exists() else {}
    spec = TrainSpec(**{**SPEC, "epochs": 2})  # type: ignore[arg-type]
    fault = disk_full.arm(k)
    with pytest.raises(OutputError, match="disk is full") as info:
        train(ts, out, spec, resume=start == "resume")  # type: ignore[arg-type]
    assert fault.failed is not None and info.value.path == fault.failed
    check_folder(out)
    rel = fault.failed.name
    assert snapshot(out).get(rel) == before.get(rel)
    disk_full.heal()
    train(ts, out, spec, resume=True)  # type: ignore[arg-type]
    assert_same_run(two, out, 2)


# --- the translation itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "words"),
    [(errno.ENOSPC, "disk is full"), (errno.EDQUOT, "quota"), (errno.EROFS, "read-only"),
     (errno.EACCES, "permission denied"), (errno.EFBIG, "larger than")],
)  # fmt: skip
def test_disk_faults_become_one_output_error(tmp_path: Path, err: int, words: str) -> None:
    from slidesift.io.atomic import atomic_write, atomic_write_text

    dest = tmp_path / "a.json"
    atomic_write_text(dest, "old\n")

    def direct(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(err, os.strerror(err))

    def wrapped(tmp: Path) -> None:  # as an encoder that re-raises its own error type
        try:
            direct(tmp)
        except OSError as exc:
            raise RuntimeError("encoder failed") from exc

    for write in (direct, wrapped):
        with pytest.raises(OutputError, match=words) as info:
            atomic_write(dest, write)
        assert info.value.path == dest and info.value.exit_code == 8 and info.value.hint
        assert dest.read_text() == "old\n" and not list(tmp_path.glob(".*.tmp"))


def test_other_failures_pass_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from slidesift.io.atomic import atomic_write

    def bad(tmp: Path) -> None:
        raise ValueError("not an image")

    with pytest.raises(ValueError, match="not an image"):
        atomic_write(tmp_path / "x.png", bad)
    with pytest.raises(FileNotFoundError):  # a missing folder is the caller's bug, not the disk
        atomic_write(tmp_path / "missing" / "x.png", lambda tmp: None)

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # the temporary file cannot be made
    with pytest.raises(OutputError, match="read-only"):
        atomic_write(tmp_path / "x.png", lambda tmp: None)
    assert not list(tmp_path.iterdir())
