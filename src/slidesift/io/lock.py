"""One writer per output folder: an exclusive lock on ``FOLDER/.slidesift.lock``.

Every command that writes an output folder (``evaluate``, ``segment``, ``train``, ``sift``,
``phantom``, ``subsets``, ``demo``; :func:`slidesift.cohort.run_cohort` and
:func:`slidesift.train.train` in the library) holds :func:`output_lock` on it while it
writes. A second run on the same folder refuses at once with
:class:`~slidesift.errors.OutputLockedError`, naming the holder as its lock file says: pid,
host, command and start time.

How it works:

- ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the lock file. The kernel drops the lock when the
  holding process exits, however it ends (``kill -9`` included): there is no stale lock to
  clean up and no pid to guess about. On NFS, Linux emulates flock with byte-range locks
  (kernel 2.6.12 and later), which the server keeps across clients.
- The holder's description is written into the lock file after the lock is taken (in place:
  an atomic rename would swap the locked inode for another, so this one file does not go
  through :mod:`slidesift.io.atomic`). A reader that finds it empty says so ("starting").
- The file is deleted when the lock is released, so a finished run leaves the folder as it
  wrote it. A killed run leaves an unlocked file, which the next run simply takes. A taker
  checks that the file it locked is still the one at the path (another run may have released
  and deleted it in between) and tries again if not.
- Within one process the lock is re-entrant for the thread that holds it (``slidesift train``
  locks the run folder and calls :func:`slidesift.train.train`, which locks it again); another
  thread of the same process is refused like another process.
- Windows has no ``flock``: ``msvcrt.locking`` on the file's first byte does the same job
  (also freed when the process dies), untested here.

The lock file is not an output: it is a dot file at the folder's top, gone after a clean exit,
and no reader of an output folder (resume checks, the report) looks for it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from functools import wraps
from inspect import signature
from pathlib import Path
from typing import Any, TypeVar

from slidesift.errors import OutputError, OutputLockedError

__all__ = ["LOCK_FILE", "holder_of", "locks_output", "output_lock"]

#: The lock file's name inside the folder it guards.
LOCK_FILE = ".slidesift.lock"

_F = TypeVar("_F", bound=Callable[..., Any])
# folders this process holds: resolved path -> (thread id, depth, lock file descriptor)
_held: dict[Path, tuple[int, int, int]] = {}
_guard = threading.Lock()


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; ``False`` when another holds it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _describe(purpose: str | None) -> str:
    """``pid 4242 on host, command 'slidesift evaluate ...' (run_cohort), started 2026-...``."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    command = shlex.join(argv) if argv else sys.executable
    if len(command) > 300:
        command = command[:297] + "..."
    also = f" ({purpose})" if purpose else ""
    host = socket.gethostname()
    return f"pid {os.getpid()} on {host}, command {command!r}{also}, started {started}"


def holder_of(folder: str | os.PathLike[str]) -> str:
    """What the lock file of ``folder`` says about its holder (or why it says nothing)."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "a run that has just finished or is starting"
    return text or "a run that is starting (its lock file is still empty)"


def _acquire(folder: Path, purpose: str | None) -> int:
    """Lock ``folder``; the open descriptor of its lock file."""
    path = folder / LOCK_FILE
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed by a run that created it, just now
            folder.mkdir(parents=True, exist_ok=True)
            continue
        except OSError as exc:
            raise OutputError(folder, f"cannot create its lock file {LOCK_FILE}: {exc}") from exc
        try:
            if not _try_lock(fd):
                raise OutputLockedError(folder, holder_of(folder))
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, (_describe(purpose) + "\n").encode())
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # released and deleted by its holder meanwhile: take the new file
    raise OutputLockedError(folder, "runs that keep taking and freeing it")


def _release(folder: Path, fd: int, created: bool) -> None:
    with contextlib.suppress(OSError):
        (folder / LOCK_FILE).unlink()  # while still locked: no one can hold the old inode
    os.close(fd)
    if created:  # a run that wrote nothing (refused early, a bad option) leaves no trace
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], purpose: str | None = None) -> Iterator[Path]:
    """Hold the output folder ``folder`` against other runs.

    The folder is created if missing, and removed again on release if it is still empty
    then (a run refused for a bad option leaves nothing behind).

    Parameters
    ----------
    folder
        The output folder.
    purpose
        What holds it, added to the holder's description (its pid, host, command line and
        start time), e.g. ``"run_cohort"``.

    Yields
    ------
    pathlib.Path
        The folder, resolved.

    Raises
    ------
    OutputLockedError
        Another process, or another thread of this one, holds it.
    OutputError
        The folder or its lock file cannot be created.
    """
    root = Path(folder).resolve()
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(root, f"cannot create the folder: {exc}") from exc
    me = threading.get_ident()
    with _guard:
        owner, depth, fd = _held.get(root, (me, 0, -1))
        if owner != me:
            raise OutputLockedError(root, f"another thread of this process (pid {os.getpid()})")
        _held[root] = (me, depth + 1, fd if depth else _acquire(root, purpose))
    try:
        yield root
    finally:
        with _guard:
            owner, depth, fd = _held.pop(root)
            if depth > 1:
                _held[root] = (owner, depth - 1, fd)
            else:
                _release(root, fd, created)


def locks_output(parameter: str) -> Callable[[_F], _F]:
    """Decorate a function so that it holds :func:`output_lock` on its ``parameter`` argument."""

    def decorate(func: _F) -> _F:
        sig = signature(func)

        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            folder = sig.bind(*args, **kwargs).arguments[parameter]
            with output_lock(folder, func.__qualname__):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
