"""Print the README's "## Speed" table from the benchmarks' JSON files (``bench-results/*.json``).

Every figure in the table comes from a JSON file that a benchmark wrote (``make bench``):
``bench_sift``, ``bench_read``, ``bench_train``, ``bench_segment``, ``bench_e2e``,
``bench_cohort`` and ``bench_phantom``.
A benchmark without a JSON file has no row. Each row names the CPU, core count and UTC date
recorded in its JSON. A second table compares segmenting speed across the CPUs the VM has had,
from ``by-cpu/<cpu>/bench_segment.json`` and ``bench_e2e.json`` (:func:`render_by_cpu`).

Run: ``.venv/bin/python benchmarks/readme_table.py [RESULTS_DIR]`` (default
``$SLIDESIFT_BENCH_OUT`` or ``bench-results``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "HEADER", "main", "render"]

RESULTS = Path(os.environ.get("SLIDESIFT_BENCH_OUT", "bench-results"))
HEADER = ["task", "slidesift", "reference in the same run", "machine"]

Rows = list[list[str]]


def _num(x: float) -> str:
    """A measured number to 3 significant digits: ``0.106``, ``22.0``, ``257``, ``34,900``."""
    if abs(x) >= 1000:
        return f"{round(x, -2) if abs(x) >= 10000 else x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:#.3g}".rstrip(".")


def _ratio(x: float) -> str:
    """A ratio: ``52``, ``10.0``, ``1.03``."""
    if x >= 20:
        return f"{x:.0f}"
    return f"{x:.1f}" if x >= 5 else f"{x:.2f}"


def _by_label(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON's table rows keyed by their first cell, each as ``{column: value}``."""
    columns = data["columns"]
    return {str(row[0]): dict(zip(columns, row, strict=True)) for row in data["rows"]}


def _machine(data: dict[str, Any]) -> str:
    """``CPU model, N cores, YYYY-MM-DD`` from the JSON's ``machine`` and ``measured``."""
    info = data["machine"]
    cpu = info.get("cpu_model") or info.get("cpu") or "unknown CPU"
    cell = f"{cpu}, {info['cores']} cores"
    if data.get("measured"):
        cell += f", {str(data['measured'])[:10]}"
    return cell


def sift_rows(data: dict[str, Any]) -> Rows:
    """Rows from ``bench_sift.json``: the engine on 1 thread and on all cores."""
    rows = _by_label(data)
    w, h = data["image"][1], data["image"][0]
    tile, stride, n = data["tile"], data["stride"], data["tiles"]
    one = rows["engine, 1 thread"]
    t1 = one["seconds"]
    refs = [
        f"per-tile numpy `bincount` {_num(rows['(a) per-tile numpy bincount']['seconds'])} s "
        f"({_ratio(rows['(a) per-tile numpy bincount']['seconds'] / t1)}× slower)"
    ]
    if "(b) skimage shannon_entropy loop" in rows:
        t_sk = rows["(b) skimage shannon_entropy loop"]["seconds"]
        refs.append(
            f"`skimage.shannon_entropy` per tile {_num(t_sk)} s ({_ratio(t_sk / t1)}× slower)"
        )
    refs.append(f"one pass over the pixels {_num(rows['(c) one memory pass (sum)']['seconds'])} s")
    out = [
        [
            f"sift {n} tiles ({w}×{h}, T={tile}, {round(100 * (1 - stride / tile))}%), "
            "grey + RGB entropy, 1 thread",
            f"{_num(t1)} s ({_num(n / t1)} tiles/s)",
            "; ".join(refs),
        ]
    ]
    for label, row in rows.items():
        m = re.fullmatch(r"engine, (\d+) threads", label)
        if m:
            t = row["seconds"]
            out.append(
                [
                    f"same, {m.group(1)} threads",
                    f"{_num(t)} s ({_num(n / t)} tiles/s, {_ratio(t1 / t)}× 1 thread)",
                    "",
                ]
            )
    return out


