"""Segment a 6000-px phantom slide with a T=400 model: seconds per stage, classifier tiles/s.

References in the same run, on the slide's kept tiles:
  (a) per-tile ONNX Runtime, plain graph: ``OnnxTiles`` (``export_onnx(part="whole")``, the
      network as trained: five BatchNorms after the poolings, which ONNX Runtime cannot fuse
      into a convolution because a pooling sits between them; it runs each as a separate
      per-channel ``Conv``, as the JSON's ``ort_ops_*`` node counts show);
  (b) per-tile ONNX Runtime, BatchNorm folded: the graph optimisations of the dense path
      applied to one tile (the 1/255 scaling and BatchNorms 1-4 folded into the next
      convolution by ``_folded_maps``, then pool 5, BatchNorm 5 and the head), exported and run
      with the same session options; its outputs are checked against (a);
  (c) the bare ONNX Runtime ceiling of (a): ``session.run`` on batches of pre-cut random tiles;
  (d) dense shared feature maps on all kept tiles (what ``segment`` picks at stride 80), and on
      the full grid (every tile, tissue or not).
  (e) the write stage: each output alone, then the default outputs (six files, pictures at
      most 2000 px) and every picture at full size, each serial (one thread) and parallel (a
      thread per core), interleaved; the mask is the slide's truth shifted 40 px, so the
      GeoJSON traces a real outline and the error map has all three colours.
  (f) the dense backends of ``slidesift.backends`` in one run, interleaved round by round:
      fp32 (``dense``), ``int8`` (``slidesift.quantize``) and ``bf16`` (torch), on the kept
      tiles and on the full grid, with their speed-ups over fp32 (medians of the per-round
      ratios, which cancel most of the load of a shared machine).
(a), (b) and (c) are each the median of 5 runs of 256 tiles, run interleaved, in
batches of 32; the segment stages, (d), (e) and (f) are the median of 5 runs. ``segment`` runs
with the probe off (fp32 dense), as before. The network's weights are
random (speed does not depend on them); the rails are wide open so every tissue tile is
classified, the worst case.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_segment.py [--quick]``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from _common import machine_line, report
from slidesift.backends import build_backend
from slidesift.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from slidesift.inference import (
    _MAPS_END,
    OnnxTiles,
    TileClassifier,
    _export,
    _folded_maps,
    _ort,
    _session,
    classify_tiles,
    export_onnx,
)
from slidesift.io.annotations import read_truth
from slidesift.model import LightweightCNN, probabilities
from slidesift.phantom.cohort import CohortSpec, make_cohort
from slidesift.rails import Rails
from slidesift.segment import Classifiers, SegmentResult, SegmentSpec, segment
from slidesift.segment_outputs import OUTPUT_KINDS, OutputSpec, write_segmentation
from slidesift.sift import SiftSpec

T, N = 400, 6000
#: Timed runs per figure (the median is reported).
RUNS = 5
#: Tiles per per-tile run.
SAMPLE = 256
#: Tiles per ONNX Runtime call in the per-tile runs.
BATCH = 32
#: Largest accepted difference between the plain and the folded per-tile probabilities.
PARITY_ATOL = 1e-4


def make_checkpoint(folder: Path) -> Path:
    """A T=400 binary checkpoint with random weights and wide-open rails."""
    torch.manual_seed(0)
    net = LightweightCNN(T, 2).eval()
    meta = {
        "tile": T, "longest": N, "mpp": None, "classes": ["non-tumor", "tumor"],
        "rails": Rails(0.0, 8.0, tile=T).to_dict(), "sift": SiftSpec().to_dict(),
        "epoch": 1, "normalization": None, "overlaps": {},
    }  # fmt: skip
    return save_checkpoint(folder / "random.safetensors", net.state_dict(), meta)


class FoldedTile(torch.nn.Module):
    """One tile through the dense path's graph: folded maps, pool 5, BatchNorm 5, head.

    Input ``(B, T, T, 3)`` uint8 (the 1/255 scaling is folded into conv 1), output ``(B, C)``
    probabilities, as the plain per-tile graph.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        net = checkpoint.model().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.maps = _folded_maps(net.features)
        self.rest = net.features[_MAPS_END:]  # pool 5, BatchNorm 5
        self.head = net.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, T, 3)`` uint8 -> ``(B, C)`` probabilities."""
        y = self.head(self.rest(self.maps(x.permute(0, 3, 1, 2).float())))
        out: torch.Tensor = probabilities(y)
        return out


class FoldedOnnxTiles:
    """Per-tile ONNX Runtime classifier of :class:`FoldedTile`, same session options as
    :class:`slidesift.inference.OnnxTiles`."""

    name = "onnx per tile, BatchNorm folded"

    def __init__(self, checkpoint: Checkpoint, folder: Path) -> None:
        self.path = folder / "per_tile_folded.onnx"
        example = torch.randint(0, 256, (2, T, T, 3), dtype=torch.uint8)
        dynamic = {"x": {0: "batch"}, "y": {0: "batch"}}
        _export(FoldedTile(checkpoint).eval(), example, self.path, dynamic, "benchmark")
        self.session = _session(self.path, None)

    def __call__(self, tiles: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``(B, T, T, 3)`` uint8 -> ``(B, C)`` float32 probabilities."""
        out: NDArray[np.float32] = self.session.run(None, {"x": np.ascontiguousarray(tiles)})[0]
        return out


