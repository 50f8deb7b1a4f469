"""``kill -9`` during training, then ``--resume``: the same bits as a run never interrupted.

Each run is a real process (tests/train_child.py) that SIGKILLs itself at a chosen point: in
the middle of an epoch, between an epoch's checkpoint and its resume state, between the resume
state and the log, and inside an atomic write (a stale temporary file left behind). Resuming in
a fresh process must give every epoch's weights, the Adam state and the log exactly as a run in
one go does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from train_child import assert_same_run, log_rows

pytestmark = pytest.mark.learn
torch = pytest.importorskip("torch", reason="needs torch, the 'learn' extra")
pytest.importorskip("safetensors")

CHILD = Path(__file__).with_name("train_child.py")
SRC = Path(__file__).resolve().parents[1] / "src"


def child(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, str(CHILD), str(out), *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def ran(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


def killed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of all epochs, never interrupted, in a fresh process of its own.

    Not in the test process: earlier tests change torch's global state there (its thread
    count, which changes the order of float sums), and the runs compared are fresh processes.
    """
    out = tmp_path_factory.mktemp("kill") / "reference"
    ran(child(out))
    return out


def test_kill_mid_epoch_then_resume_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    killed(child(out, "--kill", "batch:2:1"))  # weights moved twice in epoch 2, then SIGKILL
    assert (out / "epoch_001.safetensors").is_file()
    assert not (out / "epoch_002.safetensors").exists()
    assert [r["epoch"] for r in log_rows(out)] == ["1"]
    ran(child(out, "--resume"))
    assert_same_run(reference, out, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "when",
    [
        "before-resume:1",  # the first epoch's checkpoint, no resume state at all
        "before-resume:2",  # epoch 2's checkpoint on disk, resume state still at epoch 1
        "before-log:2",  # every file of the last epoch but its log row
        "rename:epoch_002.safetensors",  # inside the atomic write: a stale temporary file
        "rename:resume.safetensors",
    ],
)
def test_kill_while_writing_an_epoch_then_resume_is_bit_identical(
    reference: Path, tmp_path: Path, when: str
) -> None:
    out = tmp_path / "cut"
    killed(child(out, "--kill", when))
    ran(child(out, "--resume"))
    assert_same_run(reference, out, 2)
