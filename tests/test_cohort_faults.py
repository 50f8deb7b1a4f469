"""Faults a cohort run meets: a worker process that dies under a slide, a slide changed in place.

The slides are small pyramidal TIFFs made here (one picture under several names), segmented
with a checkpoint that needs no training (:func:`conftest.discriminative_checkpoint`). Workers
die for real: a Dask worker preload (Dask's own mechanism, nothing in slidesift) makes the
worker's slide reader ``kill -9`` its own process on chosen slides.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import discriminative_checkpoint
from slidesift.cache import PARTIAL_EDGE, PARTIAL_WHOLE, file_identity, partial_digest
from slidesift.cohort import OUTCOME_FILE, WORKER_TRIES, run_cohort
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.manifest import ManifestEntry
from slidesift.phantom import he_like_image
from slidesift.segment import SegmentSpec

SPEC = SegmentSpec(stride=96)
OUTPUTS = "mask"


@dataclass(frozen=True)
class Slides:
    """A checkpoint and a folder of small slides with PNG masks."""

    checkpoint: Path
    folder: Path

    def entry(self, name: str, seed: int = 0) -> ManifestEntry:
        """A slide ``name.tif`` (picture ``seed``) with ``name_mask.tif``, made on first use.

        Both uncompressed, so that bytes overwritten in their middle are other pixels of a
        file that still reads.
        """
        slide, mask = self.folder / f"{name}.tif", self.folder / f"{name}_mask.tif"
        if not slide.exists():
            source = self.folder / f"source_{seed}.tif"
            if not source.exists():
                pixels, tumor = he_like_image((900, 1200), seed=seed, nucleus_px=4.0)
                write_pyramidal_tiff(source, pixels, mpp=1.0, compression="none")
                write_pyramidal_tiff(source.with_suffix(".mask"), tumor.astype(np.uint8),
                                     compression="none", nearest=True, max_levels=1)  # fmt: skip
            shutil.copy(source, slide)
            shutil.copy(source.with_suffix(".mask"), mask)
        return ManifestEntry(slide, mask, "tumor", "test")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Slides:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("faults")
    ck = discriminative_checkpoint(96, root)
    (root / "slides").mkdir()
    return Slides(ck.path, root / "slides")


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {r["slide"]: r for r in csv.DictReader((out / "scores.csv").open(encoding="utf-8"))}


# --------------------------------------------------------------- a worker that dies

PRELOAD = '''
"""Test preload: the slide reader kills its own worker process on chosen slides."""
import os
from pathlib import Path

import slidesift.evaluate as evaluate

_read = evaluate.read_slide


def read_slide(entry, *args, **kwargs):
    path = Path(entry.slide)
    if path.name.startswith("doomed"):  # dies on every try
        os.kill(os.getpid(), 9)
    if path.name.startswith("flaky"):  # dies on the first try only
        marker = path.with_suffix(".died")
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)
    return _read(entry, *args, **kwargs)


def dask_setup(worker):
    evaluate.read_slide = read_slide
'''


@pytest.fixture
def killing_workers(tmp_path: Path) -> Iterator[None]:
    """Workers of clusters started meanwhile load :data:`PRELOAD`."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    script = tmp_path / "kill_preload.py"
    script.write_text(PRELOAD, encoding="utf-8")
    with dask.config.set({"distributed.worker.preload": [str(script)]}):
        yield


