"""``slidesift.web``: the runtime finder, the exporter, the page's JS, and the page in Chromium.

Three layers:

- the runtime finder and the exporter, in Python;
- the page's pure modules (``sift.mjs``, ``mask.mjs``) run by node against slidesift's own
  functions on the same inputs, bit for bit (fast; skipped without node);
- the exported page in headless Chromium (Playwright on the system ``chromium``, never
  ``playwright install``) with the ``learned`` model and a phantom thumbnail: the same kept
  tiles as Python, labels as Python's fp32 ONNX, no request outside its folder, downloads that
  match the drawn mask (slow; skipped without chromium or the runtime: ``make web-runtime``).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slidesift.assemble import assemble
from slidesift.errors import ConfigError, OutputError, SlidesiftError
from slidesift.io.geojson import mask_to_geojson, parse_geojson
from slidesift.io.polygons import rasterize
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.phantom import he_like_image
from slidesift.rails import Rails
from slidesift.sift import SiftSpec, _xlog2x, measure_tiles, sift
from slidesift.tiles import TileGrid
from slidesift.web import export_web, runtime
from slidesift.web.runtime import ORT_WEB_VERSION, WebRuntimeError, find_runtime
from test_report import CHROMIUM_ARGS, _chromium

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "slidesift" / "web" / "assets"

# --- the runtime finder -----------------------------------------------------------------------

FAKE = {
    "ort.wasm.bundle.min.mjs": b"export const fake = 1;\n",
    "ort-wasm-simd-threaded.wasm": b"\0asm",
}


@pytest.fixture
def fake_pins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, bytes]:
    """Pin the hashes of two tiny stand-in files, and point the cache at an empty folder."""
    monkeypatch.setattr(
        runtime, "PINNED", {k: hashlib.sha256(v).hexdigest() for k, v in FAKE.items()}
    )
    monkeypatch.setenv("SLIDESIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    return dict(FAKE)


def _package(root: Path, files: dict[str, bytes], version: str = ORT_WEB_VERSION) -> Path:
    """An unpacked npm package folder: package.json and dist/."""
    (root / "dist").mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": version}))
    for name, data in files.items():
        (root / "dist" / name).write_bytes(data)
    return root


def _tgz(path: Path, files: dict[str, bytes], version: str = ORT_WEB_VERSION) -> Path:
    """What ``npm pack`` writes: a gzipped tar of package/..."""
    with tarfile.open(path, "w:gz") as tar:
        meta = json.dumps({"name": "onnxruntime-web", "version": version}).encode()
        for name, data in [("package/package.json", meta)] + [
            (f"package/dist/{k}", v) for k, v in files.items()
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_missing_runtime_is_a_clear_error_with_the_commands(fake_pins: dict[str, bytes]) -> None:
    with pytest.raises(WebRuntimeError) as info:
        find_runtime()
    text = str(info.value)
    assert f"npm pack onnxruntime-web@{ORT_WEB_VERSION}" in text
    assert "make web-runtime" in text
    assert str(runtime.default_runtime_dir()) in text
    assert info.value.exit_code == 7 and isinstance(info.value, SlidesiftError)


def test_runtime_is_found_in_every_form(fake_pins: dict[str, bytes], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    tgz = _tgz(tmp_path / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz", fake_pins)
    package = _package(tmp_path / "unpacked" / "package", fake_pins)
    for given in (tgz, tmp_path, package, package.parent, package / "dist"):
        assert find_runtime(given).read() == fake_pins, given
    monkeypatch.setenv(runtime.RUNTIME_ENV, str(tgz))
    assert find_runtime().origin == f"${runtime.RUNTIME_ENV}"
    assert find_runtime(package).origin == "runtime="  # the argument wins over the variable
    monkeypatch.delenv(runtime.RUNTIME_ENV)
    cache = runtime.default_runtime_dir()
    cache.mkdir(parents=True)
    shutil.copy(tgz, cache)
    found = find_runtime()
    assert found.origin == "cache" and found.read() == fake_pins


def test_wrong_hash_version_or_path_is_refused(fake_pins: dict[str, bytes], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    bad = dict(fake_pins, **{"ort-wasm-simd-threaded.wasm": b"\0asm-tampered"})
    for given in (_tgz(tmp_path / "bad.tgz", bad), _package(tmp_path / "bad", bad)):
        with pytest.raises(WebRuntimeError, match=r"SHA-256 .* damaged, or another build"):
            find_runtime(given).read()
    old = _tgz(tmp_path / "old.tgz", fake_pins, version="1.20.0")
    with pytest.raises(WebRuntimeError, match=r"onnxruntime-web 1\.20\.0, and the page is pinned"):
        find_runtime(old).read()
    partial = {"ort.wasm.bundle.min.mjs": fake_pins["ort.wasm.bundle.min.mjs"]}
    with pytest.raises(WebRuntimeError, match=r"no dist/ort-wasm-simd-threaded\.wasm"):
        find_runtime(_package(tmp_path / "partial", partial)).read()
    (tmp_path / "cut.tgz").write_bytes(_tgz(tmp_path / "x.tgz", fake_pins).read_bytes()[:60])
    with pytest.raises(WebRuntimeError, match="cannot be read"):
        find_runtime(tmp_path / "cut.tgz").read()
    with pytest.raises(WebRuntimeError, match="no such file or folder"):
        find_runtime(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WebRuntimeError, match="no onnxruntime-web there"):
        find_runtime(tmp_path / "empty")
    # a variable that names a wrong place is an error, not a reason to look elsewhere
    monkeypatch.setenv(runtime.RUNTIME_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(WebRuntimeError, match=r"from \$SLIDESIFT_ORT_WEB"):
        find_runtime()


def test_the_makefile_fetches_the_pinned_version() -> None:
    text = (REPO / "Makefile").read_text()
    assert f"ORT_WEB := {ORT_WEB_VERSION}" in text
    assert "npm pack" in text and "slidesift.web check" in text


def _real_runtime() -> Any:
    try:
        found = find_runtime()
        found.read()
    except WebRuntimeError as exc:
        pytest.skip(
            f"onnxruntime-web {ORT_WEB_VERSION} not fetched ({exc.reason}): make web-runtime"
        )
    return found


def test_the_pinned_runtime_passes_its_own_check() -> None:
    found = _real_runtime()
    files = found.read()
    assert set(files) == set(runtime.PINNED)
    size = sum(len(v) for v in files.values())
    assert 10e6 < size < 20e6, size  # the WebAssembly build only (the WebGPU one is +29 MB)


# --- the exporter -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch", reason="needs torch, the 'learn' extra")
    from conftest import discriminative_checkpoint

    return discriminative_checkpoint(96, tmp_path_factory.mktemp("ckpt"))


@pytest.mark.learn
def test_export_writes_the_page_and_replaces_only_its_own(
    small_checkpoint: Any, tmp_path: Path, fake_pins: dict[str, bytes]
) -> None:
    tgz = _tgz(tmp_path / "ort.tgz", fake_pins)
    out = export_web(small_checkpoint, tmp_path / "site" / "page", runtime=tgz)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"index.html", "app.mjs", "sift.mjs", "mask.mjs", "model.json", "model.onnx",
            "xlog2x.bin", "ort/ort.wasm.bundle.min.mjs", "ort/ort-wasm-simd-threaded.wasm",
            "ort/NOTICE.txt"} <= names  # fmt: skip
    doc = json.loads((out / "model.json").read_text())
    ck = small_checkpoint
    assert doc["tile"] == 96 and doc["stride"] == 19  # SegmentSpec(): 80% overlap
    assert doc["rails"]["lo"] == ck.rails.lo and doc["sift"] == ck.sift.to_dict()
    assert doc["assembly"] == {"mode": "mean", "threshold": 0.5}
    assert doc["dense"] is None and "maps.onnx" not in names  # stride 19: per tile, as segment
    assert doc["model"]["epoch"] == ck.epoch and doc["runtime"]["version"] == ORT_WEB_VERSION
    table = np.fromfile(out / "xlog2x.bin", "<f8")
    assert np.array_equal(table, _xlog2x(3 * 96 * 96))
    assert doc["entropy_table"]["log2_total"] == float(np.log2(3 * 96 * 96))
    assert (out / "ort" / "ort-wasm-simd-threaded.wasm").read_bytes() == fake_pins[
        "ort-wasm-simd-threaded.wasm"
    ]
    # again over itself: replaced whole, nothing left beside it
    (out / "stale.txt").write_text("from an older export")
    export_web(small_checkpoint, out, runtime=tgz)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["page"]
    # a folder with other files is refused, untouched
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="no earlier slidesift web export"):
        export_web(small_checkpoint, other, runtime=tgz)
    assert [p.name for p in other.iterdir()] == ["mine.txt"]
    # a missing runtime fails before anything is written
    with pytest.raises(WebRuntimeError):
        export_web(small_checkpoint, tmp_path / "never", runtime=tmp_path / "nowhere")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


@pytest.mark.slow
@pytest.mark.learn
def test_the_page_opened_from_disk_says_how_to_serve_it(
    small_checkpoint: Any, tmp_path: Path, fake_pins: dict[str, bytes]
) -> None:
    """file:// cannot load ES modules (origin null): the page's static text says what to do."""
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    out = export_web(
        small_checkpoint, tmp_path / "page", runtime=_tgz(tmp_path / "o.tgz", fake_pins)
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            text = page.inner_text("#message")
        finally:
            browser.close()
    assert "python3 -m http.server 8000" in text and "file://" in text


@pytest.mark.learn
def test_export_refuses_a_stain_normalised_model(small_checkpoint: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    meta = dict(small_checkpoint.meta)
    meta["normalization"] = {
        "method": "reinhard",
        "mean": [50.0, 0.0, 0.0],
        "std": [10.0, 5.0, 5.0],
    }
    with pytest.raises(ConfigError, match="does not stain-normalise"):
        export_web(replace(small_checkpoint, meta=meta), tmp_path / "page")


# --- the page's modules in node, against slidesift ---------------------------------------------

NODE_RUNNER = r"""
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const sift = await import(pathToFileURL(job.assets + '/sift.mjs'));
const mask = await import(pathToFileURL(job.assets + '/mask.mjs'));
const meta = await import(pathToFileURL(job.assets + '/imagemeta.mjs'));
const bin = (p, T) => {
  const b = readFileSync(p);
  return new T(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};
const raw = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const results = [];
for (const c of job.cases) {
  if (c.kind === 'meta') {
    results.push(meta.readImageMeta(new Uint8Array(readFileSync(c.file))));
    continue;
  }
  const grid = sift.gridFromStride(c.h, c.w, c.tile, c.stride);
  if (c.kind === 'sift') {
    const xlog2x = bin(c.table, Float64Array);
    const stats = sift.measureTiles(bin(c.pixels, Uint8Array), grid, c.spec,
      { xlog2x, log2N: c.log2N, total: c.total }, job.gray);
    const s = sift.siftTiles(stats, c.spec, c.rails);
    writeFileSync(c.out, Buffer.concat([raw(stats.background), raw(stats.entropy), raw(s.keep)]));
    results.push({ n: grid.n });
  } else if (c.kind === 'assemble') {
    const a = mask.assemble(grid, bin(c.keep, Uint8Array), bin(c.probs, Float32Array),
      c.classes, c.mode, c.threshold);
    writeFileSync(c.out, raw(a.mask));
    results.push({ counts: a.counts, dominant: a.dominant });
  } else if (c.kind === 'geojson') {
    const m = bin(c.mask, Uint8Array);
    writeFileSync(c.out, JSON.stringify(mask.maskGeojson(m, c.w, c.h, c.scale)));
    const blob = await mask.maskPng(m, c.w, c.h, { Software: 'test' });
    writeFileSync(c.png, Buffer.from(await blob.arrayBuffer()));
    results.push({});
  }
}
console.log(JSON.stringify(results));
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH: the page's modules are checked in Chromium only")
    return node


def _run_node(tmp_path: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runner = tmp_path / "runner.mjs"
    runner.write_text(NODE_RUNNER)
    job = tmp_path / "job.json"
    from slidesift.web.export import GRAY

    job.write_text(json.dumps({"assets": str(ASSETS), "gray": GRAY, "cases": cases}))
    done = subprocess.run([_node(), str(runner), str(job)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _images(rng: np.random.Generator) -> Iterator[tuple[np.ndarray, int, int, SiftSpec]]:
    """H&E-like and synthetic images under every sift option, T and stride (gaps, b > 1)."""
    specs = [SiftSpec(background=b, entropy=e)  # type: ignore[arg-type]
             for b in ("gray-limits", "peak-frequency") for e in ("rgb", "gray")]  # fmt: skip
    geometry = [(48, 10), (48, 16), (32, 32), (32, 45), (40, 7), (24, 6)]
    for i, (tile, stride) in enumerate(geometry):
        h, w = (int(v) for v in rng.integers(130, 260, 2))
        if i % 2 == 0:
            pixels, _ = he_like_image((h, w), seed=i, tumor_fraction=0.4)
        else:  # flat glass, dark dust, noise: grey values on both limits
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            pixels[: h // 3] = 236
            pixels[h // 3 : h // 2, : w // 2] = 14
            pixels[h // 2 :, : w // 3] = rng.integers(10, 20, (h - h // 2, w // 3, 3))
        for spec in specs:
            yield np.ascontiguousarray(pixels), tile, stride, spec
    # background exactly max_background (0.5): half of each first-row tile is glass
    pixels, _ = he_like_image((120, 150), seed=9, tumor_fraction=0.5)
    pixels[:16] = 245
    for spec in specs:
        yield np.ascontiguousarray(pixels), 32, 16, spec


def test_the_page_sifts_exactly_as_python(tmp_path: Path, rng: np.random.Generator) -> None:
    cases, expected = [], []
    for k, (pixels, tile, stride, spec) in enumerate(_images(rng)):
        grid = TileGrid.from_stride(pixels.shape[:2], tile=tile, stride=stride)
        stats = measure_tiles(pixels, grid, spec)
        e = np.sort(stats.entropy.ravel())
        # rails on tiles' own entropies: lo <= H <= hi is tested on its edges
        rails = Rails(float(e[len(e) // 5]), float(e[(4 * len(e)) // 5]), spec.entropy, tile)
        result = sift(stats, rails)
        total = (3 if spec.entropy == "rgb" else 1) * tile * tile
        table = tmp_path / f"t{total}.bin"
        _xlog2x(total).astype("<f8").tofile(table)
        pixels.tofile(tmp_path / f"p{k}.bin")
        cases.append({
            "kind": "sift", "h": pixels.shape[0], "w": pixels.shape[1], "tile": tile,
            "stride": stride, "spec": spec.to_dict(), "pixels": str(tmp_path / f"p{k}.bin"),
            "table": str(table), "total": total, "log2N": float(np.log2(total)),
            "rails": {"lo": rails.lo, "hi": rails.hi}, "out": str(tmp_path / f"o{k}.bin"),
        })  # fmt: skip
        expected.append((stats, result))
    _run_node(tmp_path, cases)
    edges = halves = 0
    for case, (stats, result) in zip(cases, expected, strict=True):
        n = stats.entropy.size
        raw = Path(case["out"]).read_bytes()
        background = np.frombuffer(raw[: 8 * n], "<f8")
        entropy = np.frombuffer(raw[8 * n : 16 * n], "<f8")
        keep = np.frombuffer(raw[16 * n :], np.uint8).astype(bool)
        where = f"{case['spec']} T={case['tile']} stride={case['stride']}"
        assert np.array_equal(background, stats.background.ravel()), where
        assert np.array_equal(entropy, stats.entropy.ravel()), where  # bit for bit
        assert np.array_equal(keep, result.keep.ravel()), where
        lo, hi = case["rails"]["lo"], case["rails"]["hi"]
        edges += int(((entropy == lo) | (entropy == hi)).sum())
        halves += int((background == 0.5).sum())
    assert edges >= len(cases)  # tiles sitting exactly on a rail were kept alike
    assert halves > 0  # and tiles exactly at max_background


def test_the_page_assembles_exactly_as_python(tmp_path: Path, rng: np.random.Generator) -> None:
    cases, expected = [], []
    geometry = [(48, 10, 200, 260), (48, 16, 181, 150), (32, 32, 100, 140), (30, 45, 150, 170)]
    for k, (tile, stride, h, w) in enumerate(geometry):
        grid = TileGrid.from_stride((h, w), tile=tile, stride=stride)
        for classes in (("non-tumor", "tumor"), ("non-tumor", "b-solid", "a-gland")):
            c = len(classes)
            keep = rng.random(grid.grid_shape) < 0.7
            if c == 2:  # quarters: mean probabilities land exactly on thresholds
                p1 = rng.integers(0, 5, grid.grid_shape) / 4.0
                probs = np.stack([1 - p1, p1], -1).astype(np.float32)
            else:  # two subtypes tied in tile count half the time
                labels = rng.integers(0, c, grid.grid_shape)
                probs = np.eye(c, dtype=np.float32)[labels] * 0.8 + 0.2 / c
                if k % 2:
                    kl = labels[keep]
                    surplus = int((kl == 1).sum() - (kl == 2).sum())
                    idx = np.flatnonzero((labels == 1) & keep)[: max(surplus, 0)]
                    flat = probs.reshape(-1, c)
                    flat[idx] = np.eye(c, dtype=np.float32)[0] * 0.8 + 0.2 / c
            modes = ("mean", "union") if c == 2 else ("dominant", "union")
            for mode in modes:
                for threshold in (0.5, 0.25) if mode == "mean" else (0.5,):
                    i = len(cases)
                    keep.astype(np.uint8).tofile(tmp_path / f"k{i}.bin")
                    probs.astype("<f4").tofile(tmp_path / f"p{i}.bin")
                    cases.append({
                        "kind": "assemble", "h": h, "w": w, "tile": tile, "stride": stride,
                        "keep": str(tmp_path / f"k{i}.bin"), "probs": str(tmp_path / f"p{i}.bin"),
                        "classes": list(classes), "mode": mode, "threshold": threshold,
                        "out": str(tmp_path / f"m{i}.bin"),
                    })  # fmt: skip
                    expected.append(assemble(grid, keep, probs, classes, mode=mode,  # type: ignore[arg-type]
                                             threshold=threshold))  # fmt: skip
    results = _run_node(tmp_path, cases)
    for case, want, got in zip(cases, expected, results, strict=True):
        mask = np.fromfile(case["out"], np.uint8).reshape(case["h"], case["w"]).astype(bool)
        where = f"{case['mode']} {case['classes']} T={case['tile']} stride={case['stride']}"
        assert np.array_equal(mask, want.mask), where
        assert got["counts"] == want.counts and got["dominant"] == want.dominant, where


def _masks(rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blobs, holes, islands in holes, pixels touching diagonally, the border, nothing, all."""
    import cv2

    for seed in range(4):
        noise = cv2.GaussianBlur(rng.random((90, 120)), (0, 0), 3 + seed)
        yield noise > np.quantile(noise, 0.5 + 0.1 * seed)
    m = np.zeros((12, 14), bool)
    m[1:10, 1:11] = True
    m[3:8, 3:9] = False  # a hole
    m[5, 5] = True  # an island in it
    m[10, 11] = m[11, 12] = True  # diagonal neighbours (a saddle) at the corner
    m[0, 13] = True  # on the border
    yield m
    checker = (np.indices((9, 11)).sum(0) % 2).astype(bool)  # every pixel a saddle
    yield checker
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)


def test_the_page_writes_geojson_and_png_that_read_back_as_its_mask(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    from PIL import Image

    from slidesift.io.outputs import encode_png

    cases, masks = [], list(_masks(rng))
    for i, m in enumerate(masks):
        h, w = m.shape
        m.astype(np.uint8).tofile(tmp_path / f"mask{i}.bin")
        scale = [1.0, 1.0] if i % 2 else [2.5, 4.0]
        cases.append({"kind": "geojson", "h": h, "w": w, "tile": 1, "stride": 1, "scale": scale,
                      "mask": str(tmp_path / f"mask{i}.bin"), "out": str(tmp_path / f"g{i}.json"),
                      "png": str(tmp_path / f"g{i}.png")})  # fmt: skip
    _run_node(tmp_path, cases)
    for case, m in zip(cases, masks, strict=True):
        h, w = m.shape
        collection = json.loads(Path(case["out"]).read_text())
        python = mask_to_geojson(m, tuple(case["scale"]))
        assert len(collection["features"]) == len(python["features"])
        if m.any():
            feature, want = collection["features"][0], python["features"][0]
            assert feature["geometry"]["type"] == want["geometry"]["type"] == "MultiPolygon"
            assert feature["properties"] == want["properties"]
            painted = rasterize(parse_geojson(collection), (w, h), tuple(case["scale"]))
            assert np.array_equal(painted.astype(bool), m)
            for polygon in feature["geometry"]["coordinates"]:
                for ring in polygon:  # closed, corners only (as CHAIN_APPROX_SIMPLE)
                    assert ring[0] == ring[-1] and len(ring) >= 5
                    pts = np.array(ring[:-1] + ring[:2], float)
                    a, b = pts[1:-1] - pts[:-2], pts[2:] - pts[1:-1]
                    turn = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
                    assert np.all(turn != 0), ring
        png = Image.open(case["png"])
        assert png.mode == Image.open(io.BytesIO(encode_png(m))).mode == "1"
        assert np.array_equal(np.asarray(png, bool), m)


def test_the_page_reads_the_scale_a_thumbnail_states(tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    img = Image.new("RGB", (8, 6), (200, 120, 160))
    files: dict[str, dict[str, Any]] = {}

    def save(name: str, want: dict[str, Any], **kw: Any) -> None:
        img.save(tmp_path / name, **kw)
        files[name] = want

    info = PngImagePlugin.PngInfo()
    info.add_text("slidesift", json.dumps({"mpp": [3.0, 3.0], "scale": [12.5, 12.5]}))
    save("json.png", {"mpp": [3.0, 3.0], "mppFrom": "metadata", "scale": [12.5, 12.5]},
         pnginfo=info)  # fmt: skip
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Comment", json.dumps({"slidesift": {"downsample": 4, "l0_size": [32, 24]}}))
    save("itxt.png", {"scale": [4, 4], "l0Size": [32, 24]}, pnginfo=info)
    save("dpi.png", {"mpp": [2.0, 2.0], "mppFrom": "resolution tag"}, dpi=(12700, 12700))
    save("screen.png", {}, dpi=(96, 96))  # a screen resolution is no scan's
    comment = json.dumps({"mpp": 8.0, "scale": [2.0, 3.0]}).encode()
    save("comment.jpg", {"mpp": [8.0, 8.0], "mppFrom": "metadata", "scale": [2.0, 3.0]},
         comment=comment)  # fmt: skip
    save("dpi.jpg", {"mpp": [2.0, 2.0], "mppFrom": "resolution tag"}, dpi=(12700, 12700))
    save("plain.jpg", {})
    got = _run_node(tmp_path, [{"kind": "meta", "file": str(tmp_path / n)} for n in files])
    for (name, want), found in zip(files.items(), got, strict=True):
        assert found.keys() == want.keys(), (name, found)
        for key, value in want.items():
            assert found[key] == (value if isinstance(value, str) else pytest.approx(value)), name


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_the_page_reads_the_scale_slidesift_thumb_writes(tmp_path: Path, ext: str) -> None:
    """A thumbnail of ``slidesift thumb`` tells the page its um/px and its level-0 scale (the
    GeoJSON is then in level-0 px), from the PNG iTXt record and from the JPEG comment."""
    from slidesift.io.downsample import Downsample
    from slidesift.thumbnail import make_thumbnail, write_thumbnail

    pixels, _ = he_like_image((300, 400), seed=4, tumor_fraction=0.3)
    slide = write_pyramidal_tiff(tmp_path / "case.svs", pixels, mpp=0.5, flavor="aperio")
    thumb = make_thumbnail(slide, downsample=Downsample(longest=100))
    write_thumbnail(tmp_path / f"case.{ext}", thumb)
    (found,) = _run_node(tmp_path, [{"kind": "meta", "file": str(tmp_path / f"case.{ext}")}])
    meta = thumb.meta
    assert meta.um_per_px is not None
    assert found["mppFrom"] == "metadata"
    assert found["mpp"] == pytest.approx(list(meta.um_per_px))
    assert found["scale"] == pytest.approx(list(meta.downsample))
    assert found["l0Size"] == [400, 300]


# --- the page in Chromium ---------------------------------------------------------------------


@dataclass
class Served:
    """An exported page on a local http server, and what Python makes of the thumbnail."""

    base: str  # http://127.0.0.1:PORT/page/
    paths: list[str]  # every path the server was asked for
    out: Path
    checkpoint: Any


class _Quiet(http.server.SimpleHTTPRequestHandler):
    log: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.log.append(self.path)
        super().do_GET()


@contextmanager
def _serve(learned: Any, site: Path) -> Iterator[Served]:
    """Export the page for ``learned``'s best epoch into ``site/page`` and serve ``site``."""
    _chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    found = _real_runtime()
    from slidesift.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(learned.best)
    out = export_web(checkpoint, site / "page", runtime=found.source)
    paths: list[str] = []
    handler = type("Handler", (_Quiet,), {"log": paths})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}/page/", paths, out, checkpoint)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(learned: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with _serve(learned, tmp_path_factory.mktemp("site")) as s:
        yield s


def _thumbnail(learned: Any, checkpoint: Any, folder: Path, longest: int | None = None) -> Path:
    """A test slide of the learned cohort read at the model's N (or ``longest``), as PNG."""
    from PIL import Image

    from slidesift.io.slide import open_slide, read_thumb

    entry = learned.test_entries[0]
    n = longest or checkpoint.downsample.to_dict()["longest"]
    with open_slide(entry.slide) as slide:
        thumb = read_thumb(slide, longest=n)
    path = folder / f"{Path(entry.slide).stem}_{n}.png"
    buf = io.BytesIO()
    Image.fromarray(thumb.pixels).save(buf, "PNG")
    path.write_bytes(_with_gamma(buf.getvalue()))
    return path


def _with_gamma(png: bytes, gamma: float = 1.0) -> bytes:
    """The PNG with a gAMA chunk after IHDR: a browser that colour-manages changes the pixels
    (Pillow, and so slidesift, reads the stored values)."""
    import struct
    import zlib

    body = b"gAMA" + struct.pack(">I", round(100000 / gamma))
    chunk = struct.pack(">I", 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:33] + chunk + png[33:]


def _python_view(png: Path, checkpoint: Any) -> dict[str, Any]:
    """Python's sift and fp32 ONNX probabilities on the pixels of ``png``."""
    from PIL import Image

    from slidesift.inference import OnnxTiles, classify_tiles
    from slidesift.segment import SegmentSpec

    pixels = np.asarray(Image.open(png).convert("RGB"))
    grid = TileGrid.from_stride(
        pixels.shape[:2], tile=checkpoint.tile, stride=SegmentSpec().stride_for(checkpoint.tile)
    )
    stats = measure_tiles(pixels, grid, checkpoint.sift)
    result = sift(stats, checkpoint.rails)
    flat = np.flatnonzero(result.keep.ravel())
    probs = np.zeros((len(grid), len(checkpoint.classes)), np.float32)
    probs[:, 0] = 1.0
    for idx, p in classify_tiles(OnnxTiles(checkpoint, threads=1), pixels,
                                 grid.th_xy()[flat], grid.tile):  # fmt: skip
        probs[flat[idx]] = p
    return {"grid": grid, "stats": stats, "sift": result, "probs": probs, "pixels": pixels}


class _Page:
    """One browser page on the served export, with its requests and problems logged."""

    def __init__(self, browser: Any, base: str) -> None:
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on(
            "console", lambda m: self.problems.append(m.text) if m.type == "error" else None
        )
        self.page.goto(base + "index.html")
        self.wait(("ready",), 30)

    def state(self) -> Any:
        return self.page.evaluate("() => window.slidesift")

    def wait(self, states: tuple[str, ...], seconds: float) -> dict[str, Any]:
        # polled from here: the page's CSP forbids the eval that wait_for_function needs
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            st = self.page.evaluate("() => window.slidesift && window.slidesift.state")
            if st in states:
                return dict(self.state())
            if st == "error":
                raise AssertionError(self.page.evaluate("() => window.slidesift.error"))
            time.sleep(0.1)
        raise AssertionError(f"the page did not reach {states} in {seconds} s")

    def segment(self, png: Path) -> dict[str, Any]:
        start = time.perf_counter()
        self.page.set_input_files("#file", str(png))
        time.sleep(0.2)
        result = self.wait(("done",), 600)
        result["wall_s"] = time.perf_counter() - start
        return result

    def mask(self) -> np.ndarray:
        import base64

        b64 = self.page.evaluate("() => window.slidesift.maskBase64()")
        g = self.page.evaluate("() => window.slidesift.grid")
        return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(g["h"], g["w"]).astype(bool)

    def drawn(self) -> np.ndarray:
        """The overlay canvas: where the page painted the mask."""
        alpha = self.page.evaluate("""() => {
            const c = document.getElementById('overlay');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data
              .filter((_, i) => i % 4 === 3));
        }""")
        g = self.page.evaluate("() => window.slidesift.grid")
        return np.asarray(alpha, np.uint8).reshape(g["h"], g["w"]) > 0

    def download(self, button: str) -> bytes:
        with self.page.expect_download() as info:
            self.page.click(button)
        return Path(info.value.path()).read_bytes()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.slow
def test_the_page_segments_as_python_in_chromium(served: Served, browser: Any, learned: Any,
                                                 tmp_path: Path) -> None:  # fmt: skip
    from PIL import Image

    png = _thumbnail(learned, served.checkpoint, tmp_path)
    py = _python_view(png, served.checkpoint)
    page = _Page(browser, served.base)
    loaded = len(page.requests)
    page.page.context.set_offline(True)  # once loaded, the page needs no network
    got = page.segment(png)
    page.page.context.set_offline(False)
    assert len(page.requests) == loaded
    grid = py["grid"]
    assert got["grid"] == {
        "h": grid.shape[0], "w": grid.shape[1], "tile": grid.tile, "stride": grid.stride,
        "nRows": grid.n_rows, "nCols": grid.n_cols,
    }  # fmt: skip
    # the sift: the same tiles, from bit-identical measurements
    keep = np.array(got["keep"], bool)
    assert keep.sum() > 100
    assert np.array_equal(keep, py["sift"].keep.ravel())
    assert np.array_equal(np.array(got["keepBackground"], bool), py["sift"].keep_background.ravel())
    assert np.array_equal(np.array(got["entropy"]), py["stats"].entropy.ravel())
    assert np.array_equal(np.array(got["background"]), py["stats"].background.ravel())
    # the network: labels as Python's fp32 ONNX on >= 99.5% of the kept tiles
    classes = served.checkpoint.classes
    probs = np.array(got["probs"], np.float32).reshape(len(grid), len(classes))
    labels = np.argmax(probs, 1)[keep]
    want = np.argmax(py["probs"], 1)[keep]
    agree = float((labels == want).mean())
    diff = float(np.abs(probs - py["probs"])[keep].max())
    print(f"\nweb page: {keep.sum()} kept tiles, labels agree on {agree:.2%}, max |dp| {diff:.1e};"
          f" timings {got['timings']}")  # fmt: skip
    assert agree >= 0.995
    assert diff < 1e-3  # the same tiles, not shifted ones (measured 5e-7)
    assert 0 < (labels > 0).sum() < keep.sum()  # both classes present: a swap would show
    # the mask: assemble()'s on the page's probabilities, and what the page drew
    expected = assemble(grid, py["sift"].keep, probs.reshape(*grid.grid_shape, -1), classes).mask
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(page.mask(), expected)
    assert np.array_equal(page.drawn(), expected)
    # the slider re-draws at another threshold without running the network again
    requests = len(page.requests)
    page.page.evaluate("""() => { const s = document.getElementById('threshold');
        s.value = '0.3'; s.dispatchEvent(new Event('input')); }""")
    lower = assemble(grid, py["sift"].keep, probs.reshape(*grid.grid_shape, -1), classes,
                     threshold=0.3).mask  # fmt: skip
    assert lower.sum() > expected.sum()
    assert np.array_equal(page.mask(), lower) and np.array_equal(page.drawn(), lower)
    assert np.array_equal(np.array(page.state()["probs"], np.float32), probs.ravel())
    assert len(page.requests) == requests
    # the downloads: PNG and GeoJSON of the drawn mask (thumbnail px: the PNG states no scale)
    mask_png = Image.open(io.BytesIO(page.download("#download-png")))
    assert mask_png.mode == "1" and np.array_equal(np.asarray(mask_png, bool), lower)
    collection = json.loads(page.download("#download-geojson"))
    painted = rasterize(parse_geojson(collection), (grid.shape[1], grid.shape[0]), (1.0, 1.0))
    assert np.array_equal(painted.astype(bool), lower)
    assert collection["features"][0]["properties"]["classification"]["name"] == "Tumor"
    assert collection["properties"]["slidesift"]["frame"] == "thumbnail px"
    # a thumbnail that states its downsample gets GeoJSON in level-0 px
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("slidesift", json.dumps({"scale": [3.0, 3.0]}))
    stated = tmp_path / "stated.png"
    Image.open(png).save(stated, pnginfo=info)
    page.segment(stated)
    assert "level-0 px" in page.page.inner_text("#frame-note")
    collection = json.loads(page.download("#download-geojson"))
    assert collection["properties"]["slidesift"]["frame"] == "level-0 px"
    painted = rasterize(parse_geojson(collection), (grid.shape[1], grid.shape[0]), (3.0, 3.0))
    assert np.array_equal(painted.astype(bool), page.mask())
    # nothing left the page's folder
    outside = [u for u in page.requests if not u.startswith((served.base, "blob:", "data:"))]
    assert not outside, outside
    assert served.paths and all(p.startswith("/page/") for p in served.paths), served.paths
    assert not page.problems, page.problems
    page.page.close()


@pytest.mark.slow
def test_the_page_time_for_a_1500_px_thumbnail(served: Served, browser: Any, learned: Any,
                                               tmp_path: Path) -> None:  # fmt: skip
    png = _thumbnail(learned, served.checkpoint, tmp_path, longest=1500)
    py = _python_view(png, served.checkpoint)
    page = _Page(browser, served.base)
    got = page.segment(png)
    keep = np.array(got["keep"], bool)
    assert np.array_equal(keep, py["sift"].keep.ravel())
    t = got["timings"]
    print(f"\nweb page, {got['grid']['w']} x {got['grid']['h']} px thumbnail: "
          f"{len(keep)} tiles, {keep.sum()} kept; total {t['total_ms'] / 1000:.1f} s "
          f"(read {t['read_ms']:.0f} ms, sift {t['sift_ms']:.0f} ms, runtime load "
          f"{t['load_ms']:.0f} ms, network {t['classify_ms'] / 1000:.1f} s, "
          f"assemble {t['assemble_ms']:.0f} ms)")  # fmt: skip
    assert re.search(r"1500 px", " ".join(got["warnings"]))  # not at the model's N: said so
    page.page.close()


@pytest.mark.slow
def test_a_three_class_page_marks_the_dominant_subtype(
    learned_subtypes: Any, browser: Any, tmp_path: Path
) -> None:
    with _serve(learned_subtypes, tmp_path / "site") as served:
        png = _thumbnail(learned_subtypes, served.checkpoint, tmp_path)
        py = _python_view(png, served.checkpoint)
        page = _Page(browser, served.base)
        got = page.segment(png)
        grid, classes = py["grid"], served.checkpoint.classes
        assert len(classes) == 3
        keep = np.array(got["keep"], bool)
        assert np.array_equal(keep, py["sift"].keep.ravel())
        probs = np.array(got["probs"], np.float32).reshape(len(grid), len(classes))
        agree = float((np.argmax(probs, 1) == np.argmax(py["probs"], 1))[keep].mean())
        print(f"\nthree-class page: labels agree on {agree:.2%} of {keep.sum()} kept tiles")
        assert agree >= 0.995
        want = assemble(grid, py["sift"].keep, probs.reshape(*grid.grid_shape, -1), classes)
        assert want.mode == "dominant" and want.dominant is not None and want.mask.any()
        assert got["counts"] == want.counts and got["dominant"] == want.dominant
        assert np.array_equal(page.mask(), want.mask)
        assert np.array_equal(page.drawn(), want.mask)
        assert page.page.is_disabled("#threshold")  # dominant takes no threshold
        assert not page.problems, page.problems
        page.page.close()


@pytest.mark.slow
@pytest.mark.learn
def test_a_t400_page_classifies_through_shared_feature_maps(browser: Any, tmp_path: Path) -> None:
    """Stride 80 (a multiple of 16): the page runs maps + head, as segment's dense path."""
    from PIL import Image

    from conftest import discriminative_checkpoint

    found = _real_runtime()
    checkpoint = discriminative_checkpoint(400, tmp_path)
    site = tmp_path / "site"
    out = export_web(checkpoint, site / "page", runtime=found.source)
    doc = json.loads((out / "model.json").read_text())
    assert doc["stride"] == 80 and doc["dense"]["maps"] == "maps.onnx" and doc["onnx"] is None
    assert (out / "head.onnx").is_file() and not (out / "model.onnx").exists()
    pixels, _ = he_like_image((1200, 1500), seed=3, tumor_fraction=0.4)
    png = tmp_path / "case.png"
    Image.fromarray(pixels).save(png)
    py = _python_view(png, checkpoint)
    paths: list[str] = []
    handler = type("Handler", (_Quiet,), {"log": paths})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = _Page(browser, f"http://127.0.0.1:{server.server_address[1]}/page/")
        got = page.segment(png)
    finally:
        server.shutdown()
        server.server_close()
    assert got["inference"] == "dense"
    keep = np.array(got["keep"], bool)
    assert keep.sum() > 50 and np.array_equal(keep, py["sift"].keep.ravel())
    probs = np.array(got["probs"], np.float32).reshape(-1, 2)
    diff = float(np.abs(probs - py["probs"])[keep].max())
    agree = float((probs.argmax(1) == py["probs"].argmax(1))[keep].mean())
    print(f"\nT = 400 page (dense): {keep.sum()} kept tiles, labels agree on {agree:.2%}, "
          f"max |dp| {diff:.1e}; network {got['timings']['classify_ms'] / 1000:.1f} s")  # fmt: skip
    assert agree >= 0.995 and diff < 1e-3
    assert 0 < (probs.argmax(1)[keep] > 0).sum() < keep.sum()
    grid = py["grid"]
    want = assemble(grid, py["sift"].keep, probs.reshape(*grid.grid_shape, -1), checkpoint.classes)
    assert np.array_equal(page.mask(), want.mask)
    assert all(p.startswith("/page/") for p in paths) and not page.problems, page.problems
    page.page.close()
