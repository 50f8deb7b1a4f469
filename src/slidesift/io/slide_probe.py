"""Open an untrusted slide in a child process first, so a crash in C is an error, not an exit.

OpenSlide, libtiff, libjpeg, OpenJPEG and imagecodecs are C. A damaged slide can make them abort
or fault (a fuzzed Aperio tile size made GLib abort on a 550 GB ``g_malloc``), which kills
the Python process with no error and no other slide finished. :func:`probe_slide` runs a
child Python (``python .../io/_probe_child.py PATH``, about 0.07 s) that asks OpenSlide what
the file is and, for a slide OpenSlide reads, opens it, applies the tile-size limit and reads
a bounded region of every level: the first tile row and the centre, at most 512 x 512 px each.
A child that dies by a signal, runs out of its memory cap or runs past ``timeout_s`` becomes a
:class:`~slidesift.errors.SlideReadError` naming the file; one that raises a Python exception
exits normally, since the parent then meets (and reports) that error itself, and a child that
cannot run at all (another exit status) leaves the slide to the parent, as without a probe.

What it covers: everything OpenSlide parses to open a slide (directories, tile sizes,
descriptions) and the decoders on a sample of each level. What it does not: a damaged tile
elsewhere in a level, which only a full read touches; the cohort runner reads each slide in a
Dask worker process, so there such a crash costs the worker, not the run (``docs/design.md``).

A file passes once per process: the answer is kept per (path, size, modification time).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from slidesift.errors import SlideReadError

__all__ = ["CHILD_MEMORY", "NO_MEMORY", "PROBE_ENV", "TIMEOUT_S", "probe_slide", "probe_wanted"]

#: Environment variable: ``0`` turns the probe off (trusted files, tests), ``1`` on (default).
PROBE_ENV = "SLIDESIFT_SLIDE_PROBE"
#: Seconds the child may take: well under the 20 s a reader may take on a hostile file.
TIMEOUT_S = 15.0
#: Address space of the child, bytes: a bomb's allocation fails there (and ends as an error).
CHILD_MEMORY = 8 << 30
#: Exit status of a child whose sample read ran out of its memory cap.
NO_MEMORY = 3
_passed: set[tuple[str, int, int]] = set()


def probe_wanted(probe: bool | None) -> bool:
    """``probe``, or when ``None`` the :data:`PROBE_ENV` environment variable (default on)."""
    if probe is not None:
        return probe
    return os.environ.get(PROBE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def probe_slide(path: str | os.PathLike[str], *, timeout_s: float = TIMEOUT_S) -> None:
    """Open ``path`` and read a sample of each level in a child process; raise if it dies.

    Parameters
    ----------
    path
        A slide that OpenSlide opens.
    timeout_s
        Seconds before the child is killed and the slide refused.

    Raises
    ------
    SlideReadError
        The child was killed by a signal (a crash in C), ran out of memory, or did not finish
        in ``timeout_s``.
    """
    p = Path(path)
    stamp = _stamp(p)
    if stamp in _passed:
        return
    cmd = [sys.executable, str(Path(__file__).with_name("_probe_child.py")), str(p)]
    hint = "the file is probably corrupt; re-export or re-download it"
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        busy = (
            "the file is probably corrupt, unless this machine is too busy to read a sample in "
            f"{timeout_s:.0f} s; a trusted file can skip this check with {PROBE_ENV}=0"
        )
        raise SlideReadError(
            p, f"the slide reader did not finish a sample read in {timeout_s:.0f} s", busy
        ) from None
    code = done.returncode
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        said = _last_line(done.stderr)
        raise SlideReadError(
            p,
            f"the slide reader crashed (signal {-code}, {name}) on a sample read"
            + (f": {said}" if said else ""),
            hint,
        )
    if code == NO_MEMORY:
        raise SlideReadError(
            p, f"a sample read needs more than {CHILD_MEMORY >> 30} GiB of memory", hint
        )
    if code == 0:
        _passed.add(stamp)
    # Any other status is the probe failing to run (Python could not start or import), not
    # the slide: the parent then reads it itself, as without the probe.


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
