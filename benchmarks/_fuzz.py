"""Fuzz every reader: seed files, seeded cases, and child processes that read them.

Shared by ``benchmarks/bench_fuzz.py`` (2,000+ cases) and ``tests/test_fuzz.py`` (a sample).

- :func:`make_seeds` writes one or more valid files of each kind (:data:`KINDS`), generated here
  (phantom slides, polygons, a LightweightCNN checkpoint), never downloaded; real slides may be
  added.
- :func:`make_cases` draws seeded corruptions of them (:mod:`_fuzz_mutate`); the TIFF cuts at
  every IFD and tile offset of every slide seed come first, then random ones.
- :func:`run_cases` reads each damaged file with the user-facing reader of its kind
  (:func:`read_case`) in a pool of child processes, each case under a time limit, and sorts the
  outcome: ``ok``, ``error`` (a :class:`~slidesift.errors.SlidesiftError` naming the file),
  ``bad-error`` (any other exception, or one that does not name the file), ``hang`` (past the
  limit; the child is killed) or ``crash`` (the child died: a signal or an exit).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import random
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from _fuzz_mutate import mutate_json, mutate_safetensors, mutate_text, mutate_tiff, tiff_layout

__all__ = ["KINDS", "OUTCOMES", "Case", "Result", "make_cases", "make_seeds", "read_case",
           "run_cases", "table"]  # fmt: skip

#: Kinds of file fuzzed, with the suffix their cases are written under.
KINDS = {"tiff": ".svs", "asap": ".xml", "geojson": ".geojson", "manifest": ".csv",
         "checkpoint": ".safetensors", "rails": ".json"}  # fmt: skip
OUTCOMES = ("ok", "error", "bad-error", "hang", "crash")
#: Relative number of cases per kind (1 where not listed): slides have the most to parse.
SHARES = {"tiff": 2}
#: Seconds one case may take before it counts as a hang.
LIMIT_S = 20.0
#: Address space of a child (bytes): an allocation bomb fails there instead of on the machine.
CHILD_MEMORY = 6 << 30
#: The slide size annotations are read against (level-0 px) and its thumbnail.
SLIDE_SIZE, THUMB_SIZE = (1024, 768), (256, 192)

_MUTATORS: dict[str, Callable[..., tuple[str, bytes]]] = {
    "tiff": mutate_tiff, "asap": mutate_text, "geojson": mutate_json, "manifest": mutate_text,
    "checkpoint": mutate_safetensors, "rails": mutate_json,
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One damaged file: its kind, the seed file it came from and the corruption.

    The bytes are made again when asked for (:attr:`data`), from the seed file and either a
    cut offset or the mutator's own seed, so 2,000 cases of megabyte slides need no memory.
    """

    index: int
    kind: str
    seed: str
    op: str
    cut: int | None = None
    rng_seed: int | None = None
    raw: bytes | None = None

    @property
    def name(self) -> str:
        """The file name it is read under (unique per case)."""
        return f"case{self.index:05d}_{Path(self.seed).stem}{KINDS[self.kind]}"

    @property
    def data(self) -> bytes:
        """The damaged file's bytes."""
        if self.raw is not None:
            return self.raw
        source = _seed_bytes(self.seed)
        if self.cut is not None:
            return source[: self.cut]
        assert self.rng_seed is not None
        return _MUTATORS[self.kind](source, random.Random(self.rng_seed))[1]


@functools.lru_cache(maxsize=8)
def _seed_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class Result:
    """What reading one case gave: outcome, seconds, and the message (first 300 characters)."""

    case: Case
    outcome: str
    seconds: float
    detail: str = ""


