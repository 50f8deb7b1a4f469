"""Tiny fixtures built on the fly: pyramidal TIFFs, masks, ASAP XML with known areas.

Real slides come from ../shared/data (beside the repository); tests that need them skip with a
clear reason when the folder is absent, as on a user's fresh clone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slidesift.io.annotations import Polygon, write_asap_xml
from slidesift.io.tiff import write_pyramidal_tiff
from slidesift.phantom import he_like_image

REPO = Path(__file__).resolve().parents[1]

# `inference="auto"` asks the backend probe (slidesift.backends) which dense backend to run on
# this machine. The suite compares against the fp32 reference and must not write the probe's
# answers to the user's cache, so probing is off here; tests of the probe pass probe=True and a
# cache folder of their own.
os.environ.setdefault("SLIDESIFT_PROBE", "0")
# Opening a slide first in a child process (slidesift.io.slide_probe) guards against crashes in
# C on hostile files; the suite's slides are its own, so that child (0.5 s a file) is off here.
# tests/test_fuzz.py turns it on (probe=True, and in the fuzz children).
os.environ.setdefault("SLIDESIFT_SLIDE_PROBE", "0")
SHARED_DATA = Path(os.environ.get("SLIDESIFT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test saying where it was looked for."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (set SLIDESIFT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def cmu1_svs() -> Path:
    """Real Aperio SVS, one level, 2220 x 2967, 0.499 um/px."""
    return shared_file("cmu1_small_region/CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def tcga_svs() -> Path:
    """Real TCGA SVS, two levels, JPEG 2000 tiles, no MPP."""
    return shared_file("tcga_cr_7395_small_svs/tcga-cr-7395-01a-01-ts1.svs")


@pytest.fixture(scope="session")
def dicom_wsi() -> Path:
    """Real DICOM WSI that OpenSlide refuses."""
    return shared_file("tcga_xk_aaju_dicom/TCGA-XK-AAJU-01A-01-TS1_small.dcm")


def shoelace(ring: np.ndarray) -> float:
    """Area of a simple polygon ``(n, 2)``."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass(frozen=True)
class CamelyonLike:
    """A pyramidal generic TIFF with ASAP XML whose tumor area is known exactly."""

    slide: Path
    xml: Path
    l0_size: tuple[int, int]
    tumor_area_l0: float
    polygons: list[Polygon]


@pytest.fixture(scope="session")
def camelyon_like(tmp_path_factory: pytest.TempPathFactory) -> CamelyonLike:
    """4096 x 3072 pyramidal JPEG TIFF, 0.25 um/px, with an ASAP XML of known area.

    Tumor: a rectangle (group ``_0``) with a square exclusion (``_2``) inside it, a triangle
    (``_1``) and a 40-gon approximating a circle (``_0``).
    """
    root = tmp_path_factory.mktemp("camelyon")
    w, h = 4096, 3072
    pixels, _ = he_like_image((h, w), seed=3, nucleus_px=6.0)
    slide = write_pyramidal_tiff(root / "node.tif", pixels, mpp=0.25)
    rect = np.array([[400.0, 300.0], [1600.0, 300.0], [1600.0, 1100.0], [400.0, 1100.0]])
    hole = np.array([[800.0, 500.0], [1000.0, 500.0], [1000.0, 700.0], [800.0, 700.0]])
    tri = np.array([[2500.0, 400.0], [3700.0, 400.0], [3100.0, 1400.0]])
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    circle = np.column_stack([2000 + 500 * np.cos(angles), 2200 + 500 * np.sin(angles)])
    polys = [
        Polygon((rect,), 1, "_0"),
        Polygon((hole,), 0, "_2"),
        Polygon((tri,), 1, "_1"),
        Polygon((circle,), 1, "_0"),
    ]
    xml = write_asap_xml(root / "node.xml", polys, group_of={1: "_0", 0: "_2"})
    area = shoelace(rect) - shoelace(hole) + shoelace(tri) + shoelace(circle)
    return CamelyonLike(slide, xml, (w, h), area, polys)


@dataclass(frozen=True)
class PaipLike:
    """An SVS-like slide with a level-0 TIFF mask and a downsampled PNG mask."""

    slide: Path
    mask_tif: Path
    mask_png: Path
    tumor: np.ndarray  # (H, W) bool at level 0


@pytest.fixture(scope="session")
def paip_like(tmp_path_factory: pytest.TempPathFactory) -> PaipLike:
    """3000 x 2400 Aperio-flavoured pyramidal TIFF (.svs) with level-0 and 1/4 masks."""
    import cv2

    root = tmp_path_factory.mktemp("paip")
    pixels, tumor = he_like_image((2400, 3000), seed=5, nucleus_px=5.0)
    slide = write_pyramidal_tiff(root / "case.svs", pixels, mpp=0.5, flavor="aperio")
    mask_tif = write_pyramidal_tiff(
        root / "case_mask.tif", tumor.astype(np.uint8), compression="deflate", nearest=True,
        max_levels=1,
    )  # fmt: skip
    small = tumor[2::4, 2::4].astype(np.uint8) * 255
    mask_png = root / "case_mask.png"
    cv2.imwrite(str(mask_png), small)
    return PaipLike(slide, mask_tif, mask_png, tumor)