def optimised_ops(path: Path, folder: Path) -> dict[str, int]:
    """Node counts per operator type of the graph as ONNX Runtime runs it (ORT_ENABLE_ALL).

    Shows what ONNX Runtime makes of the BatchNorms: on x86 its NCHWc layout pass turns each
    one after a pooling into a separate per-channel ``Conv`` (no fusion into a neighbour), so
    the plain graph runs 10 ``Conv`` nodes and the folded one 6.
    """
    import onnx

    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # not the warning that the saved graph is hardware specific
    opts.optimized_model_filepath = str(folder / f"{path.stem}.optimised.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    model = onnx.load(opts.optimized_model_filepath)
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def per_tile_seconds(
    classifier: TileClassifier, pixels: NDArray[np.uint8], xy: NDArray[np.int64]
) -> float:
    """Seconds to cut and classify the tiles at ``xy`` in batches of :data:`BATCH`."""
    t0 = time.perf_counter()
    for _ in classify_tiles(classifier, pixels, xy, T, batch=BATCH):
        pass
    return time.perf_counter() - t0


def write_stage(
    r: SegmentResult, truth: NDArray[np.bool_], root: Path
) -> tuple[list[list[Any]], dict[str, Any]]:
    """(e): table rows and JSON figures of the write stage (see the module docstring)."""
    shifted = dataclasses.replace(r, mask=np.roll(truth, 40, axis=1))
    cases: dict[str, tuple[OutputSpec, int | None]] = {
        **{f"{k} alone": (OutputSpec((k,)), 1) for k in OUTPUT_KINDS},
        "default, serial": (OutputSpec(), 1),
        "default, parallel": (OutputSpec(), None),
        "full-size previews, serial": (OutputSpec(preview_px=None), 1),
        "full-size previews, parallel": (OutputSpec(preview_px=None), None),
    }
    runs: dict[str, list[float]] = collections.defaultdict(list)
    cpu: list[float] = []
    for i in range(RUNS):  # interleaved: every case sees the same machine load
        for case, (outputs, threads) in cases.items():
            folder = root / f"write{i}" / case.replace(" ", "_").replace(",", "")
            c0, t0 = time.process_time(), time.perf_counter()
            write_segmentation(folder, "slide", shifted, truth, outputs=outputs, threads=threads)
            runs[case].append(time.perf_counter() - t0)
            if case == "default, parallel":
                cpu.append(time.process_time() - c0)
    s = {case: statistics.median(v) for case, v in runs.items()}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pictures = sorted((root / "write0" / "default_parallel").glob("*_overlay.png"))
    rows: list[list[Any]] = []
    for name, label in (
        ("default", "default outputs"),
        ("full-size previews", "full-size pictures"),
    ):
        serial, parallel = s[f"{name}, serial"], s[f"{name}, parallel"]
        note = f"{cores} threads; serial {serial:.3f} s, {serial / parallel:.2f}x"
        rows.append([f"(e) write, {label}", round(parallel, 3), note])
    rows[0][2] += f"; CPU {statistics.median(cpu):.3f} s"
    rows += [[f"(e)   {k} alone (serial)", round(s[f"{k} alone"], 3), ""] for k in OUTPUT_KINDS]
    figures = {
        "write_cases_s": s,
        "write_runs_s": dict(runs),
        "write_default_cpu_s": statistics.median(cpu),
        "write_threads": cores,
        "write_default_overlay_bytes": pictures[0].stat().st_size if pictures else None,
    }
    return rows, figures


def main() -> None:
    """Run the benchmark, print the table and write ``bench-results/bench_segment.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 3000-px slide")
    args = parser.parse_args()
    longest = 3000 if args.quick else N
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cohort = make_cohort(CohortSpec(count=1, longest=(longest, longest), seed=4), root / "c")
        slide = next(iter(cohort)).slide
        ck = load_checkpoint(make_checkpoint(root))
        classifiers = Classifiers(ck, probe=False)  # fp32 dense: the stages as before
        spec = SegmentSpec()  # 80% overlap: stride 80, a multiple of 16 -> dense
        segment(slide, ck, spec, classifiers=classifiers)  # warm-up: export, JIT, sessions
        stage_runs: dict[str, list[float]] = collections.defaultdict(list)
        for i in range(RUNS):
            start = time.perf_counter()
            r = segment(slide, ck, spec, classifiers=classifiers)
            stage_runs["total"].append(time.perf_counter() - start)
            t0 = time.perf_counter()
            write_segmentation(root / f"out{i}", "slide", r)
            stage_runs["write"].append(time.perf_counter() - t0)
            for k, v in r.seconds.items():
                stage_runs[k].append(v)
        stages = {k: statistics.median(v) for k, v in stage_runs.items()}
        n_kept = int(r.keep.sum())
        entry = next(iter(cohort))
        assert entry.annotation is not None and r.thumb is not None
        write_rows, write_figures = write_stage(r, read_truth(entry.annotation, r.thumb) > 0, root)
        dense = n_kept / stages["classify"]

        # per tile: plain graph vs BatchNorm folded, on the same sample of kept tiles
        plain = OnnxTiles(ck)
        folded = FoldedOnnxTiles(ck, root)
        kept_xy = r.grid.th_xy()[np.flatnonzero(r.keep.ravel())]
        sample = kept_xy[rng.permutation(max(SAMPLE, len(kept_xy))) % len(kept_xy)][:SAMPLE]
        check = np.stack([r.pixels[y : y + T, x : x + T] for x, y in sample[:BATCH]])
        parity = float(np.abs(plain(check) - folded(check)).max())
        assert parity <= PARITY_ATOL, f"folded per-tile graph differs by {parity:.2e}"
        per_tile_seconds(plain, r.pixels, sample[:BATCH])  # warm-up
        per_tile_seconds(folded, r.pixels, sample[:BATCH])
        batch = rng.integers(0, 256, (BATCH, T, T, 3), dtype=np.uint8)
        plain_s, folded_s, ceiling_s = [], [], []
        for _ in range(RUNS):  # interleaved, so all three see the same machine load
            plain_s.append(per_tile_seconds(plain, r.pixels, sample))
            folded_s.append(per_tile_seconds(folded, r.pixels, sample))
            t0 = time.perf_counter()  # bare ceiling of the plain graph: pre-cut tiles only
            for _ in range(SAMPLE // BATCH):
                plain.session.run(None, {"x": batch})
            ceiling_s.append(time.perf_counter() - t0)
        per_tile = SAMPLE / statistics.median(plain_s)
        per_tile_folded = SAMPLE / statistics.median(folded_s)
        ceiling = SAMPLE // BATCH * BATCH / statistics.median(ceiling_s)
        ops_plain = optimised_ops(export_onnx(ck), root)
        ops_folded = optimised_ops(folded.path, root)

        # the full grid (every tile, tissue or not): the dense target
        all_xy = r.grid.th_xy()
        dense_net = classifiers.get("dense")
        full_runs = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            n_all = sum(len(i) for i, _ in dense_net.classify(r.pixels, all_xy, r.grid.stride))
            full_runs.append(time.perf_counter() - t0)
        full_s = statistics.median(full_runs)

        # (f) fp32 vs int8 vs bf16, same run, interleaved
        nets = {"fp32": dense_net, "int8": build_backend("int8", ck, cache_dir=root / "cache"),
                "bf16": build_backend("bf16", ck)}  # fmt: skip
        grids = {"kept": kept_xy, "full": all_xy}
        backend_runs: dict[str, list[float]] = collections.defaultdict(list)
        for net in nets.values():  # warm-up
            for _ in net.classify(r.pixels, kept_xy[:64], r.grid.stride):
                pass
        for _ in range(RUNS):
            for name, net in nets.items():
                for where, xy in grids.items():
                    t0 = time.perf_counter()
                    for _ in net.classify(r.pixels, xy, r.grid.stride):
                        pass
                    backend_runs[f"{name} {where}"].append(time.perf_counter() - t0)
        backend_s = {k: statistics.median(v) for k, v in backend_runs.items()}
        speedup = {
            f"{name} {where}": statistics.median(
                a / b for a, b in zip(backend_runs[f"fp32 {where}"],
                                      backend_runs[f"{name} {where}"], strict=True)
            )
            for name in nets for where in grids
        }  # fmt: skip

    s = stages
    rate = f"median of {RUNS} x {SAMPLE} tiles"
    rows = [
        ["read", round(s["read"], 3), ""],
        ["sift", round(s["sift"], 3), f"{len(r.grid)} tiles, {n_kept} kept"],
        ["classify (dense)", round(s["classify"], 3), f"{dense:.0f} tiles/s"],
        ["assemble", round(s["assemble"], 3), ""],
        ["write outputs", round(s["write"], 3), "default outputs, random model's mask"],
        ["total", round(s["total"] + s["write"], 3), f"{r.pixels.shape[1]}x{r.pixels.shape[0]}"],
        ["(a) per-tile ONNX, plain graph", round(n_kept / per_tile, 3),
         f"{per_tile:.1f} tiles/s ({rate}), {per_tile / ceiling:.0%} of the ceiling; "
         f"dense is {dense / per_tile:.1f}x"],
        ["(b) per-tile ONNX, BatchNorm folded", round(n_kept / per_tile_folded, 3),
         f"{per_tile_folded:.1f} tiles/s ({rate}), {per_tile_folded / per_tile:.2f}x plain; "
         f"dense is {dense / per_tile_folded:.1f}x"],
        ["(c) bare ONNX ceiling (plain graph)", round(n_kept / ceiling, 3),
         f"{ceiling:.1f} tiles/s ({rate})"],
        ["(d) dense, full grid", round(full_s, 3),
         f"{n_all} tiles, {n_all / full_s:.0f} tiles/s, {n_all / full_s / per_tile:.1f}x plain "
         f"per tile, {n_all / full_s / per_tile_folded:.1f}x folded per tile"],
        *write_rows,
    ]  # fmt: skip
    n_grid = {"kept": n_kept, "full": n_all}
    for name in ("fp32", "int8", "bf16"):
        for where in ("full", "kept"):
            k = f"{name} {where}"
            rows.append([f"(f) dense {name}, {'full grid' if where == 'full' else 'kept tiles'}",
                         round(backend_s[k], 3),
                         f"{n_grid[where] / backend_s[k]:.0f} tiles/s, {speedup[k]:.2f}x fp32 "
                         f"(median of per-round ratios)"])  # fmt: skip
    report(
        "bench_segment",
        f"segment a {longest}-px phantom slide, T={T}, stride 80 (seconds, median of {RUNS} "
        "runs; per-tile rows: time for all kept tiles at that rate)",
        ["stage", "seconds", "note"],
        rows,
        {
            "longest": longest,
            "image": [int(r.pixels.shape[1]), int(r.pixels.shape[0])],
            "tile": T,
            "stride": int(r.grid.stride),
            "runs": RUNS,
            "grid_tiles": len(r.grid),
            "kept_tiles": n_kept,
            "stages_s": stages,
            "stage_runs_s": dict(stage_runs),
            "dense_tiles_per_s": dense,
            "per_tile_sample": SAMPLE,
            "per_tile_batch": BATCH,
            "per_tile_tiles_per_s": per_tile,
            "per_tile_runs_s": plain_s,
            "per_tile_folded_tiles_per_s": per_tile_folded,
            "per_tile_folded_runs_s": folded_s,
            "per_tile_folded_max_abs_diff": parity,
            "ort_ops_plain": ops_plain,
            "ort_ops_folded": ops_folded,
            "ceiling_tiles_per_s": ceiling,
            "ceiling_runs_s": ceiling_s,
            "full_grid_tiles": n_all,
            "full_grid_dense_s": full_s,
            "full_grid_runs_s": full_runs,
            "everything_but_classify_s": s["read"] + s["sift"] + s["assemble"] + s["write"],
            **write_figures,
            "backend_s": backend_s,
            "backend_runs_s": dict(backend_runs),
            "backend_speedup_over_fp32": speedup,
            "backend_cpu": machine_line(),
        },
    )


if __name__ == "__main__":
    main()