def make_seeds(folder: Path, extra_slides: Sequence[Path] = ()) -> dict[str, list[Path]]:
    """Write valid files of every kind into ``folder`` (reused when there); returns them per kind.

    ``extra_slides`` (real SVS or TIFF files) are added to the TIFF seeds as they are.
    """
    import numpy as np

    from slidesift.io.annotations import Polygon, write_asap_xml
    from slidesift.io.geojson import polygons_to_geojson, write_geojson
    from slidesift.io.tiff import write_pyramidal_tiff
    from slidesift.phantom import he_like_image
    from slidesift.rails import Rails

    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, list[Path]] = {k: [] for k in KINDS}
    svs, tif = folder / "phantom.svs", folder / "generic.tif"
    if not svs.exists() or not tif.exists():
        pixels, _ = he_like_image((SLIDE_SIZE[1], SLIDE_SIZE[0]), seed=7, nucleus_px=5.0)
        write_pyramidal_tiff(svs, pixels, mpp=0.5, flavor="aperio", tile=256)
        write_pyramidal_tiff(tif, pixels[:640, :896], mpp=0.25, tile=128, quality=80)
    seeds["tiff"] += [svs, tif, *extra_slides]
    rect = np.array([[100.0, 80.0], [600.0, 80.0], [600.0, 500.0], [100.0, 500.0]])
    hole = np.array([[200.0, 150.0], [300.0, 150.0], [300.0, 250.0], [200.0, 250.0]])
    tri = np.array([[700.0, 100.0], [950.0, 120.0], [800.0, 600.0]])
    polys = [Polygon((rect,), 1, "_0"), Polygon((hole,), 0, "_2"), Polygon((tri,), 1, "_1")]
    seeds["asap"].append(write_asap_xml(folder / "lesions.xml", polys))
    with_hole = [Polygon((rect, hole), 1, "Tumor"), Polygon((tri,), 1, "Tumor")]
    seeds["geojson"].append(write_geojson(folder / "tumor.geojson", polygons_to_geojson(with_hole)))
    for sub in ("slides", "masks"):
        (folder / sub).mkdir(exist_ok=True)
    rows = ["slide,annotation,label,split,patient"]
    for i in range(4):
        (folder / "slides" / f"s{i}.svs").write_bytes(b"x")
        (folder / "masks" / f"s{i}.xml").write_bytes(b"x")
        rows.append(f"slides/s{i}.svs,masks/s{i}.xml,{'MSI-H' if i % 2 else 'MSI-L'},"
                    f"{'train' if i < 3 else 'test'},p{i}")  # fmt: skip
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    seeds["manifest"].append(manifest)
    rails = Rails(4.25, 7.5, "rgb", 96, 1234).save(folder / "rails.json")
    seeds["rails"].append(rails)
    ckpt = folder / "epoch_001.safetensors"
    if not ckpt.exists():
        _write_checkpoint(ckpt)
    seeds["checkpoint"].append(ckpt)
    return seeds


def _write_checkpoint(path: Path) -> None:
    """A LightweightCNN checkpoint for T = 96 with every metadata field a real one has."""
    import torch

    from slidesift.checkpoint import save_checkpoint
    from slidesift.model import LightweightCNN
    from slidesift.rails import Rails
    from slidesift.sift import SiftSpec

    torch.manual_seed(0)
    net = LightweightCNN(96, 2)
    meta = {
        "tile": 96, "longest": 1000, "mpp": None, "overlap": [0.5],
        "rails": Rails(4.0, 7.5, "rgb", 96, 10).to_dict(), "sift": SiftSpec().to_dict(),
        "classes": ["non-tumor", "tumor"], "normalization": None, "epoch": 1,
        "metrics": {"loss": 0.5, "accuracy": 0.75},
    }  # fmt: skip
    save_checkpoint(path, net.state_dict(), meta)