def _torch_missing() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


#: Fixtures that train or build a model (they need torch, the 'learn' extra).
TORCH_FIXTURES = frozenset({"learned", "learned_subtypes"})
NO_TORCH = "needs torch, the 'learn' extra: pip install 'slidesift[learn]'"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without torch, skip (with the reason) every test marked ``learn`` or using a model."""
    if not _torch_missing():
        return
    skip = pytest.mark.skip(reason=NO_TORCH)
    for item in items:
        if item.get_closest_marker("learn") or TORCH_FIXTURES & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, fresh for each test."""
    return np.random.default_rng(12345)


# CI runs the same examples every time (a red build must be reproducible); locally hypothesis
# explores new ones on each run.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A four-slide PAIP-like phantom cohort (two subtypes, 2 train + 2 test); its manifest."""
    from slidesift.phantom.cohort import CohortSpec, make_cohort

    root = tmp_path_factory.mktemp("tiny_cohort")
    make_cohort(CohortSpec(count=4, longest=(2200, 2400), subtypes=2, seed=3, artifacts=0.0), root)
    return root / "manifest.csv"


# --- models that learn ------------------------------------------------------------------------
#
# Quality tests need a model whose masks are good enough that a broken method shows: a planted
# bug (swapped probability columns, inverted labels, a shifted feature crop, ...) must drop its
# scores below the thresholds the tests assert. The phantom cohorts below are small enough to
# train in seconds on two cores and large enough for the CNN to learn the tumor texture: 1 um/px
# slides of about 3000 px, read at N = 1000 (3 um/px), T = 96, tiles cut raw (as segmentation
# sees them), Adam at 5e-4. Each model is trained once per test session.

#: The binary model's geometry and training; the quality thresholds in the tests were set from
#: what it measured (see tests/test_quality.py).
LEARN_N, LEARN_T, LEARN_EPOCHS, LEARN_LR = 1000, 96, 5, 5e-4
#: HED stain jitter of the binary model's training tiles. Without it the run depended on the
#: float order of its arithmetic: on an AMD EPYC the same seed trained on 2 threads gave test
#: Jaccards of 0.60-0.77 in epochs 2-5, on 1 thread 0.00 on one test slide in epochs 3-4 and
#: 0.26 in the epoch chosen (its hold-out balanced accuracy, pooled over both test slides'
#: tiles, was 0.93: the other slide carried it). The phantom slides differ in stain, and
#: without jitter the model swung between them from epoch to epoch. With jitter 0.05 epochs
#: 2-5 scored 0.61-0.79 on both slides with 1 thread and with 2.
LEARN_HED = 0.05
# Three classes learn slower: after 5 epochs the model trained on an Intel Xeon (AMX) was at
# 0.84 balanced accuracy on the validation slides and its epochs 3-5 called a solid test slide
# glandular; after 8 it was at 0.90 (0.8 s an epoch).
LEARN_EPOCHS_SUBTYPES = 8


@dataclass(frozen=True)
class Learned:
    """A phantom cohort and a model trained on it.

    Attributes
    ----------
    manifest
        The cohort's manifest (4 train, 2 test slides).
    run
        The training run folder (a checkpoint per epoch, log.csv).
    best
        The epoch with the best held-out raw-tile balanced accuracy (log.csv).
    """

    manifest: Path
    run: Path
    best: Path

    @property
    def test_entries(self) -> list[Any]:
        from slidesift.manifest import read_manifest

        return read_manifest(self.manifest).split("test")


def _source_digest(*parts: object) -> str:
    """Digest of slidesift's source, the library versions and ``parts``: a model trained by
    this code on this machine. Any change to ``src/`` (a planted bug included) retrains."""
    import hashlib
    import platform

    import torch

    h = hashlib.blake2b(digest_size=12)
    for path in sorted((REPO / "src" / "slidesift").rglob("*.py")):
        h.update(path.relative_to(REPO).as_posix().encode())
        h.update(path.read_bytes())
    h.update(repr((torch.__version__, np.__version__, platform.machine(), parts)).encode())
    return h.hexdigest()


