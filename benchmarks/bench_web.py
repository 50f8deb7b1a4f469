"""The web page's speed: a phantom thumbnail segmented in headless Chromium (onnxruntime-web).

Exports the page for a checkpoint (default: the binary model the tests train, from
``.cache/test-models``), serves it on localhost and times the page on a test slide of its
cohort read at 1500 px (and at the model's N), single-threaded (any static server) and with
the cross-origin isolation headers that let onnxruntime-web use threads; then a T = 400 model
(stride 80: the dense path) on a 3000-px phantom thumbnail. For scale, Python's ONNX Runtime
(1 thread) classifies the same kept tiles the same way. Writes ``bench-results/bench_web.json``;
``--screenshot PATH`` also saves the page with its result at the model's N.

Needs chromium on PATH, the dev extra (playwright) and the runtime (``make web-runtime``)::

    python benchmarks/bench_web.py --screenshot docs/img/web-page.png
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from _common import report

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _default_checkpoint() -> Path:
    runs = sorted((REPO / ".cache" / "test-models").glob("binary-*/run"))
    if not runs:
        raise SystemExit(
            "no trained test model: run pytest tests/test_web_page.py once, or give --checkpoint"
        )
    import csv

    rows = list(csv.DictReader((runs[-1] / "log.csv").open()))
    best = max(rows, key=lambda r: (float(r["holdout_raw_balanced_accuracy"]), -int(r["epoch"])))
    return runs[-1] / f"epoch_{int(best['epoch']):03d}.safetensors"


@contextmanager
def serve(folder: Path, isolated: bool) -> Iterator[str]:
    """Serve ``folder`` on localhost; ``isolated`` adds COOP/COEP (threads in the runtime)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def end_headers(self) -> None:
            if isolated:
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            super().end_headers()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_page(browser: Any, url: str, png: Path, shot: Path | None = None) -> dict[str, Any]:
    """Load the page, feed it ``png``, wait for the result; the page's timings."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})

    def wait(states: tuple[str, ...], seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            st = page.evaluate("() => window.slidesift && window.slidesift.state")
            if st in states:
                return
            if st == "error":
                raise RuntimeError(page.evaluate("() => window.slidesift.error"))
            time.sleep(0.1)
        raise TimeoutError(states)

    opened = time.perf_counter()
    page.goto(url + "index.html")
    wait(("ready",), 60)  # model.json, the runtime and the network loaded and compiled
    ready = time.perf_counter() - opened
    start = time.perf_counter()
    page.set_input_files("#file", str(png))
    time.sleep(0.2)
    wait(("done",), 900)
    wall = time.perf_counter() - start
    got = page.evaluate(
        "() => ({timings: window.slidesift.timings, tiles: window.slidesift.keep.length,"
        " keep: window.slidesift.keep.reduce((a, b) => a + b, 0),"
        " isolated: self.crossOriginIsolated})"
    )
    if shot is not None:
        page.check("#show-tiles")
        page.evaluate("() => window.scrollTo(0, 0)")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=False)
    page.close()
    return {**got, "wall_s": wall, "ready_s": ready}


def python_seconds(checkpoint: Any, png: Path) -> float:
    """ONNX Runtime (1 thread) on the kept tiles of ``png``: the native reference."""
    from PIL import Image

    from slidesift.inference import OnnxTiles, classify_tiles
    from slidesift.segment import SegmentSpec
    from slidesift.sift import measure_tiles, sift
    from slidesift.tiles import TileGrid

    pixels = np.asarray(Image.open(png).convert("RGB"))
    stride = SegmentSpec().stride_for(checkpoint.tile)
    grid = TileGrid.from_stride(pixels.shape[:2], tile=checkpoint.tile, stride=stride)
    keep = sift(measure_tiles(pixels, grid, checkpoint.sift), checkpoint.rails).keep
    xy = grid.th_xy()[np.flatnonzero(keep.ravel())]
    classifier = OnnxTiles(checkpoint, threads=1)
    start = time.perf_counter()
    for _ in classify_tiles(classifier, pixels, xy, grid.tile, batch=16):
        pass
    return time.perf_counter() - start


def t400_rows(browser: Any, root: Path, longest: int) -> tuple[list[list[Any]], dict[str, Any]]:
    """A T = 400 model (random weights, rails open: every tissue tile kept) on a phantom slide
    read at ``longest`` px: stride 80, so the page takes the dense path; Python's fp32 dense
    path on one thread for scale."""
    from PIL import Image

    from bench_segment import make_checkpoint
    from slidesift.checkpoint import load_checkpoint
    from slidesift.inference import DenseOnnx
    from slidesift.io.slide import open_slide, read_thumb
    from slidesift.phantom.cohort import CohortSpec, make_cohort
    from slidesift.sift import measure_tiles, sift
    from slidesift.tiles import TileGrid
    from slidesift.web import export_web

    cohort = make_cohort(CohortSpec(count=1, longest=(longest, longest), seed=4), root / "c")
    checkpoint = load_checkpoint(make_checkpoint(root))
    out = export_web(checkpoint, root / "page400")
    with open_slide(next(iter(cohort)).slide) as s:
        pixels = read_thumb(s, longest=longest).pixels
    png = root / "t400.png"
    Image.fromarray(pixels).save(png)
    with serve(out, False) as url:
        got = run_page(browser, url, png)
    grid = TileGrid.from_stride(pixels.shape[:2], tile=400, stride=80)
    keep = sift(measure_tiles(pixels, grid, checkpoint.sift), checkpoint.rails).keep
    xy = grid.th_xy()[np.flatnonzero(keep.ravel())]
    dense = DenseOnnx(checkpoint, threads=1)
    start = time.perf_counter()
    for _ in dense.classify(pixels, xy, 80):
        pass
    native = time.perf_counter() - start
    t = got["timings"]
    h, w = pixels.shape[:2]
    row = [
        f"T = 400, {w} x {h} px, dense (maps + head), 1 thread", got["tiles"], got["keep"],
        t["sift_ms"] / 1000, got["ready_s"], t["classify_ms"] / 1000, t["total_ms"] / 1000,
        t["classify_ms"] / max(1, got["keep"]), native,
    ]  # fmt: skip
    return [row], {"t400_dense": {**got, "python_dense_1thread_s": native}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--t400-px", type=int, default=3000, help="thumbnail of the T = 400 run")
    args = parser.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from slidesift.checkpoint import load_checkpoint
    from slidesift.io.slide import open_slide, read_thumb
    from slidesift.manifest import read_manifest
    from slidesift.web import export_web
    from slidesift.web.runtime import ORT_WEB_VERSION

    path = args.checkpoint or _default_checkpoint()
    checkpoint = load_checkpoint(path)
    manifest = path.parent.parent / "cohort" / "manifest.csv"
    slide = read_manifest(manifest).split("test")[0].slide
    n_model = int(checkpoint.downsample.to_dict().get("longest") or 1000)
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = export_web(checkpoint, root / "page")
        sizes = {
            p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()
        }
        pngs = {}
        for n in (n_model, 1500):
            with open_slide(slide) as s:
                thumb = read_thumb(s, longest=n)
            pngs[n] = root / f"thumb_{n}.png"
            Image.fromarray(thumb.pixels).save(pngs[n])
        with sync_playwright() as p:
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            if chromium is None:
                raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                for isolated in (False, True):
                    with serve(out, isolated) as url:
                        for n, png in pngs.items():
                            shot = args.screenshot if (n == n_model and not isolated) else None
                            got = run_page(browser, url, png, shot)
                            t = got["timings"]
                            native = python_seconds(checkpoint, png) if not isolated else None
                            key = f"{n}px_{'threads' if isolated else 'single'}"
                            runs[key] = {**got, "python_onnx_1thread_s": native}
                            rows.append([
                                f"{n} px, " + ("COOP/COEP (threads)" if got["isolated"]
                                               else "plain server (1 thread)"),
                                got["tiles"], got["keep"], t["sift_ms"] / 1000, got["ready_s"],
                                t["classify_ms"] / 1000, t["total_ms"] / 1000,
                                1000 * t["classify_ms"] / 1000 / max(1, got["keep"]),
                                native if native is not None else "",
                            ])  # fmt: skip
                extra_rows, extra_runs = t400_rows(browser, root, args.t400_px)
                rows += extra_rows
                runs.update(extra_runs)
            finally:
                browser.close()
    report(
        "bench_web",
        f"The web page in headless Chromium (onnxruntime-web {ORT_WEB_VERSION}, WebAssembly)",
        [
            "thumbnail",
            "tiles",
            "kept",
            "sift s",
            "page ready s",
            "network s",
            "total s",
            "ms / tile",
            "python 1 thread s",
        ],
        rows,
        {
            "runs": runs,
            "export_bytes": sizes,
            "export_total_mb": sum(sizes.values()) / 1e6,
            "checkpoint": str(path),
        },
    )


if __name__ == "__main__":
    main()
