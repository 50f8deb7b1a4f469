"""The in-process cohort pipeline: read ahead, classify, write behind.

It must give what one slide after another gives (scores, files, order), really overlap the
stages, hold at most three slides, and turn a read, a segmentation or a write that fails into
that slide's failed row while the others finish.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from conftest import Learned
from slidesift import cohort_pipeline
from slidesift.cohort import OUTCOME_FILE, run_cohort
from slidesift.manifest import ManifestEntry, read_manifest, write_manifest
from slidesift.segment import SegmentSpec

SPEC = SegmentSpec(stride=32)

pytestmark = pytest.mark.slow  # the session's learned model


class _Clock:
    """Records when each stage of each slide started and ended (wraps the real stages)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.spans: dict[tuple[str, str], tuple[float, float]] = {}
        self.threads: dict[str, set[str]] = {"read": set(), "evaluate": set(), "write": set()}
        self.alive: set[str] = set()  # slides read and not yet written
        self.most_alive = 0
        self._lock = threading.Lock()
        for stage, attr in (("read", "read_stage"), ("evaluate", "evaluate_stage"),
                            ("write", "write_stage")):  # fmt: skip
            monkeypatch.setattr(
                cohort_pipeline, attr, self._timed(stage, getattr(cohort_pipeline, attr))
            )

    def _timed(self, stage: str, real: Any) -> Any:
        def run(*args: Any) -> Any:
            name = args[1].name if stage != "write" else args[0].entry.name
            with self._lock:
                if stage == "read":
                    self.alive.add(name)
                    self.most_alive = max(self.most_alive, len(self.alive))
                self.threads[stage].add(threading.current_thread().name)
            start = time.perf_counter()
            try:
                return real(*args)
            finally:
                with self._lock:
                    self.spans[stage, name] = (start, time.perf_counter())
                    if stage == "write":
                        self.alive.discard(name)

        return run


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != OUTCOME_FILE}


def test_pipeline_gives_what_one_after_another_gives_and_overlaps_the_stages(
    learned: Learned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = list(read_manifest(learned.manifest))
    assert len(entries) == 6
    plain = run_cohort(learned.best, entries, SPEC, out=tmp_path / "plain", workers=0,
                       pipeline=False)  # fmt: skip
    clock = _Clock(monkeypatch)
    piped = run_cohort(learned.best, entries, SPEC, out=tmp_path / "piped", workers=0)
    assert [r.name for r in piped.rows] == [e.name for e in entries]
    assert all(r.status == "ok" for r in piped.rows + plain.rows)
    for a, b in zip(piped.outcomes, plain.outcomes, strict=True):
        assert (a.scores, a.vote, a.counts, a.kept_tiles) == (b.scores, b.vote, b.counts,
                                                              b.kept_tiles)  # fmt: skip
        assert _files(tmp_path / "piped" / a.name) == _files(tmp_path / "plain" / b.name)
    # every stage of every slide ran, reads and writes on their own threads
    assert len(clock.spans) == 3 * len(entries)
    assert clock.threads["write"] and all("slidesift-write" in t for t in clock.threads["write"])
    assert any("slidesift-read" in t for t in clock.threads["read"])
    names = [e.name for e in entries]
    for before, after in itertools.pairwise(names):
        # the next slide's read began before this one's segmentation ended ...
        assert clock.spans["read", after][0] < clock.spans["evaluate", before][1]
        # ... and this one's write began before the next one's segmentation ended
        assert clock.spans["write", before][0] < clock.spans["evaluate", after][1]
    assert clock.most_alive <= 3


def test_a_failing_read_segmentation_or_write_fails_only_its_slide(
    learned: Learned, tmp_path: Path
) -> None:
    good = list(read_manifest(learned.manifest))[:3]
    data = tmp_path / "data"
    data.mkdir()
    broken = data / "broken.tif"
    broken.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000))  # TIFF magic, garbage
    odd = Path(shutil.copy(good[0].slide, data / "odd.tif"))
    narrow = data / "narrow_mask.png"
    cv2.imwrite(str(narrow), np.full((10, 60), 255, np.uint8))  # aspect 6:1: truth refused
    entries = [good[0], ManifestEntry(broken, None, "solid", "test"), good[1],
               ManifestEntry(odd, narrow, "solid", "test"), good[2]]  # fmt: skip
    manifest = write_manifest(data / "manifest.csv", entries)
    entries = list(read_manifest(manifest))
    out = tmp_path / "out"
    # the third slide's mask cannot be written: a folder stands where its file goes
    (out / good[1].name / f"{good[1].name}_mask.png").mkdir(parents=True)
    result = run_cohort(learned.best, entries, SPEC, out=out, workers=0)
    assert [r.name for r in result.rows] == [e.name for e in entries]
    assert [r.status for r in result.rows] == ["ok", "failed", "failed", "failed", "ok"]
    errors = {r.name: r.error_type for r in result.failures}
    assert errors["broken"] == "SlideReadError" and errors["odd"] == "AnnotationError"
    assert errors[good[1].name] in ("IsADirectoryError", "OutputError", "OSError")
    for e in entries:
        assert (out / e.name / OUTCOME_FILE).exists() == (e.name in (good[0].name, good[2].name))
