"""``kill -9`` during training, then ``--resume``: the same bits as a run never interrupted.

Each run is a real process (tests/train_child.py) that SIGKILLs itself at a chosen point: in
the middle of an epoch, between an epoch's checkpoint and its resume state, between the resume
state and the log, and inside an atomic write (a stale temporary file left behind). Resuming in
a fresh process must give every epoch's weights, the Adam state and the log exactly as a run in
one go does.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.learn
torch = pytest.importorskip("torch", reason="needs torch, the 'learn' extra")
safetensors_torch = pytest.importorskip("safetensors.torch")

CHILD = Path(__file__).with_name("train_child.py")
SRC = Path(__file__).resolve().parents[1] / "src"
EPOCHS = 3
TIMING = ("seconds", "tiles_per_second")


def child(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
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
    """A run of all epochs in one process, never interrupted."""
    out = tmp_path_factory.mktemp("kill") / "reference"
    ran(child(out))
    return out


def tensors_and_meta(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    return tensors, meta


def untimed(meta: dict[str, object]) -> dict[str, object]:
    """Checkpoint or resume metadata without the wall-clock figures."""
    doc = json.loads(str(meta.get("slidesift") or meta.get("slidesift-resume")))
    for rec in [doc.get("metrics", {}), *doc.get("records", [])]:
        for k in TIMING:
            rec.pop(k, None)
    return doc


def log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def assert_same_run(ref: Path, out: Path) -> None:
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names  # no stale temporary file
    assert names == sorted(
        ["run.json", "tiles.csv", "log.csv", "resume.safetensors"]
        + [f"epoch_{e:03d}.safetensors" for e in range(1, EPOCHS + 1)]
    )
    for name in names:
        if not name.endswith(".safetensors"):
            continue
        a, meta_a = tensors_and_meta(ref / name)
        b, meta_b = tensors_and_meta(out / name)
        assert a.keys() == b.keys(), name
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (name, k)
        assert untimed(meta_a) == untimed(meta_b), name
    assert log_rows(ref) == log_rows(out)
    assert [r["epoch"] for r in log_rows(out)] == [str(e) for e in range(1, EPOCHS + 1)]
    assert json.loads((ref / "run.json").read_text()) == json.loads((out / "run.json").read_text())
    assert (ref / "tiles.csv").read_bytes() == (out / "tiles.csv").read_bytes()


def test_kill_mid_epoch_then_resume_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    killed(child(out, "--kill", "batch:2:1"))  # weights moved twice in epoch 2, then SIGKILL
    assert (out / "epoch_001.safetensors").is_file()
    assert not (out / "epoch_002.safetensors").exists()
    assert [r["epoch"] for r in log_rows(out)] == ["1"]
    ran(child(out, "--resume"))
    assert_same_run(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "when",
    [
        "before-resume:1",  # the first epoch's checkpoint, no resume state at all
        "before-resume:2",  # epoch 2's checkpoint on disk, resume state still at epoch 1
        "before-log:3",  # every file of the last epoch but its log row
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
    assert_same_run(reference, out)
