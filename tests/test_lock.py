"""One run per output folder: a second run refuses at once, naming the holder; no stale locks.

The holder is a real second process (``python -c``) that takes :func:`output_lock` and waits
for its stdin to close; the refused runs are the CLI (in a subprocess and in process) and the
library functions that write folders.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from slidesift.cli.main import main
from slidesift.errors import OutputLockedError
from slidesift.io.lock import LOCK_FILE, output_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
HOLDER = """
import sys
from slidesift.io.lock import output_lock
with output_lock(sys.argv[1], "the test's holder"):
    print("locked", flush=True)
    sys.stdin.read()
"""


class Holder:
    """A process holding the lock of ``folder`` until :meth:`release` (or a kill)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Holder]:
    holder = Holder(tmp_path / "out")
    yield holder
    if holder.proc.poll() is None:
        holder.kill()


def test_a_second_process_is_refused_naming_the_holder(held: Holder, tmp_path: Path) -> None:
    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"not read: the lock comes first")
    done = subprocess.run(
        [sys.executable, "-m", "slidesift.cli.main", "sift", str(slide), "--out", str(held.folder)],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    err = " ".join(done.stderr.split())
    assert done.returncode == 9, done.stderr
    assert "Traceback" not in done.stderr
    assert f"output folder {str(held.folder)!r} is in use" in err
    assert f"pid {held.proc.pid} on {socket.gethostname()}" in err
    assert "the test's holder" in err and "started 20" in err and "-c" in err
    assert "hint: wait for that run to finish" in err
    assert sorted(os.listdir(held.folder)) == [LOCK_FILE]  # the refused run wrote nothing
    held.release()
    assert not (held.folder / LOCK_FILE).exists()  # freed, and the folder left as written
    with output_lock(held.folder) as root:
        assert (root / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


def test_a_killed_holder_leaves_no_stale_lock(held: Holder) -> None:
    held.kill()
    assert (held.folder / LOCK_FILE).exists()  # its file stays, unlocked
    with output_lock(held.folder):
        pass
    assert not (held.folder / LOCK_FILE).exists()


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{file}", "{file}"],
        ["segment", "{file}", "{file}"],
        ["train", "{file}"],
        ["sift", "{file}"],
        ["phantom", "--count", "1"],
        ["subsets", "{file}"],
        ["demo"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_that_writes_a_folder_refuses(
    command: list[str], held: Holder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "input.csv"
    file.write_text("slide\nx.svs\n")
    code = main([a.replace("{file}", str(file)) for a in command] + ["--out", str(held.folder)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 9, err
    assert "is in use" in err and f"pid {held.proc.pid}" in err
    assert sorted(os.listdir(held.folder)) == [LOCK_FILE]


def test_train_refuses_a_locked_run_folder(held: Holder) -> None:
    from slidesift.train import train

    with pytest.raises(OutputLockedError) as err:
        train(None, held.folder)  # type: ignore[arg-type]  # refused before the tiles are used
    assert err.value.exit_code == 9 and err.value.path == held.folder.resolve()


def test_another_thread_is_refused_and_this_one_may_nest(tmp_path: Path) -> None:
    seen: list[BaseException] = []

    def other() -> None:
        try:
            with output_lock(tmp_path):
                pass
        except OutputLockedError as exc:
            seen.append(exc)

    with output_lock(tmp_path):
        with output_lock(tmp_path):  # slidesift train locks, then train() again
            assert (tmp_path / LOCK_FILE).exists()
        assert (tmp_path / LOCK_FILE).exists()  # still held by the outer one
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(seen) == 1 and "another thread of this process" in str(seen[0])
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_folder_made_for_nothing_is_removed(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), output_lock(fresh):
        raise RuntimeError("a bad option, found after the lock was taken")
    assert not fresh.exists() and (tmp_path / "a").is_dir()
    kept = tmp_path / "kept"
    with output_lock(kept):
        (kept / "result.txt").write_text("written")
    assert os.listdir(kept) == ["result.txt"]
