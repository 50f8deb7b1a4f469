"""A model bundle segments in a venv with only the ``infer`` extra: no torch, no safetensors.

``make test`` builds that venv (``.venv-infer``: ``pip install -e '.[infer]'``) beside the main
one; these tests run the ``slidesift`` command in it on a bundle of the learned model and
compare with the main venv's checkpoint, as a user who was handed ``model.slidesift`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from slidesift.bundle import write_bundle
from slidesift.checkpoint import load_checkpoint
from slidesift.segment import Classifiers, SegmentSpec, segment

pytestmark = [pytest.mark.slow, pytest.mark.learn]
INFER_VENV = Path(os.environ.get("SLIDESIFT_INFER_VENV", REPO / ".venv-infer"))


@pytest.fixture(scope="module")
def infer_bin() -> Path:
    """The torch-free venv's bin folder (built by ``make test``)."""
    if not (INFER_VENV / "bin" / "slidesift").exists():
        pytest.skip(f"no torch-free venv at {INFER_VENV}: `make test` builds it")
    return INFER_VENV / "bin"


def run(bin_dir: Path, *args: str | Path, cache: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a program of the torch-free venv with its own cache folder."""
    full = {**os.environ, "SLIDESIFT_CACHE": str(cache), "PYTHONPATH": "", **env}
    return subprocess.run(
        [str(bin_dir / str(args[0])), *map(str, args[1:])],
        env=full, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_venv_has_no_torch(infer_bin: Path, tmp_path: Path) -> None:
    code = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('safetensors'))"
    done = run(infer_bin, "python", "-c", code, cache=tmp_path)
    assert done.stdout.split() == ["None", "None"], done.stderr


@pytest.fixture(scope="module")
def bundle(learned, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch-free")
    return write_bundle(load_checkpoint(learned.best), root / "model.slidesift",
                        cache_dir=root / "export-cache")  # fmt: skip


def _mask(folder: Path, stem: str) -> np.ndarray:
    mask = cv2.imread(str(folder / stem / f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask is not None
    return np.asarray(mask > 0)


@pytest.mark.parametrize("inference", ["dense", "int8"])
def test_segment_with_a_bundle_equals_the_checkpoint(
    infer_bin: Path, bundle: Path, learned, tmp_path: Path, inference: str
) -> None:
    """Masks identical to the checkpoint's, segmented in the main venv with torch installed."""
    entry = learned.test_entries[0]
    ck = load_checkpoint(learned.best)
    spec = SegmentSpec(inference=inference, round_stride=True)  # type: ignore[arg-type]
    want = segment(entry.slide, ck, spec, classifiers=Classifiers(ck, cache_dir=tmp_path / "c0"))
    out = tmp_path / "seg"
    done = run(infer_bin, "slidesift", "segment", bundle, entry.slide, "--inference", inference,
               "--round-stride", "--out", out, cache=tmp_path / "c1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    got = _mask(out, entry.slide.stem)
    assert want.mask.any()
    assert np.array_equal(got, want.mask)


def test_evaluate_and_auto_run_from_a_bundle_without_torch(
    infer_bin: Path, bundle: Path, learned, tmp_path: Path
) -> None:
    """``evaluate`` in process (Dask is the cohort extra) with the probe on: it chooses among
    the ONNX backends and reports bf16 as unavailable rather than failing."""
    out = tmp_path / "ev"
    done = run(infer_bin, "slidesift", "evaluate", bundle, learned.manifest, "--split", "test",
               "--workers", "0", "--round-stride", "--out", out, cache=tmp_path / "c",
               SLIDESIFT_PROBE="1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_jaccard"] > 0.5
    probes = list((tmp_path / "c" / "probe").glob("*.json"))
    assert len(probes) == 1
    verdicts = json.loads(probes[0].read_text())["verdicts"]
    assert verdicts["dense"]["passed"]
    assert not verdicts["bf16"]["passed"] and "torch" in verdicts["bf16"]["note"]
    assert json.loads(probes[0].read_text())["key"]["torch"] is None
