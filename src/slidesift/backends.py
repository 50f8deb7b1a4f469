"""Dense classification backends on the CPU, and a probe that picks the fastest accurate one.

Backends (all dense: the conv trunk once over the thumbnail, the head per tile):

- ``dense``: float32 ONNX Runtime (:class:`slidesift.inference.DenseOnnx`), the reference;
- ``int8``: the int8 trunk and head (:mod:`slidesift.quantize`);
- ``bf16``: the float32 trunk in bfloat16 through torch's oneDNN kernels (AVX-512 BF16 or AMX
  where the CPU has them; emulated, and slow, where it does not), the head in float32.

The probe (:func:`probe`) runs each backend on :data:`GATE_SEEDS`' phantom thumbnails (drawn at
the model's scale, other seeds than the int8 calibration's) as segmentation would: the
checkpoint's sift and rails, the default grid rounded to a stride of 16, the default
assembly. A backend passes the gates when its tile labels (argmax) agree with ``dense`` on at
least :data:`AGREEMENT_GATE` of the kept tiles and its masks have a Jaccard index of at least
:data:`JACCARD_GATE` with ``dense``'s (pooled over the thumbnails: all intersections over all
unions). The choice is the fastest backend that passes (by kept tiles per second, best of
:data:`ROUNDS` interleaved rounds), and ``dense`` unless another is :data:`SPEED_MARGIN`
faster. The gates are about the checkpoint's outputs, so they need a model that has learned
something; on thumbnails where the model hesitates (many tiles near 0.5) they are strict.

The result is cached per machine and checkpoint as JSON under the cache folder::

    probe/<machine key digest>-<checkpoint digest>.json

The machine key (:func:`machine_key`) is the CPU model and its AVX-512/AMX flags, the core
count, the threads, the ONNX Runtime, torch and slidesift versions: a change in any of them
probes again. ``SLIDESIFT_PROBE=0`` turns probing off (``inference="auto"`` is then ``dense``);
the test suite does so, to compare against the fp32 reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.assemble import assemble
from slidesift.cache import default_cache_dir
from slidesift.checkpoint import Checkpoint
from slidesift.errors import ConfigError
from slidesift.inference import DENSE_STEP, DenseOnnx, _ort
from slidesift.io.atomic import atomic_write_text
from slidesift.onnx_cache import checkpoint_digest as _digest
from slidesift.quantize import int8_dense, phantom_thumbnails
from slidesift.sift import measure_tiles, sift
from slidesift.tiles import TileGrid, stride_for_overlap
from slidesift.torch_inference import TorchMaps

__all__ = [
    "AGREEMENT_GATE",
    "BACKENDS",
    "GATE_SEEDS",
    "JACCARD_GATE",
    "Bf16Maps",
    "Probe",
    "Verdict",
    "build_backend",
    "gate_thumbnails",
    "jaccard",
    "machine_key",
    "probe",
    "probing_enabled",
]

#: The dense backends; ``dense`` (float32) is the reference the others are gated against.
BACKENDS = ("dense", "int8", "bf16")
#: Share of kept tiles whose label must equal ``dense``'s.
AGREEMENT_GATE = 0.995
#: Smallest Jaccard index of a backend's masks with ``dense``'s, pooled over the thumbnails.
JACCARD_GATE = 0.99
#: Seeds of the gate thumbnails (PAIP-like and CAMELYON-like in turn; not the calibration
#: seeds). Six, not two: on the five epochs of a learned model (Intel Xeon, AMX) two
#: thumbnails (1,400 kept tiles) let int8 through on an epoch whose held-out slides then
#: changed 1.2% of their labels (mask Jaccard 0.982); with six (5,300 tiles) the probe's
#: verdict matched the held-out gates on every epoch. The probe runs once per machine and
#: checkpoint (cached).
GATE_SEEDS = (9201, 9202, 9203, 9204, 9205, 9206)
#: Timed rounds per backend (the best is kept; rounds interleave the backends).
ROUNDS = 2
#: How much faster than ``dense`` another backend must be to be chosen.
SPEED_MARGIN = 1.05
#: Fewer kept tiles than this on the gate thumbnails: gate on every tissue tile instead (the
#: rails of a model trained on other slides may admit little phantom tissue).
MIN_GATE_TILES = 50
#: Bumped when the probe measures differently (part of the machine key).
PROBE_VERSION = 3
_ISA = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")

#: Builds a dense classifier: ``(checkpoint, threads, cache_dir) -> DenseOnnx``.
Factory = Callable[[Checkpoint, "int | None", "Path | None"], DenseOnnx]


class Bf16Maps(TorchMaps):
    """The float32 ``maps`` trunk (BatchNorms folded) in bfloat16 through torch (oneDNN) on
    the CPU: :class:`slidesift.torch_inference.TorchMaps` with ``precision="bf16"``.

    Parameters
    ----------
    checkpoint
        The model.
    threads
        torch intra-op threads (process-wide); ``None`` leaves torch's setting.
    """

    def __init__(self, checkpoint: Checkpoint, *, threads: int | None = None) -> None:
        super().__init__(checkpoint, device="cpu", precision="bf16", threads=threads)


def build_backend(
    kind: str,
    checkpoint: Checkpoint,
    *,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DenseOnnx:
    """A dense classifier of ``kind`` (one of :data:`BACKENDS`).

    Raises
    ------
    ConfigError
        An unknown kind.
    """
    if kind == "dense":
        return DenseOnnx(checkpoint, threads=threads)
    if kind == "int8":
        return int8_dense(checkpoint, threads=threads, cache_dir=cache_dir)
    if kind == "bf16":
        maps = Bf16Maps(checkpoint, threads=threads)
        return DenseOnnx(checkpoint, threads=threads, maps=maps, name="torch dense bf16")
    raise ConfigError("backend", kind, " | ".join(BACKENDS))


def probing_enabled() -> bool:
    """False when ``SLIDESIFT_PROBE`` is ``0``, ``off``, ``no`` or ``false``."""
    return os.environ.get("SLIDESIFT_PROBE", "1").strip().lower() not in ("0", "off", "no", "false")


def _cpu() -> tuple[str, list[str]]:
    model, flags = "unknown CPU", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        import platform

        model = platform.processor() or platform.machine() or model
    return model, [f for f in _ISA if f in flags]


def machine_key(threads: int | None = None) -> dict[str, Any]:
    """What the probe's answer depends on besides the checkpoint.

    Returns
    -------
    dict
        ``cpu`` (model name), ``isa`` (its AVX-512 / VNNI / BF16 / AMX flags), ``cores``,
        ``threads``, ``onnxruntime``, ``torch`` (``None`` without it), ``slidesift``,
        ``probe`` (:data:`PROBE_VERSION`).
    """
    from importlib.metadata import PackageNotFoundError, version

    from slidesift._version import __version__

    onnxruntime = _ort()  # telemetry off

    try:  # the installed version, without importing torch (seconds) just to read it
        torch_version: str | None = version("torch")
    except PackageNotFoundError:
        torch_version = None
    cpu, isa = _cpu()
    cores = os.cpu_count() or 1
    return {
        "cpu": cpu, "isa": isa, "cores": cores, "threads": threads or cores,
        "onnxruntime": str(onnxruntime.__version__), "torch": torch_version,
        "slidesift": __version__, "probe": PROBE_VERSION,
    }  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """One backend's showing in the probe.

    Attributes
    ----------
    backend
        Its name in :data:`BACKENDS` (or the injected candidate's).
    tiles_per_s
        Kept tiles classified per second (best round); 0 when it failed to run.
    agreement
        Share of kept tiles whose label equals ``dense``'s.
    jaccard
        Jaccard index of its masks with ``dense``'s, pooled over the gate thumbnails.
    passed
        Both gates met.
    note
        Why it failed, or what it ran on.
    """

    backend: str
    tiles_per_s: float
    agreement: float
    jaccard: float
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class Probe:
    """The probe's answer for one checkpoint on this machine.

    Attributes
    ----------
    choice
        The backend ``inference="auto"`` uses.
    verdicts
        Every backend tried, by name.
    key
        :func:`machine_key` it was measured under.
    checkpoint
        The checkpoint's digest.
    path
        The cache file.
    cached
        Read from the cache (not measured by this call).
    tiles
        Kept tiles of the gate thumbnails the gates were checked on.
    """

    choice: str
    verdicts: dict[str, Verdict]
    key: dict[str, Any]
    checkpoint: str
    path: Path
    cached: bool
    tiles: int


def gate_thumbnails(checkpoint: Checkpoint) -> list[NDArray[np.uint8]]:
    """The probe's phantom thumbnails, ``(max(4 T, 1024), max(5 T, 1280), 3)`` uint8 each:
    :func:`slidesift.quantize.phantom_thumbnails` of :data:`GATE_SEEDS`, without artifacts,
    rendered 3x finer and area-averaged down as a slide read at N (what the model sees)."""
    t = checkpoint.tile
    shape = (max(4 * t, 1024), max(5 * t, 1280))
    return phantom_thumbnails(checkpoint, GATE_SEEDS, shape, artifacts=0.0, finer=3)


@dataclass
class _Case:
    """One gate thumbnail: pixels, grid, kept tiles."""

    pixels: NDArray[np.uint8]
    grid: TileGrid
    keep: NDArray[np.bool_]


def _cases(checkpoint: Checkpoint, threads: int | None) -> tuple[list[_Case], str]:
    t = checkpoint.tile
    stride = max(DENSE_STEP, DENSE_STEP * round(stride_for_overlap(t, 0.8) / DENSE_STEP))
    cases, sifted = [], []
    workers = threads or os.cpu_count() or 1
    for pixels in gate_thumbnails(checkpoint):
        grid = TileGrid.from_stride(pixels.shape[:2], tile=t, stride=stride)
        s = sift(measure_tiles(pixels, grid, checkpoint.sift, workers=workers), checkpoint.rails)
        cases.append(_Case(pixels, grid, s.keep))
        sifted.append(s)
    if sum(int(c.keep.sum()) for c in cases) >= MIN_GATE_TILES:
        return cases, "rails"
    for c, s in zip(cases, sifted, strict=True):
        c.keep = s.keep_background
    return cases, "every tissue tile (the rails admit too few phantom tiles)"


def _classify(net: DenseOnnx, case: _Case, n_classes: int) -> NDArray[np.float32]:
    """``(n_rows, n_cols, C)`` probabilities, ``[1, 0, ...]`` where not kept."""
    probs = np.zeros((*case.grid.grid_shape, n_classes), np.float32)
    probs[..., 0] = 1.0
    flat = np.flatnonzero(case.keep.ravel())
    if flat.size:
        out = probs.reshape(-1, n_classes)
        for idx, p in net.classify(case.pixels, case.grid.th_xy()[flat], case.grid.stride):
            out[flat[idx]] = p
    return probs


def jaccard(a: Sequence[NDArray[np.bool_]], b: Sequence[NDArray[np.bool_]]) -> float:
    """Jaccard index of two sets of masks, pooled: all intersections over all unions (1 when
    both are empty)."""
    inter = sum(int((x & y).sum()) for x, y in zip(a, b, strict=True))
    union = sum(int((x | y).sum()) for x, y in zip(a, b, strict=True))
    return 1.0 if union == 0 else inter / union


def _measure(
    checkpoint: Checkpoint,
    factories: Mapping[str, Factory],
    threads: int | None,
    cache_dir: Path,
) -> tuple[str, dict[str, Verdict], int]:
    cases, source = _cases(checkpoint, threads)
    classes = checkpoint.classes
    n_kept = sum(int(c.keep.sum()) for c in cases)
    nets: dict[str, DenseOnnx] = {}
    probs: dict[str, list[NDArray[np.float32]]] = {}
    errors: dict[str, str] = {}
    for name, factory in factories.items():
        try:
            nets[name] = factory(checkpoint, threads, cache_dir)
            probs[name] = [_classify(nets[name], c, len(classes)) for c in cases]  # warm-up too
        except Exception as exc:  # a backend that cannot run here is not chosen
            nets.pop(name, None)
            errors[name] = f"{type(exc).__name__}: {exc}"
    best = {name: float("inf") for name in nets}
    for _ in range(ROUNDS):
        for name, net in nets.items():
            start = time.perf_counter()
            for c in cases:
                _classify(net, c, len(classes))
            best[name] = min(best[name], time.perf_counter() - start)
    ref = probs["dense"]
    ref_masks = [assemble(c.grid, c.keep, p, classes).mask for c, p in zip(cases, ref, strict=True)]
    verdicts: dict[str, Verdict] = {}
    for name in factories:
        if name not in nets:
            verdicts[name] = Verdict(name, 0.0, 0.0, 0.0, False, errors[name])
            continue
        same = sum(int((p[c.keep].argmax(1) == r[c.keep].argmax(1)).sum())
                   for c, p, r in zip(cases, probs[name], ref, strict=True))  # fmt: skip
        pairs = zip(cases, probs[name], strict=True)
        jac = jaccard([assemble(c.grid, c.keep, p, classes).mask for c, p in pairs], ref_masks)
        agreement = same / n_kept if n_kept else 1.0
        passed = agreement >= AGREEMENT_GATE and jac >= JACCARD_GATE
        note = f"gated on {n_kept} tiles ({source})"
        if not passed:
            note = f"failed the gates (agreement >= {AGREEMENT_GATE}, Jaccard >= {JACCARD_GATE})"
        rate = n_kept / best[name] if best[name] > 0 else 0.0
        verdicts[name] = Verdict(name, rate, agreement, jac, passed, note)
    floor = verdicts["dense"].tiles_per_s * SPEED_MARGIN
    faster = [v for v in verdicts.values() if v.passed and v.backend != "dense"
              and v.tiles_per_s > floor]  # fmt: skip
    choice = max(faster, key=lambda v: v.tiles_per_s).backend if faster else "dense"
    return choice, verdicts, n_kept


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX), so a cohort's workers probe once, not at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the workers may each probe
        yield
        return
    try:  # the lock file stays empty: nothing is written to it
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:  # a full, read-only or foreign cache folder: no lock; each worker may probe
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(path: Path, key: dict[str, Any], digest: str) -> Probe | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["key"] != key or doc["checkpoint"] != digest:
            return None
        verdicts = {k: Verdict(**v) for k, v in doc["verdicts"].items()}
        return Probe(doc["choice"], verdicts, key, digest, path, True, int(doc["tiles"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _default_factories() -> dict[str, Factory]:
    def make(kind: str) -> Factory:
        return lambda ck, threads, cache: build_backend(kind, ck, threads=threads, cache_dir=cache)

    return {kind: make(kind) for kind in BACKENDS}


def probe(
    checkpoint: Checkpoint,
    *,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    candidates: Mapping[str, Factory] | None = None,
    refresh: bool = False,
) -> Probe:
    """The fastest backend that passes the accuracy gates for ``checkpoint`` on this machine.

    Parameters
    ----------
    checkpoint
        The model (the gates are about its outputs: a model that has learned something).
    threads
        Threads the backends run with (part of the machine key).
    cache_dir
        The cache folder; default :func:`slidesift.cache.default_cache_dir`.
    candidates
        Backends to try besides ``dense`` (name -> factory); default ``int8`` and ``bf16``.
    refresh
        Measure again even when the cache has an answer.

    Returns
    -------
    Probe
        Read from ``probe/<key digest>-<checkpoint digest>.json`` when present and its key
        matches, else measured (a few seconds to a minute) and written there.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = machine_key(threads)
    digest = _digest(checkpoint)
    factories = _default_factories()
    if candidates is not None:
        factories = {"dense": factories["dense"], **candidates}
        key = {**key, "candidates": sorted(candidates)}
    stamp = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    path = root / "probe" / f"{stamp}-{digest}.json"
    if not refresh and (known := _read(path, key, digest)) is not None:
        return known
    with _locked(path.with_suffix(".lock")):
        if not refresh and (known := _read(path, key, digest)) is not None:
            return known  # another process probed while this one waited
        choice, verdicts, tiles = _measure(checkpoint, factories, threads, root)
        doc = {"key": key, "checkpoint": digest, "choice": choice, "tiles": tiles,
               "verdicts": {k: asdict(v) for k, v in verdicts.items()},
               "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return Probe(choice, verdicts, key, digest, path, False, tiles)