def _learn(name: str, cohort: Any, classes: str, epochs: int, hed: float = 0.0) -> Learned:
    """Make the cohort and train once; reused from ``.cache/test-models`` while the source, the
    libraries and these arguments are unchanged (``SLIDESIFT_TEST_RETRAIN=1`` trains anew)."""
    import csv as _csv
    import fcntl

    pytest.importorskip("torch", reason=NO_TORCH)
    args = (cohort, classes, epochs, LEARN_N, LEARN_T, LEARN_LR, hed)
    root = REPO / ".cache" / "test-models" / f"{name}-{_source_digest(*args)}"
    root.parent.mkdir(parents=True, exist_ok=True)
    # one trainer at a time (pytest-xdist workers, or two pytest runs in this checkout): the
    # others wait, then reuse its model rather than train the same one and delete each other's
    with (root.parent / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _train_once(root, name, cohort, classes, epochs, hed)
    run = root / "run"
    rows = list(_csv.DictReader((run / "log.csv").open()))
    best = max(rows, key=lambda r: (float(r["holdout_raw_balanced_accuracy"]), -int(r["epoch"])))
    manifest = root / "cohort" / "manifest.csv"
    return Learned(manifest, run, run / f"epoch_{int(best['epoch']):03d}.safetensors")


def _train_once(
    root: Path, name: str, cohort: Any, classes: str, epochs: int, hed: float = 0.0
) -> None:
    """Make the cohort and train into ``root`` unless a finished model is there."""
    import shutil
    import tempfile

    from slidesift.augment import AugmentSpec
    from slidesift.cache import ThumbCache
    from slidesift.phantom.cohort import make_cohort
    from slidesift.prepare import prepare_tilesets
    from slidesift.tileset import TileSetSpec
    from slidesift.train import train
    from slidesift.train_spec import TrainSpec

    if not (root / "done").exists() or os.environ.get("SLIDESIFT_TEST_RETRAIN"):
        work = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{name}-"))
        make_cohort(cohort, work / "cohort")
        spec = TileSetSpec(
            tile=LEARN_T,
            longest=LEARN_N,
            classes=classes,
            source="raw",  # type: ignore[arg-type]
        )
        p = prepare_tilesets(work / "cohort" / "manifest.csv", spec, cache=ThumbCache(work / "c"))
        run_spec = TrainSpec(epochs=epochs, lr=LEARN_LR, augment=AugmentSpec(hed=hed))
        train(p.train, work / "run", run_spec, holdout=p.holdout)
        (work / "done").write_text("trained\n")
        shutil.rmtree(root, ignore_errors=True)
        work.rename(root)
        for stale in root.parent.glob(f"{name}-*"):  # models of an older source
            if stale != root:
                shutil.rmtree(stale, ignore_errors=True)


@pytest.fixture(scope="session")
def learned() -> Learned:
    """A binary model that learns: 6 PAIP-like phantom slides (one subtype), 5 epochs, HED 0.05."""
    from slidesift.phantom.cohort import CohortSpec

    spec = CohortSpec(count=6, longest=(3000, 3200), mpp=1.0, subtypes=1, seed=1, artifacts=0.0)
    return _learn("binary", spec, "binary", LEARN_EPOCHS, LEARN_HED)


@pytest.fixture(scope="session")
def learned_subtypes() -> Learned:
    """A three-class model (non-tumor, glandular, solid) on 6 PAIP-like slides, 2 of them test."""
    from slidesift.phantom.cohort import CohortSpec

    spec = CohortSpec(count=6, longest=(3000, 3200), mpp=1.0, subtypes=2, seed=4, artifacts=0.0)
    return _learn("subtypes", spec, "subtype", LEARN_EPOCHS_SUBTYPES)


def discriminative_checkpoint(tile: int, folder: Path, seed: int = 0) -> Any:
    """A binary checkpoint at ``tile`` whose tumor probability varies strongly between tiles.

    Randomly initialised (no training: seconds at any T), BatchNorm statistics set from H&E-like
    tiles, the last layer scaled so the logits' spread over those tiles is 6: the tumor
    probabilities of a few dozen tiles span about [0.01, 0.99]. Rails admit every entropy.
    """
    import torch

    from slidesift.checkpoint import load_checkpoint, save_checkpoint
    from slidesift.model import LightweightCNN, to_input
    from slidesift.rails import Rails
    from slidesift.sift import SiftSpec

    torch.manual_seed(seed)
    net = LightweightCNN(tile, 2)
    pixels, _ = he_like_image((tile * 3, tile * 3), seed=seed + 100, tumor_fraction=0.4)
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2 * tile, (24, 2))
    sample = to_input(np.stack([pixels[y : y + tile, x : x + tile] for x, y in corners]))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative mean of the batches seen
    net.train()
    with torch.no_grad():
        net(sample)
        net.eval()
        logits = net(sample)[:, 0]
        last = net.head[-1]
        k = 6.0 / float(logits.std())
        last.weight.mul_(k)
        last.bias.copy_(k * (last.bias - logits.mean()))
    meta = {
        "tile": tile,
        "longest": 1000,
        "mpp": None,
        "rails": Rails(0.0, 8.0).to_dict(),
        "sift": SiftSpec().to_dict(),
        "classes": ["non-tumor", "tumor"],
        "normalization": None,
        "epoch": 1,
        "metrics": {},
    }
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return load_checkpoint(save_checkpoint(folder / f"t{tile}.safetensors", state, meta))