def read_rows(data: dict[str, Any]) -> Rows:
    """Rows from ``bench_read.json``: per slide, 1 thread and all cores, readers matched."""
    results = data["results"]
    w0, h0 = data["level0"]
    longest = data["longest"]
    out = []
    for slide in ("near", "far"):
        for threads in data["thread_settings"]:
            same = {
                r["reader"]: r for r in results if r["slide"] == slide and r["threads"] == threads
            }
            if not same:
                continue
            ours = same["slidesift read_thumb"]
            t = ours["seconds"]
            where = "level at the target" if slide == "near" else "resampled from level 0"
            task = (
                f"thumbnail {w0}×{h0} JPEG TIFF → {longest} px, {where}"
                if slide == "near" and threads == 1
                else f"same, {where}" + (" (no near level)" if slide == "far" else "")
            )
            task += ", 1 thread" if threads == 1 else f", {threads} threads (all cores)"
            refs = []
            for reader, name in (
                ("OpenSlide get_thumbnail", "OpenSlide `get_thumbnail` (1 thread)"),
                (
                    "OpenSlide read_region bands, thread pool",
                    f"OpenSlide `read_region` in bands on {threads} "
                    f"thread{'s' if threads > 1 else ''}",
                ),
            ):
                if reader in same:
                    r = same[reader]
                    refs.append(
                        f"{name} {_num(r['seconds'])} s ({_ratio(r['seconds'] / t)}× "
                        f"slidesift), +{_num(r['peak_bytes'] / 2**20)} MiB"
                    )
            if len(same) > 1 and len({r["sha1"] for r in same.values()}) == 1:
                refs.append("identical pixels")
            out.append(
                [
                    task,
                    f"{_num(t)} s, +{_num(ours['peak_bytes'] / 2**20)} MiB "
                    f"({_ratio(ours['peak_bytes'] / ours['out_bytes'])}× output)",
                    "; ".join(refs),
                ]
            )
    return out


def train_rows(data: dict[str, Any]) -> Rows:
    """Rows from ``bench_train.json``: slidesift's epoch vs a plain torch loop, per device."""
    parsed = []
    for label, row in _by_label(data).items():
        m = re.fullmatch(r"T=(\d+) (\w+) w(\d+)", label)
        if m:
            parsed.append((int(m.group(1)), m.group(2), int(m.group(3)), row))
    out = []
    for device in dict.fromkeys(d for _, d, _, _ in parsed):
        runs = [(t, w, row) for t, d, w, row in parsed if d == device]
        base_w = min(w for _, w, _ in runs)
        main = [(t, row) for t, w, row in runs if w == base_w]
        ours = "; ".join(f"T={t}: {_num(row['slidesift'])}" for t, row in main)
        plain = ", ".join(_num(row["plain torch"]) for _, row in main)
        ratios = ", ".join(f"{row['ratio']:.2f}" for _, row in main)
        ref = (
            f"plain torch loop over pre-cut in-memory tensors: {plain} "
            f"(slidesift / plain: {ratios})"
        )
        cores = data["machine"]["cores"]
        for w in sorted({w for _, w, _ in runs} - {base_w}):
            others = [(t, row) for t, w2, row in runs if w2 == w]
            ref += (
                f"; with {w} DataLoader worker{'s' if w > 1 else ''} on {cores} cores: "
                + ", ".join(f"{row['ratio']:.2f}" for _, row in others)
                + (f" at T={others[0][0]}" if len(others) == 1 else "")
            )
        task = (
            "train the CNN, one epoch (Adam, batch 16), tiles cut from cached thumbnails in "
            f"the DataLoader, {device.upper()}"
        )
        out.append([task, f"{ours} tiles/s", ref])
    return out


