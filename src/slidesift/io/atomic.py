"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every file slidesift writes goes through :func:`atomic_write`: the content goes to a temporary
file beside the destination (``.NAME.XXXXXXXX.tmp``), which is fsynced and renamed over the
destination. A write that fails leaves the destination as it was (absent, or the previous
complete file) and removes its temporary file. A full disk, an exhausted quota, a read-only
file system or a folder without write permission becomes one :class:`~slidesift.errors.OutputError`
naming the file; a process killed in the middle (``kill -9``, power loss) can leave a stale
temporary file but never a damaged destination, and :func:`remove_stale_temporaries` clears
those.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slidesift.errors import OutputError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "disk_error",
    "json_safe",
    "remove_stale_temporaries",
]

#: errno -> (what happened, what to do) of the write failures that are about the disk, not the
#: program: they become :class:`OutputError`.
DISK_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full (no space left on device)",
                   "free some space or choose an output folder on another disk, then run again"),
    errno.EDQUOT: ("the disk quota is exhausted",
                   "free some space within your quota or write elsewhere, then run again"),
    errno.EROFS: ("the file system is read-only", "choose an output folder you can write to"),
    errno.EACCES: ("permission denied", "choose an output folder you can write to"),
    errno.EPERM: ("permission denied", "choose an output folder you can write to"),
    errno.EFBIG: ("the file is larger than this file system or process allows",
                  "write to another file system, or raise the file size limit (ulimit -f)"),
    errno.EIO: ("an input/output error on the disk",
                "check the disk (dmesg, SMART) or write elsewhere, then run again"),
}  # fmt: skip

#: The name pattern of :func:`atomic_write`'s temporary files (mkstemp's 8 random characters).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def disk_error(path: str | os.PathLike[str], exc: BaseException) -> OutputError | None:
    """``exc`` as an :class:`OutputError` about ``path`` when it is a disk fault
    (:data:`DISK_ERRORS`: full disk, quota, read-only, permissions, file too large, I/O),
    else ``None``. The error may be wrapped (``__cause__``/``__context__``), as encoders such
    as ONNX's do."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in DISK_ERRORS:
            reason, hint = DISK_ERRORS[cur.errno]
            return OutputError(path, reason, hint)
        cur = cur.__cause__ or cur.__context__
    return None


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file is fsynced before the rename and removed if ``write`` fails (a full
    disk, an interrupt), so ``path`` is never left truncated, and an earlier file at ``path``
    stays whole.

    Parameters
    ----------
    path
        Final destination; its folder must exist.
    write
        Writes the complete content to the path it is given.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        The disk is full, the quota exhausted, the folder read-only or not writable, ...
        (:data:`DISK_ERRORS`), whether ``write`` or the fsync or the rename failed; the
        message names ``path``. Other exceptions of ``write`` pass unchanged.
    """
    dest = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        translated = disk_error(dest, exc)
        if translated is None:
            raise
        raise translated from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        translated = disk_error(dest, exc)
        if translated is not None:
            raise translated from exc
        raise
    return dest


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` when its process was
    killed between writing and renaming (``kill -9``, power loss); returns them.

    Only call it on a folder no other process is writing to (a training run's folder).
    """
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if _TEMPORARY.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``.

    Python's ``json`` writes NaN as a bare ``NaN``, which is not JSON: JavaScript's
    ``JSON.parse`` and strict parsers reject the file. A missing figure is ``null`` instead.
    Mappings, lists, tuples and numpy scalars are walked; other values pass unchanged.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return json_safe(value.item())
    return value


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented, strictly valid JSON (NaN and inf become ``null``)."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")