@pytest.mark.slow
def test_a_slide_whose_worker_dies_is_retried_then_reported(
    made: Slides, tmp_path: Path, killing_workers: None
) -> None:
    entries = [made.entry("doomed"), made.entry("good_a"), made.entry("flaky"),
               made.entry("good_b")]  # fmt: skip
    out = tmp_path / "out"
    result = run_cohort(made.checkpoint, entries, SPEC, out=out, workers=2, outputs=OUTPUTS)
    status = {r.name: r for r in result.rows}
    assert [r.name for r in result.rows] == ["doomed", "good_a", "flaky", "good_b"]
    doomed = status["doomed"]
    assert doomed.status == "failed" and doomed.error_type == "WorkerDiedError"
    assert f"died, {WORKER_TRIES} time(s)" in doomed.error and "OpenSlide" in doomed.error
    # flaky's first worker died; a fresh process computed it
    died_pid = int((made.folder / "flaky.died").read_text())
    assert status["flaky"].status == "ok"
    assert int(status["flaky"].worker.rsplit(":", 1)[1]) != died_pid
    assert status["good_a"].status == status["good_b"].status == "ok"
    rows = _rows(out)
    assert list(rows) == ["doomed", "good_a", "flaky", "good_b"]  # every slide, in order
    assert rows["doomed"]["status"] == "failed"
    assert rows["doomed"]["error_type"] == "WorkerDiedError"
    assert all(rows[n]["status"] == "ok" and rows[n]["jaccard"] != ""
               for n in ("good_a", "flaky", "good_b"))  # fmt: skip
    figures = json.loads((out / "summary.json").read_text())
    assert (figures["slides"], figures["ok"], figures["failed"]) == (4, 3, 1)
    assert [f["slide"] for f in figures["failures"]] == ["doomed"]
    assert not (out / "doomed" / OUTCOME_FILE).exists()


@pytest.mark.slow
def test_a_rerun_tries_the_slide_whose_worker_died_again(made: Slides, tmp_path: Path) -> None:
    dask = pytest.importorskip("dask")
    entries = [made.entry("doomed2"), made.entry("good_c")]
    out = tmp_path / "out"
    script = tmp_path / "kill_preload.py"
    script.write_text(PRELOAD.replace('"doomed"', '"doomed2"'), encoding="utf-8")
    with dask.config.set({"distributed.worker.preload": [str(script)]}):
        first = run_cohort(made.checkpoint, entries, SPEC, out=out, workers=1, outputs=OUTPUTS)
    assert [r.status for r in first.rows] == ["failed", "ok"]
    # the slide's fault is gone (say, more memory): the rerun computes it, resumes the other
    again = run_cohort(made.checkpoint, entries, SPEC, out=out, workers=1, outputs=OUTPUTS)
    assert [r.status for r in again.rows] == ["ok", "resumed"]
    assert [r["status"] for r in _rows(out).values()] == ["ok", "resumed"]


# --------------------------------------------------------------- a slide changed in place


def _status(made: Slides, entries: list[ManifestEntry], out: Path, **kw: object) -> list[str]:
    result = run_cohort(made.checkpoint, entries, SPEC, out=out, outputs=OUTPUTS, **kw)  # type: ignore[arg-type]
    return [r.status for r in result.rows]


