"""A full disk on demand: the k-th file slidesift writes fails with ENOSPC, half written.

Every file slidesift writes goes through :func:`slidesift.io.atomic.atomic_write`, which
fsyncs its temporary file (``.NAME.XXXXXXXX.tmp``) once, whatever wrote the bytes (Python,
tifffile, libdeflate, onnx.save). :class:`DiskFull` replaces ``os.fsync``: it records each
such file in order and, at the chosen one, cuts the temporary file to half its size and raises
``OSError(ENOSPC)``, as a disk that fills up in the middle of a file does. Other fsyncs pass.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import threading
from pathlib import Path

import pytest

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


class DiskFull:
    """Counts atomic writes; the ``fail_at``-th (0-based; ``None``: none) fails with ENOSPC.

    Attributes
    ----------
    writes
        Destination paths in the order their writes reached the disk (the failed one too).
    failed
        The destination whose write failed, once it has.
    """

    def __init__(self, fail_at: int | None = None, err: int = errno.ENOSPC) -> None:
        self.fail_at = fail_at
        self.err = err
        self.writes: list[Path] = []
        self.failed: Path | None = None
        self._lock = threading.Lock()
        self._fsync = os.fsync

    def __call__(self, fd: int) -> None:
        tmp = Path(os.readlink(f"/proc/self/fd/{fd}"))
        m = _TEMPORARY.match(tmp.name)
        if m is None:
            return self._fsync(fd)
        dest = tmp.with_name(m["name"])
        with self._lock:
            self.writes.append(dest)
            fail = len(self.writes) - 1 == self.fail_at
            if fail:
                self.failed = dest
        if fail:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)  # the disk filled up half way
            raise OSError(self.err, os.strerror(self.err))
        return self._fsync(fd)


class Disk:
    """What the ``disk_full`` fixture gives a test: :meth:`arm` a fault, :meth:`heal` it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def arm(self, fail_at: int | None = None, err: int = errno.ENOSPC) -> DiskFull:
        """Replace ``os.fsync`` by a :class:`DiskFull` failing at write ``fail_at``."""
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc/self/fd (Linux) to name the file being fsynced")
        fault = DiskFull(fail_at, err)
        self._monkeypatch.setattr(os, "fsync", fault)
        return fault

    def heal(self) -> None:
        """Room on the disk again: the real ``os.fsync``."""
        self._monkeypatch.undo()


# --- what a folder must look like after a failed write -----------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes left under ``folder``."""
    return [p for p in folder.rglob(".*.tmp") if _TEMPORARY.match(p.name)]


def check_complete(path: Path) -> None:
    """Fail unless ``path`` decodes completely as what its name says it is."""
    name, data = path.name, path.read_bytes()
    assert data, f"{path} is empty"
    if name.endswith(".png"):
        import imagecodecs

        assert data.endswith(b"IEND\xaeB`\x82"), f"{path}: PNG without its IEND chunk"
        assert imagecodecs.png_decode(data).size > 0, path
    elif name.endswith((".json", ".geojson")):
        json.loads(data)
    elif name.endswith(".csv"):
        text = data.decode("utf-8")
        assert text.endswith("\n"), f"{path}: CSV cut inside a line"
        rows = list(csv.reader(io.StringIO(text)))
        assert len({len(r) for r in rows}) == 1, f"{path}: ragged rows"
    elif name.endswith(".safetensors"):
        from slidesift.checkpoint import read_safetensors

        read_safetensors(path)
    elif name.endswith((".tif", ".tiff", ".svs")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                page.asarray()  # type: ignore[union-attr]
    elif name.endswith(".html"):
        assert data.rstrip().endswith(b"</html>"), f"{path}: HTML cut short"
    elif name.endswith(".npy"):
        import numpy as np

        np.load(path, allow_pickle=False)
    elif name.endswith(".onnx"):
        import onnx

        onnx.checker.check_model(onnx.load(str(path)))
    elif name.endswith(".txt"):
        assert data.endswith(b"\n"), path


def check_folder(folder: Path) -> None:
    """No temporary file left under ``folder``, and every file in it complete."""
    assert not leftovers(folder), leftovers(folder)
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            check_complete(p)
