"""Training throughput: slidesift's loop vs a plain PyTorch loop over pre-cut in-memory tiles.

Both train the same LightweightCNN (Adam, batch 16, BCE) on the same tiles in the same order.
The reference holds the tiles ready as one float tensor (the data cost is zero: the ceiling).
slidesift cuts each tile from a memory-mapped cached thumbnail, blacks out the other class,
flips it, and batches it in a DataLoader, so the ratio shows whether the data path costs
anything. Timings exclude the epoch's checkpoint write (reported separately).

The tiles come from a four-slide phantom cohort made in a temporary folder (thumbnails cached
and memory-mapped, as in a real run). With a CUDA device the same loops run there (bf16
autocast, channels_last) and the GPU's utilisation is sampled with ``nvidia-smi``.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_train.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from _common import report
from slidesift.cache import ThumbCache
from slidesift.model import LightweightCNN
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.prepare import prepare_tilesets
from slidesift.tileset import TileSet, TileSetSpec
from slidesift.train import train
from slidesift.train_spec import TrainSpec


def take(ts: TileSet, idx: np.ndarray) -> TileSet:
    """The set's tiles at ``idx`` (same slides); indices may repeat."""
    columns = ("slide", "th_x", "th_y", "label", "background", "entropy")
    return dataclasses.replace(ts, **{c: getattr(ts, c)[idx] for c in columns})


def plain_loop(ts: TileSet, device: str, batch: int = 16) -> float:
    """Tiles/s of the obvious loop over tiles already cut and converted (one epoch)."""
    torch.manual_seed(0)
    t = ts.spec.tile
    x_all = torch.from_numpy(np.stack([ts.tile(i) for i in range(len(ts))]))
    x_all = x_all.permute(0, 3, 1, 2).float().div(255).contiguous(memory_format=torch.channels_last)
    x_all = x_all.to(device)
    y_all = torch.from_numpy(ts.label).float().to(device)
    model = LightweightCNN(t, 2).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(j: int) -> None:
        xb, yb = x_all[j : j + batch], y_all[j : j + batch]
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
        with ctx:
            logits = model(xb)
        loss_fn(logits[:, 0].float(), yb).backward()
        opt.step()

    step(0)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for j in range(0, len(ts), batch):
        step(j)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(ts) / (time.perf_counter() - start)


class GpuSampler:
    """Samples ``nvidia-smi`` utilisation every 0.2 s while active."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5, check=True,
                )  # fmt: skip
                self.samples.append(float(out.stdout.split()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return
            time.sleep(0.2)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def ours(ts: TileSet, device: str, workers: int, out: Path) -> tuple[float, float]:
    """Tiles/s of slidesift's loop (one epoch, checkpoint excluded) and the whole epoch's s."""
    spec = TrainSpec(epochs=2, device=device, workers=workers, seed=0)
    start = time.perf_counter()
    result = train(ts, out, spec)
    whole = (time.perf_counter() - start) / 2
    return result.records[-1].tiles_per_second, whole  # epoch 2: after warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="T=96 only, fewer tiles")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    configs = (
        [(96, 800, 480)] if args.quick else [(96, 800, 480), (200, 320, 1000), (400, 64, 1800)]
    )
    rows, extra = [], {"configs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_cohort(CohortSpec(count=4, longest=(2400, 2600), subtypes=1, seed=2), root / "cohort")
        cache = ThumbCache(root / "cache")
        for tile, n_tiles, longest in configs:
            spec = TileSetSpec(tile=tile, longest=longest, balance="none")
            ts = prepare_tilesets(root / "cohort" / "manifest.csv", spec, cache=cache).train
            ts = take(ts, np.arange(n_tiles) % len(ts))  # cycles a small set
            for device in devices:
                n = len(ts) * (8 if device == "cuda" else 1)
                big = ts if device == "cpu" else take(ts, np.tile(np.arange(len(ts)), 8))
                with GpuSampler() as gpu_ref:
                    ref = plain_loop(big, device)
                for workers in (0, 1) if device == "cpu" else (4,):
                    out = root / f"run_{tile}_{device}_{workers}"
                    with GpuSampler() as gpu:
                        rate, whole = ours(big, device, workers, out)
                    rows.append(
                        [f"T={tile} {device} w{workers}", n, round(ref, 1), round(rate, 1),
                         round(rate / ref, 3), round(n / whole, 1),
                         round(gpu.mean, 1) if device == "cuda" else "-",
                         round(gpu_ref.mean, 1) if device == "cuda" else "-"]
                    )  # fmt: skip
            extra["configs"].append({"tile": tile, "longest": longest, "tiles": len(ts)})
    report(
        "bench_train",
        "training throughput (tiles/s), one epoch, Adam, batch 16",
        ["case (w: workers)", "tiles", "plain torch", "slidesift", "ratio", "+ checkpoint",
         "GPU % ours", "GPU % plain"],
        rows,
        extra,
    )  # fmt: skip


if __name__ == "__main__":
    main()