def make_cases(seeds: dict[str, list[Path]], count: int, seed: int) -> list[Case]:
    """``count`` cases over all kinds, the same for the same ``seed``.

    Each kind gets an equal share, TIFF twice that (:data:`SHARES`). Half the TIFF share is
    cuts: at every IFD offset of every TIFF seed, and at its tile offsets (a sample when there
    are more than fit); small samples may hold cuts only.
    """
    rng = random.Random(seed)
    raw = {k: [(p, _seed_bytes(str(p))) for p in paths] for k, paths in seeds.items()}
    shares = {k: SHARES.get(k, 1) for k in KINDS}
    total = sum(shares.values())
    per_kind = {k: count * n // total for k, n in shares.items()}
    per_kind["tiff"] += count - sum(per_kind.values())
    cases: list[Case] = []
    for kind in KINDS:
        made: list[Case] = []
        if kind == "tiff":
            ifd_cuts, tile_cuts = [], []
            for p, data in raw[kind]:
                lay = tiff_layout(data)
                ifd_cuts += [Case(0, kind, str(p), "cut-ifd", cut=at) for at in lay.ifds]
                tile_cuts += [Case(0, kind, str(p), "cut-tile", cut=off) for off, _ in lay.tiles]
            room = max(0, per_kind[kind] // 2 - len(ifd_cuts))
            if len(tile_cuts) > room:
                tile_cuts = rng.sample(tile_cuts, room)
            made += (ifd_cuts + tile_cuts)[: per_kind[kind]]
        while len(made) < per_kind[kind]:
            p, data = rng.choice(raw[kind])
            rng_seed = rng.getrandbits(64)
            op, _ = _MUTATORS[kind](data, random.Random(rng_seed))
            made.append(Case(0, kind, str(p), op, rng_seed=rng_seed))
        cases += made
    return [dataclasses.replace(c, index=i) for i, c in enumerate(cases)]


def read_case(kind: str, path: Path) -> str:
    """Read ``path`` as slidesift reads a file of ``kind``; a short summary of what came back.

    TIFF: :func:`~slidesift.io.slide.open_slide`, a 256-px thumbnail and a 128-px region at
    level 0's centre. Annotations: rasterized onto a 256 x 192 thumbnail of a 1024 x 768 slide.
    Checkpoints: loaded, every metadata property read and the network built.
    """
    import numpy as np

    if kind == "tiff":
        from slidesift.io.slide import open_slide, read_thumb

        with open_slide(path) as slide:
            thumb = read_thumb(slide, longest=256, workers=1)
            w, h = slide.dimensions
            slide.read_region(0, (w // 2, h // 2), (128, 128))
            return f"{slide.format} {slide.level_count} levels, thumb {thumb.size}"
    if kind in ("asap", "geojson"):
        from slidesift.io.annotations import read_truth
        from slidesift.io.slide import Thumb

        (tw, th), (w, h) = THUMB_SIZE, SLIDE_SIZE
        thumb = Thumb(np.zeros((th, tw, 3), np.uint8), (w, h), (w / tw, h / th), 0, None, "x")
        return f"{int(read_truth(path, thumb).sum())} tumor px"
    if kind == "manifest":
        from slidesift.manifest import read_manifest

        return f"{len(read_manifest(path))} slides"
    if kind == "checkpoint":
        from slidesift.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        ckpt.model()
        return f"T={ckpt.tile} {ckpt.classes} {ckpt.rails} epoch {ckpt.epoch}"
    if kind == "rails":
        from slidesift.rails import Rails

        return str(Rails.load(path))
    raise ValueError(kind)


def classify(exc: BaseException, path: Path) -> tuple[str, str]:
    """``(outcome, detail)`` of a reader's exception: ``error`` only for a SlidesiftError that
    names the file."""
    from slidesift.errors import SlidesiftError

    text = str(exc)
    if isinstance(exc, SlidesiftError) and path.name in text:
        return "error", f"{type(exc).__name__}: {text}"[:300]
    where = "".join(traceback.format_tb(exc.__traceback__)[-2:]).strip().replace("\n", " | ")
    return "bad-error", f"{type(exc).__name__}: {text[:200]} @ {where[-300:]}"


def _child(conn: Connection) -> None:
    """A worker: read ``(kind, path)`` pairs from ``conn``, answer ``(outcome, detail)``."""
    import logging
    import warnings

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)  # tifffile logs every damaged tag it meets
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["SLIDESIFT_SLIDE_PROBE"] = "1"  # slides are opened as users open them
    while True:
        job = conn.recv()
        if job is None:
            return
        kind, path = job
        try:
            answer = ("ok", read_case(kind, Path(path))[:300])
        except BaseException as exc:  # every exception is an outcome here
            answer = classify(exc, Path(path))
        conn.send(answer)


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(theirs,), daemon=True)
        self.proc.start()
        theirs.close()
        self.case: Case | None = None
        self.path: Path | None = None
        self.started = 0.0

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


def run_cases(
    cases: Sequence[Case],
    folder: Path,
    *,
    workers: int = 2,
    limit_s: float = LIMIT_S,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Read every case in a pool of ``workers`` child processes; results in case order.

    Each case's bytes are written to ``folder`` (where the manifest seed's slides lie) under
    :attr:`Case.name` just before it is read and removed after. A child that dies is counted
    as a ``crash`` (its exit code or signal in the detail) and replaced; a case past
    ``limit_s`` is a ``hang`` and its child is killed and replaced.
    """
    ctx = multiprocessing.get_context("spawn")
    todo = list(cases)[::-1]
    pool = [_Worker(ctx) for _ in range(max(1, min(workers, len(todo))))]
    results: dict[int, Result] = {}

    def finish(w: _Worker, outcome: str, detail: str) -> None:
        assert w.case is not None and w.path is not None
        r = Result(w.case, outcome, time.perf_counter() - w.started, detail)
        results[w.case.index] = r
        w.path.unlink(missing_ok=True)
        w.case = w.path = None
        if on_result is not None:
            on_result(r)

    try:
        while todo or any(w.case for w in pool):
            for w in pool:
                if w.case is None and todo:
                    w.case = todo.pop()
                    w.path = folder / w.case.name
                    w.path.write_bytes(w.case.data)
                    w.started = time.perf_counter()
                    w.conn.send((w.case.kind, str(w.path)))
            busy = [w for w in pool if w.case is not None]
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.5)
            for i, w in enumerate(pool):
                if w.case is None:
                    continue
                if w.conn in ready and w.conn.poll():
                    try:
                        finish(w, *w.conn.recv())
                        continue
                    except (EOFError, OSError):
                        pass
                if w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join()
                    code = w.proc.exitcode
                    why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                    finish(w, "crash", f"the reader process died ({why})")
                    w.stop()
                    pool[i] = _Worker(ctx)
                elif time.perf_counter() - w.started > limit_s:
                    finish(w, "hang", f"no answer after {limit_s:.0f} s")
                    w.stop()
                    pool[i] = _Worker(ctx)
    finally:
        for w in pool:
            if w.proc.is_alive() and w.case is None:
                w.conn.send(None)
            w.stop()
    return [results[c.index] for c in cases]


def table(results: Sequence[Result]) -> list[list[Any]]:
    """Rows ``[kind, cases, ok, error, bad-error, hang, crash, slowest s]`` and a total row."""
    rows: list[list[Any]] = []
    for kind in [*KINDS, "all"]:
        mine = [r for r in results if kind in (r.case.kind, "all")]
        n = Counter(r.outcome for r in mine)
        slowest = max((r.seconds for r in mine), default=0.0)
        rows.append([kind, len(mine), *(n[o] for o in OUTCOMES), round(slowest, 2)])
    return rows
