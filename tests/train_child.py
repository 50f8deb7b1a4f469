"""A training run in its own process that SIGKILLs itself at a chosen point (tests/test_kill.py),
and the comparison of two run folders bit for bit (:func:`assert_same_run`).

Usage: ``python train_child.py OUT [--resume] [--kill WHEN]``, ``WHEN`` one of

- ``batch:E:B``: after batch ``B`` of epoch ``E`` (mid-epoch: weights and Adam moved, nothing
  of epoch ``E`` on disk);
- ``before-resume:E``: epoch ``E``'s checkpoint is on disk, ``resume.safetensors`` not yet;
- ``before-log:E``: checkpoint and resume state of epoch ``E`` on disk, ``log.csv`` not yet;
- ``rename:NAME``: inside the atomic write of file ``NAME``, its temporary file complete but
  not yet renamed (a stale ``.NAME.*.tmp`` is left behind).

The process dies with SIGKILL: no ``finally``, no ``atexit``, as under ``kill -9`` or the OOM
killer.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def tiles() -> Any:
    """24-48 tiles of T = 96 from two H&E-like images: 3 batches of 16 an epoch."""
    from slidesift.dataset import build_tileset
    from slidesift.phantom import he_like_image
    from slidesift.tileset import SlideImage, TileSetSpec

    slides = []
    for seed in (1, 3):
        pixels, tumor = he_like_image((360, 460), seed=seed, tumor_fraction=0.45)
        slides.append(SlideImage(f"s{seed}", "tumor", pixels, tumor, key=f"k{seed}"))
    return build_tileset(slides, TileSetSpec(tile=96, longest=500))


SPEC = {"epochs": 2, "seed": 5, "workers": 0, "device": "cpu"}


TIMING = ("seconds", "tiles_per_second")


def tensors_and_meta(path: Path) -> tuple[dict[str, Any], dict[str, object]]:
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


def assert_same_run(ref: Path, out: Path, epochs: int) -> None:
    """Two run folders hold the same files and bits (but for wall-clock times)."""
    import torch

    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names  # no stale temporary file
    assert names == sorted(
        ["run.json", "tiles.csv", "log.csv", "resume.safetensors"]
        + [f"epoch_{e:03d}.safetensors" for e in range(1, epochs + 1)]
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
    assert [r["epoch"] for r in log_rows(out)] == [str(e) for e in range(1, epochs + 1)]
    assert json.loads((ref / "run.json").read_text()) == json.loads((out / "run.json").read_text())
    assert (ref / "tiles.csv").read_bytes() == (out / "tiles.csv").read_bytes()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    from slidesift.train import train
    from slidesift.train_spec import TrainCallbacks, TrainSpec

    out = Path(argv[0])
    resume = "--resume" in argv
    when = argv[argv.index("--kill") + 1] if "--kill" in argv else ""
    kind, _, arg = when.partition(":")
    callbacks = TrainCallbacks()
    if kind == "batch":
        e, b = (int(x) for x in arg.split(":"))

        def on_batch(epoch: int, batch: int, loss: float) -> None:
            if (epoch, batch) == (e, b):
                die()

        callbacks = TrainCallbacks(on_batch=on_batch)
    elif kind in ("before-resume", "before-log"):
        name = "save_resume" if kind == "before-resume" else "write_log"
        # train_run.save_epoch writes an epoch's files (checkpoint, resume state, log) for
        # every model's training loop: the writers are patched where it looks them up
        train_module = sys.modules["slidesift.train_run"]
        real = getattr(train_module, name)

        def wrapped(out: Path, *args: Any) -> Any:
            records = args[-1]
            if len(records) == int(arg):
                die()
            return real(out, *args)

        setattr(train_module, name, wrapped)
    elif kind == "rename":
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if Path(dst).name == arg:
                die()
            real_replace(src, dst)

        os.replace = replace  # type: ignore[assignment]
    train(tiles(), out, TrainSpec(**SPEC), resume=resume, callbacks=callbacks)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1:])
