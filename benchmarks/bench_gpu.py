"""The GPU figures of the speed issue, in one prepared script (run it where a GPU is lent).

Measured at T 400 on ``cuda``:
  * per-tile inference, batch 256, channels_last: eager fp32, eager bf16, eager fp16 and
    ``torch.compile`` of the BatchNorm-folded network in bf16 (``TorchTiles``); tiles/s,
    median of 5 timed passes after warm-up, ``torch.cuda.synchronize`` around each;
  * training throughput at batch 16 and batch 256 (Adam, BCE, bf16 autocast, channels_last,
    random tiles already on the device: the network's ceiling), tiles/s;
  * the dense path in torch (``torch_dense``, bf16 on CUDA) over the full grid of a 6000-px
    phantom thumbnail at stride 80, tiles/s;
  * a 12-slide 6000-px phantom cohort through ``run_cohort`` in process (``auto``, which is
    torch-dense on CUDA), one slide after another and pipelined (read ahead, write behind):
    slides/min and the GPU busy share (``torch.cuda.utilization`` sampled every 50 ms; needs
    NVML through ``pynvml``), the target being 70% or more.
Each figure sits beside the issue's H200 anchors (eager bf16 10.0k, fp16 11.7k, compiled
22.0k tiles/s). ``--dry-run`` runs every path on the CPU at T 96 with tiny counts, to check
the script before spending device time; its numbers mean nothing.

Run: ``.venv/bin/python benchmarks/bench_gpu.py [--dry-run]``; writes
``bench-results/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import os
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
from slidesift.torch_inference import TorchTiles, torch_dense

ANCHORS = {"eager bf16": 10_000, "eager fp16": 11_700, "compiled bf16 (folded)": 22_000}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _checkpoint(folder: Path, tile: int, longest: int) -> Path:
    torch.manual_seed(0)
    meta = {
        "tile": tile, "longest": longest, "mpp": None, "classes": ["non-tumor", "tumor"],
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


def dense_rate(ckpt: Path, device: str, longest: int, stride: int, passes: int) -> float:
    """Tiles/s of the dense path in torch (``torch_dense``) over the full grid of a phantom
    thumbnail (every tile, no sift), median of ``passes`` after a warm-up."""
    from slidesift.phantom import he_like_image
    from slidesift.tiles import TileGrid

    ck = load_checkpoint(ckpt)
    pixels, _ = he_like_image((longest * 4 // 5, longest), seed=2, tumor_fraction=0.4)
    xy = TileGrid.from_stride(pixels.shape[:2], tile=ck.tile, stride=stride).th_xy()
    net = torch_dense(ck, device=device)
    times = []
    for k in range(passes + 1):
        _sync(device)
        start = time.perf_counter()
        for _ in net.classify(pixels, xy, stride):
            pass
        _sync(device)
        if k:
            times.append(time.perf_counter() - start)
    return len(xy) / statistics.median(times)


def _sample(nvml: bool, done: threading.Event, samples: list[int]) -> None:
    """GPU utilisation every 50 ms until ``done`` (nothing without NVML)."""
    while nvml and not done.is_set():
        samples.append(int(torch.cuda.utilization()))
        time.sleep(0.05)


def cohort_busy(ckpt: Path, device: str, count: int, longest: int, stride: int,
                folder: Path) -> dict[str, Any]:  # fmt: skip
    """A phantom cohort through ``run_cohort`` in process (``auto``: torch-dense on CUDA), one
    slide after another and pipelined: wall seconds and the share of 50-ms samples in which
    the GPU was busy (``torch.cuda.utilization``, NVML; ``None`` on the CPU or without it)."""
    from slidesift.cohort import run_cohort
    from slidesift.phantom.cohort import CohortSpec, make_cohort
    from slidesift.segment import SegmentSpec

    spec = CohortSpec(count=count, longest=(longest, longest), seed=4)
    entries = list(make_cohort(spec, folder / "c"))
    nvml = device.startswith("cuda")
    if nvml:
        try:
            torch.cuda.utilization()
        except Exception:  # pynvml missing or not permitted
            nvml = False
    seg = SegmentSpec(stride=stride)
    run_cohort(ckpt, entries[:1], seg, out=folder / "warm", workers=0)  # export, compile
    out: dict[str, Any] = {}
    for pipeline in (False, True):
        samples: list[int] = []
        done = threading.Event()

        sampler = threading.Thread(target=_sample, args=(nvml, done, samples), daemon=True)
        sampler.start()
        start = time.perf_counter()
        result = run_cohort(ckpt, entries, seg, out=folder / f"out-{pipeline}", workers=0,
                            pipeline=pipeline)  # fmt: skip
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        if result.failures:
            raise RuntimeError(f"{result.failures[0].name}: {result.failures[0].error}")
        key = "pipelined" if pipeline else "one after another"
        out[key] = {
            "seconds": seconds,
            "slides_per_min": 60 * len(entries) / seconds,
            "inference": result.outcomes[0].inference,
            "busy_share": float(np.mean([x > 0 for x in samples])) if samples else None,
        }
    return out


def main() -> None:
    """Measure, print the table, write ``bench-results/bench_gpu.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="every path on the CPU, tiny")
    parser.add_argument(
        "--if-gpu", action="store_true",
        help="without a CUDA device, say so and exit 0 (how `make bench` runs it)",
    )  # fmt: skip
    args = parser.parse_args()
    dry = bool(args.dry_run)
    if not dry and not torch.cuda.is_available():
        if args.if_gpu:
            print("bench_gpu: no CUDA device on this machine; the GPU figures are not measured")
            return
        sys.exit("no CUDA device: run this where a GPU is lent, or with --dry-run to check it")
    device = "cpu" if dry else "cuda"
    if dry:
        os.environ["SLIDESIFT_PROBE"] = "0"  # auto is then fp32 dense: no CPU probe to wait for
    tile, batch, passes = (96, 16, 2) if dry else (400, 256, 5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = _checkpoint(root, tile, 800 if dry else 6000)
        rates = inference_rates(ckpt, device, tile, batch, passes, dry)
        train16 = training_rate(device, tile, 16, 2 if dry else 50)
        train256 = training_rate(device, tile, 4 if dry else 256, 2 if dry else 20)
        dense = dense_rate(ckpt, device, 600 if dry else 6000, 16 if dry else 80, passes)
        cohort = cohort_busy(ckpt, device, 3 if dry else 12, 800 if dry else 6000,
                             16 if dry else 80, root)  # fmt: skip
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    rows: list[list[Any]] = [
        [f"per tile, {k}, batch {batch}", v, f"H200 anchor {ANCHORS[k]}" if k in ANCHORS else ""]
        for k, v in rates.items()
    ]
    rows += [
        ["training, batch 16", train16, ""],
        [f"training, batch {4 if dry else 256}", train256, ""],
        [f"dense (torch-dense), full grid, stride {16 if dry else 80}", dense, "tiles/s"],
    ]
    for way, r in cohort.items():
        busy = r["busy_share"]
        rows.append([f"cohort in process, {way}: slides/min", r["slides_per_min"],
                     f"{r['inference']}; GPU busy {busy if busy is not None else 'n/a'} "
                     "(target 0.7)"])  # fmt: skip
    report(
        "bench_gpu_dry" if dry else "bench_gpu",
        f"torch on {name}, T {tile} (tiles/s)",
        ["what", "value", "note"],
        rows,
        {"device": name, "tile": tile, "batch": batch, "inference_tiles_per_s": rates,
         "train_tiles_per_s": {"16": train16, "256": train256}, "dense_tiles_per_s": dense,
         "cohort": cohort,
         "gpu_busy_share": cohort["pipelined"]["busy_share"],
         "anchors_h200": ANCHORS, "dry_run": dry},
    )  # fmt: skip


if __name__ == "__main__":
    main()