def _rewrite_keeping_mtime(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place and put the mtime back as it was."""
    st = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def test_a_slide_changed_in_place_is_recomputed(made: Slides, tmp_path: Path) -> None:
    a, b = made.entry("case_a"), made.entry("case_b")
    out = tmp_path / "out"
    assert _status(made, [a, b], out, scheduler="sync") == ["ok", "ok"]
    assert _status(made, [a, b], out, scheduler="sync") == ["resumed", "resumed"]
    mask_before = (out / "case_a" / "case_a_mask.png").read_bytes()
    # another picture copied over case_a's slide (same path, new size and mtime)
    made.entry("other", seed=7)
    shutil.copy(made.folder / "source_7.tif", a.slide)
    assert _status(made, [a, b], out, scheduler="sync") == ["ok", "resumed"]
    assert (out / "case_a" / "case_a_mask.png").read_bytes() != mask_before
    assert _status(made, [a, b], out, scheduler="sync") == ["resumed", "resumed"]
    # the same size and mtime, other bytes: only the hash tells
    size = a.slide.stat().st_size
    _rewrite_keeping_mtime(a.slide, size // 2, b"\x5a" * 64)
    assert _status(made, [a, b], out, scheduler="sync") == ["ok", "resumed"]
    # the annotation changed (same size, mtime restored)
    assert b.annotation is not None
    _rewrite_keeping_mtime(b.annotation, b.annotation.stat().st_size // 2, b"\xff" * 600)
    assert _status(made, [a, b], out, scheduler="sync") == ["resumed", "ok"]
    # a new mtime on the same bytes (touch, a copy without -p) also recomputes: on the safe side
    os.utime(b.slide, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _status(made, [a, b], out, scheduler="sync") == ["resumed", "ok"]
    stamp = json.loads((out / "case_a" / OUTCOME_FILE).read_text())["fingerprint"]["files"]
    assert stamp["slide"]["size"] == a.slide.stat().st_size
    assert stamp["slide"]["partial_blake2b"] == partial_digest(a.slide)
    assert stamp["annotation"]["mtime_ns"] == a.annotation.stat().st_mtime_ns  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_changed_slide_is_recomputed_on_a_local_cluster(made: Slides, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    a, b = made.entry("dask_a"), made.entry("dask_b")
    out = tmp_path / "out"
    assert _status(made, [a, b], out, workers=2) == ["ok", "ok"]
    _rewrite_keeping_mtime(b.slide, b.slide.stat().st_size // 2, b"\x10" * 300)
    assert _status(made, [a, b], out, workers=2) == ["resumed", "ok"]


def test_partial_digest_reads_ends_and_samples_of_a_large_file(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    rng = np.random.default_rng(0)
    big.write_bytes(rng.bytes(3 * PARTIAL_WHOLE))
    size = big.stat().st_size
    base = partial_digest(big)
    assert partial_digest(shutil.copy(big, tmp_path / "copy.bin")) == base  # content, not path
    for offset in (0, PARTIAL_EDGE - 1, size - 3, size - PARTIAL_EDGE, PARTIAL_EDGE):
        _rewrite_keeping_mtime(big, offset, b"\xff\x00\xff")
        assert partial_digest(big) != base, offset
        shutil.copy(tmp_path / "copy.bin", big)
    # the documented limit: a same-size change between the sampled blocks goes unseen
    _rewrite_keeping_mtime(big, PARTIAL_EDGE + 100_000, b"\xff\x00\xff")
    assert partial_digest(big) == base
    # a small file is hashed whole: any byte counts
    small = tmp_path / "small.bin"
    small.write_bytes(rng.bytes(PARTIAL_WHOLE // 2))
    first = partial_digest(small)
    _rewrite_keeping_mtime(small, PARTIAL_WHOLE // 4 + 12_345, b"\xff\x00\xff")
    assert partial_digest(small) != first
    assert file_identity(None) is None
    assert "error" in (file_identity(tmp_path / "missing.svs") or {})


def test_fingerprint_cost_on_real_slides(cmu1_svs: Path, tcga_svs: Path) -> None:
    """Identity of real SVS files: stable, about 3 MiB read; prints the time it takes."""
    for path in (cmu1_svs, tcga_svs):
        start = time.perf_counter()
        first = file_identity(path)
        took = time.perf_counter() - start
        assert first == file_identity(path)
        assert first is not None and first["size"] == path.stat().st_size
        print(f"file_identity({path.name}): {path.stat().st_size / 2**20:.1f} MiB, {took:.4f} s")


# --------------------------------------------------------------- the folder's lock


def test_a_locked_folder_refuses_and_a_stale_lock_file_does_not_count(
    made: Slides, tmp_path: Path
) -> None:
    from slidesift.errors import OutputLockedError
    from slidesift.io.lock import LOCK_FILE
    from test_lock import Holder

    a = made.entry("locked_a")
    out = tmp_path / "out"
    assert _status(made, [a], out, scheduler="sync") == ["ok"]
    assert not (out / LOCK_FILE).exists()  # released, and never an output
    holder = Holder(out)
    try:
        with pytest.raises(OutputLockedError, match=f"pid {holder.proc.pid}"):
            run_cohort(made.checkpoint, [a], SPEC, out=out, scheduler="sync", force=True)
        assert (out / "locked_a" / OUTCOME_FILE).is_file()  # the refused run touched nothing
    finally:
        holder.kill()  # kill -9: its lock file stays behind, unlocked
    assert (out / LOCK_FILE).exists()
    assert _status(made, [a], out, scheduler="sync") == ["resumed"]
    assert list(_rows(out)) == ["locked_a"]