def segment_rows(data: dict[str, Any]) -> Rows:
    """Rows from ``bench_segment.json``: the stages, dense vs per-tile, and the full grid."""
    s = data["stages_s"]
    w, h = data["image"]
    kept, dense = data["kept_tiles"], data["dense_tiles_per_s"]
    plain, folded = data["per_tile_tiles_per_s"], data["per_tile_folded_tiles_per_s"]
    ceiling = data["ceiling_tiles_per_s"]
    runs, sample = data["runs"], data["per_tile_sample"]
    stages = (
        f"{_num(s['total'] + s['write'])} s: read {s['read']:.2f}, sift {s['sift']:.2f}, "
        f"classify {s['classify']:.2f} (dense, {_num(dense)} tiles/s), "
        f"assemble {s['assemble']:.2f}, write {s['write']:.2f}"
    )
    per_tile = (
        f"per tile, ONNX Runtime (median of {runs} × {sample} tiles): plain graph "
        f"{_num(plain)} tiles/s (dense is {_ratio(dense / plain)}× faster), BatchNorm folded "
        f"as in the dense path {_num(folded)} tiles/s (dense is {_ratio(dense / folded)}× "
        f"faster); bare ONNX Runtime ceiling of the plain graph {_num(ceiling)} tiles/s"
    )
    n_all, full_s = data["full_grid_tiles"], data["full_grid_dense_s"]
    backends = data.get("backend_s", {})
    speedup = data.get("backend_speedup_over_fp32", {})
    others = [
        f"{kind} {_num(backends[f'{kind} full'])} s ({_ratio(speedup[f'{kind} full'])}× fp32)"
        for kind in ("int8", "bf16")
        if f"{kind} full" in backends
    ]
    return [
        [
            f"segment a {w}×{h} phantom slide, T={data['tile']}, stride {data['stride']}, "
            f"{kept} kept tiles (random weights); medians of {runs} runs",
            stages,
            per_tile,
        ],
        [
            f"classify the full grid of that slide ({n_all} tiles), dense (target 1.2 s)",
            f"fp32 {_num(full_s)} s ({_num(n_all / full_s)} tiles/s)"
            + "".join(f"; {o}" for o in others),
            f"per tile, BatchNorm folded: {_num(n_all / folded)} s "
            f"({_ratio(n_all / full_s / folded)}× slower); plain graph: {_num(n_all / plain)} s "
            f"({_ratio(n_all / full_s / plain)}× slower)",
        ],
    ]


def phantom_rows(data: dict[str, Any]) -> Rows:
    """Rows from ``bench_phantom.json``: the largest streamed slide vs rendering in memory."""
    cases = {}
    for label, row in _by_label(data).items():
        m = re.fullmatch(r"(\d+) x (\d+) (streamed|in-memory)", label)
        if m:
            cases[(int(m.group(1)), int(m.group(2)), m.group(3))] = row
    streamed = [k for k in cases if k[2] == "streamed"]
    if not streamed:
        return []
    big = max(streamed, key=lambda k: k[0] * k[1])
    row = cases[big]
    refs = [f"level 0 alone is {row['level 0 MiB'] / 1024:.1f} GiB"]
    for w, h, mode in cases:
        if mode == "in-memory" and (w, h, "streamed") in cases:
            refs.append(
                f"rendering {w}×{h} in memory first: {_num(cases[(w, h, mode)]['peak RSS MiB'])} "
                f"MiB vs {_num(cases[(w, h, 'streamed')]['peak RSS MiB'])} MiB streamed"
            )
    return [
        [
            f"write a {big[0]}×{big[1]} phantom slide (streamed, JPEG pyramid)",
            f"{_num(row['seconds'])} s ({row['Mpx/s']:.1f} Mpx/s), peak RSS "
            f"{_num(row['peak RSS MiB'])} MiB (whole process)",
            "; ".join(refs),
        ]
    ]


def cohort_rows(data: dict[str, Any]) -> Rows:
    """The row from ``bench_cohort.json``: the cohort in process vs on two Dask clusters."""
    ways = data["ways"]
    sync, *dask = ways  # the first way is the speed-up's reference

    def rss(r: dict[str, Any]) -> str:
        peak = r.get("max_worker_peak_rss_mib")
        return "" if peak is None else f", peak RSS {_num(peak)} MiB"

    ours = "; ".join(
        f"{way}: {_num(ways[way]['slides_per_min'])} slides/min "
        f"({_ratio(ways[way]['speedup'])}× in process){rss(ways[way])} per worker"
        for way in dask
    )
    other = max(r["others_cores"] for r in ways.values())
    ref = (
        f"in process, one slide after another: {_num(ways[sync]['slides_per_min'])} slides/min"
        f"{rss(ways[sync])}; other processes kept up to {other:.1f} of "
        f"{data['machine']['cores']} cores busy"
    )
    lo, hi = data["size"]
    workers = max(r["processes"] for r in ways.values())
    task = (
        f"evaluate {data['slides']} phantom slides ({lo}-{hi} px, N={data['longest']}, "
        f"T={data['tile']}, stride {data['stride']}, random weights), {workers} worker processes"
    )
    return [[task, ours, ref]]


def e2e_rows(data: dict[str, Any]) -> Rows:
    """The row from ``bench_e2e.json``: ``slidesift segment`` timed from process start."""
    torch = "imports torch" if data["torch_imported"] else "never imports torch"
    if "inference" in data:
        torch = f"classifier: {data['inference']} (`--inference auto`); {torch}"
    return [
        [
            f"`slidesift segment CKPT SLIDE` from process start to exit, {data['longest']}-px "
            f"thumbnail, T={data['tile']} (median of {data['runs']} fresh processes)",
            f"{_num(data['segment_s'])} s (target {_num(data['target_s'])} s); {torch}",
            f"the CLI alone (`slidesift --version`) {_num(data['cli_start_s'])} s; Python alone "
            f"{_num(data['python_start_s'])} s",
        ]
    ]


