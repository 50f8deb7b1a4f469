"""A training run in its own process that SIGKILLs itself at a chosen point (tests/test_kill.py).

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


SPEC = {"epochs": 3, "seed": 5, "workers": 0, "device": "cpu"}


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
        train_module = sys.modules["slidesift.train"]  # the package's ``train`` is the function
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
