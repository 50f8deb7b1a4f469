"""The GPU figures of the speed issue, in one prepared script (run it where a GPU is lent).

Measured at T 400 on ``cuda``:
  * per-tile inference, batch 256, channels_last: eager fp32, eager bf16, eager fp16 and
    ``torch.compile`` of the BatchNorm-folded network in bf16 (``TorchTiles``); tiles/s,
    median of 5 timed passes after warm-up, ``torch.cuda.synchronize`` around each;
  * training throughput at batch 16 and batch 256 (Adam, BCE, bf16 autocast, channels_last,
    random tiles already on the device: the network's ceiling), tiles/s;
  * GPU busy share while ``segment`` runs the per-tile torch path over a phantom slide
    (``torch.cuda.utilization`` sampled every 50 ms; needs NVML through ``pynvml``), the
    target being 70% or more.
Each figure sits beside the issue's H200 anchors (eager bf16 10.0k, fp16 11.7k, compiled
22.0k tiles/s). ``--dry-run`` runs every path on the CPU at T 96 with tiny counts, to check
the script before spending device time; its numbers mean nothing.

Run: ``.venv/bin/python benchmarks/bench_gpu.py [--dry-run]``; writes
``bench-results/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import report
from slidesift.checkpoint import load_checkpoint, save_checkpoint
from slidesift.model import LightweightCNN, scale_input
from slidesift.rails import Rails
from slidesift.sift import SiftSpec
from slidesift.torch_inference import TorchTiles

ANCHORS = {"eager bf16": 10_000, "eager fp16": 11_700, "compiled bf16 (folded)": 22_000}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _checkpoint(folder: Path, tile: int) -> Path:
    torch.manual_seed(0)
    meta = {
        "tile": tile, "longest": 6000, "mpp": None, "classes": ["non-tumor", "tumor"],
        "rails": Rails(0.0, 8.0, tile=tile).to_dict(), "sift": SiftSpec().to_dict(),
        "epoch": 1, "normalization": None, "overlaps": {},
    }  # fmt: skip
    return save_checkpoint(folder / "gpu.safetensors", LightweightCNN(tile, 2).state_dict(), meta)


def inference_rates(
    ckpt: Path, device: str, tile: int, batch: int, passes: int, dry: bool
) -> dict[str, float]:
    """Tiles/s of each per-tile variant on one pre-made batch of random tiles."""
    ck = load_checkpoint(ckpt)
    tiles = np.random.default_rng(0).integers(0, 256, (batch, tile, tile, 3), dtype=np.uint8)
    variants: dict[str, dict[str, Any]] = {
        "eager fp32": {"precision": "fp32"},
        "eager bf16": {"precision": "bf16"},
        "compiled bf16 (folded)": {"precision": "bf16", "compile": True},
    }
    if device.startswith("cuda"):
        variants["eager fp16"] = {"precision": "fp16"}
    rates = {}
    for name, options in variants.items():
        if dry and options.get("compile"):
            continue  # inductor compiles for minutes on a small CPU: not for a dry run
        classify = TorchTiles(ck, device=device, **options)
        for _ in range(2):
            classify(tiles)  # warm-up (and compilation)
        times = []
        for _ in range(passes):
            _sync(device)
            start = time.perf_counter()
            classify(tiles)
            _sync(device)
            times.append(time.perf_counter() - start)
        rates[name] = batch / statistics.median(times)
    return rates


def training_rate(device: str, tile: int, batch: int, steps: int) -> float:
    """Tiles/s of Adam steps on random tiles already on the device (bf16 autocast on CUDA)."""
    torch.manual_seed(0)
    model = LightweightCNN(tile, 2).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_u8 = torch.randint(0, 256, (batch, tile, tile, 3), dtype=torch.uint8, device=device)
    y = torch.randint(0, 2, (batch,), device=device).float()
    cuda = device.startswith("cuda")
    autocast: Any = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x = scale_input(x_u8, device)
        if autocast is not None:
            with autocast:
                logits = model(x)
        else:
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0].float(), y)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def busy_share(ckpt: Path, device: str, longest: int, folder: Path) -> float | None:
    """Share of 50-ms samples in which the GPU was busy while ``segment`` ran (None: no NVML)."""
    if not device.startswith("cuda"):
        return None
    try:
        torch.cuda.utilization()
    except Exception:  # pynvml missing or not permitted
        return None
    from slidesift.phantom.cohort import CohortSpec, make_cohort
    from slidesift.segment import SegmentSpec, segment

    cohort = make_cohort(CohortSpec(count=1, longest=(longest, longest), seed=4), folder / "c")
    slide = next(iter(cohort)).slide
    ck = load_checkpoint(ckpt)
    spec = SegmentSpec(inference="torch", batch=256)
    segment(slide, ck, spec)  # warm-up
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(int(torch.cuda.utilization()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(3):
        segment(slide, ck, spec)
    done.set()
    sampler.join()
    return float(np.mean([s > 0 for s in samples])) if samples else None


def main() -> None:
    """Measure, print the table, write ``bench-results/bench_gpu.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="every path on the CPU, tiny")
    args = parser.parse_args()
    dry = bool(args.dry_run)
    if not dry and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this where a GPU is lent, or with --dry-run to check it")
    device = "cpu" if dry else "cuda"
    tile, batch, passes = (96, 16, 2) if dry else (400, 256, 5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = _checkpoint(root, tile)
        rates = inference_rates(ckpt, device, tile, batch, passes, dry)
        train16 = training_rate(device, tile, 16, 2 if dry else 50)
        train256 = training_rate(device, tile, 4 if dry else 256, 2 if dry else 20)
        busy = busy_share(ckpt, device, 1500 if dry else 6000, root)
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    rows: list[list[Any]] = [
        [f"per tile, {k}, batch {batch}", v, f"H200 anchor {ANCHORS[k]}" if k in ANCHORS else ""]
        for k, v in rates.items()
    ]
    rows += [
        ["training, batch 16", train16, ""],
        [f"training, batch {4 if dry else 256}", train256, ""],
        ["GPU busy during segment (share)", busy if busy is not None else "n/a", "target 0.7"],
    ]
    report(
        "bench_gpu_dry" if dry else "bench_gpu",
        f"torch on {name}, T {tile} (tiles/s)",
        ["what", "value", "note"],
        rows,
        {"device": name, "tile": tile, "batch": batch, "inference_tiles_per_s": rates,
         "train_tiles_per_s": {"16": train16, "256": train256}, "gpu_busy_share": busy,
         "anchors_h200": ANCHORS, "dry_run": dry},
    )  # fmt: skip


if __name__ == "__main__":
    main()