#: The benchmarks in table order: JSON stem -> its rows.
BENCHMARKS: dict[str, Callable[[dict[str, Any]], Rows]] = {
    "bench_sift": sift_rows,
    "bench_read": read_rows,
    "bench_train": train_rows,
    "bench_segment": segment_rows,
    "bench_e2e": e2e_rows,
    "bench_cohort": cohort_rows,
    "bench_phantom": phantom_rows,
}


def render(results_dir: Path) -> str:
    """The README's speed table (markdown) from the JSON files in ``results_dir``.

    Parameters
    ----------
    results_dir
        Folder holding ``bench_*.json`` as the benchmarks write them.

    Returns
    -------
    str
        The table's lines joined by newlines, without a trailing newline; a benchmark whose
        JSON is missing has no row.

    Raises
    ------
    FileNotFoundError
        None of the benchmarks' JSON files is in ``results_dir``.
    """
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    found = 0
    for stem, rows_of in BENCHMARKS.items():
        path = Path(results_dir) / f"{stem}.json"
        if not path.exists():
            continue
        found += 1
        data = json.loads(path.read_text(encoding="utf-8"))
        machine = _machine(data)
        for row in rows_of(data):
            lines.append("| " + " | ".join([*row, machine]) + " |")
    if not found:
        raise FileNotFoundError(
            f"no benchmark JSON in {results_dir} (expected {', '.join(BENCHMARKS)}); "
            "run `make bench`"
        )
    return "\n".join(lines)


def render_by_cpu(results_dir: Path) -> str:
    """The README's table of segmenting speed by CPU, from ``results_dir/by-cpu/*/``.

    Columns: each CPU with a ``bench_segment.json`` there (the latest run on it), in order of
    measurement. Rows: the segment stages in fp32, the full grid by backend, int8's speed-up,
    and the whole command (``bench_e2e.json`` of the same CPU, when there is one).

    Returns
    -------
    str
        The markdown table, or ``""`` when no CPU folder has a ``bench_segment.json``.
    """
    runs = []
    for folder in sorted(Path(results_dir, "by-cpu").glob("*/")):
        segment = folder / "bench_segment.json"
        if segment.exists():
            e2e = folder / "bench_e2e.json"
            whole = json.loads(e2e.read_text(encoding="utf-8")) if e2e.exists() else None
            runs.append((json.loads(segment.read_text(encoding="utf-8")), whole))
    if not runs:
        return ""
    runs.sort(key=lambda run: run[0]["measured"])

    def int8_gain(data: dict[str, Any]) -> str:
        gain = data.get("backend_speedup_over_fp32", {}).get("int8 full")
        return "-" if gain is None else f"{_ratio(gain)}×"

    def full_grid(data: dict[str, Any]) -> str:
        b = data.get("backend_s", {})
        kinds = [k for k in ("fp32", "int8", "bf16") if f"{k} full" in b]
        return " / ".join(kinds) + ": " + " / ".join(f"{_num(b[f'{k} full'])} s" for k in kinds)

    def e2e(data: dict[str, Any] | None) -> str:
        if data is None:
            return "not measured"
        picked = f" ({data['inference']})" if "inference" in data else ""
        return f"{_num(data['segment_s'])} s{picked}"

    rows = [
        ["segment, every stage, fp32 dense"]
        + [f"{_num(seg['stages_s']['total'] + seg['stages_s']['write'])} s" for seg, _ in runs],
        ["classify the full grid (target 1.2 s)"] + [full_grid(seg) for seg, _ in runs],
        ["int8 over fp32, full grid"] + [int8_gain(seg) for seg, _ in runs],
        ["`slidesift segment` from process start (target 2.5 s)"] + [e2e(run) for _, run in runs],
    ]
    header = ["6000-px phantom, T=400, stride 80"] + [f"{_machine(seg)}" for seg, _ in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the table for the results folder given on the command line (default
    ``bench-results``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="JSON folder")
    args = parser.parse_args(argv)
    print(render(args.results))
    by_cpu = render_by_cpu(args.results)
    if by_cpu:
        print()
        print(by_cpu)


if __name__ == "__main__":
    main()
