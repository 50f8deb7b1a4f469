"""The public API is curated: adding or removing a name is a decision, made here."""

from __future__ import annotations

import subprocess
import sys

import slidesift

PUBLIC = {
    "AblationRow", "AnnotationError", "AugmentSpec", "Ceilings", "Checkpoint",
    "CheckpointError", "CohortError", "CohortResult", "CohortSpec", "ConfigError", "Confusion",
    "DatasetError", "Downsample", "GridSpec", "LightweightCNN", "MacenkoNormalizer", "Manifest",
    "ManifestEntry", "ManifestError", "MissingExtraError", "NoTilesWarning",
    "OutOfDomainWarning", "OutputError", "OutputLockedError", "OutputSpec", "PatchFolderError",
    "Prepared", "Rails", "RailsError",
    "ReinhardNormalizer", "ReportError", "Scores", "SegmentResult", "SegmentSpec", "Selection",
    "SelectionError", "SelectionOnTestWarning", "SiftResult", "SiftRun", "SiftSpec", "Slide",
    "SlideOutcome", "SlideReadError", "SlidesiftError", "StainError", "SweepError",
    "SweepResult", "SweepSpec", "Thumb", "ThumbCache",
    "TileGrid", "TileSet", "TileSetSpec", "TileStats", "TrainSpec", "TrainingError",
    "VahadaneNormalizer", "__version__", "ablate", "build_report", "build_tileset", "ceilings",
    "confusion", "evaluate_slide", "evaluate_slides", "fit_rails", "load_checkpoint",
    "make_cohort", "make_subsets", "mask_to_geojson", "measure_tiles", "open_slide",
    "prepare_tilesets", "rails_spread", "read_asap_xml", "read_cohort", "read_geojson",
    "read_manifest", "read_mask", "read_thumb", "read_truth", "run_cohort", "run_sweep", "scores",
    "segment",
    "select_epoch", "sift", "sift_slide", "train", "write_geojson", "write_manifest",
    "write_report", "write_segmentation",
}  # fmt: skip


def test_public_api_is_locked() -> None:
    assert set(slidesift.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(slidesift, name), name


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, sys; import slidesift; "
        "assert not logging.getLogger().handlers; "
        "assert 'numba' not in sys.modules, 'numba imported at import time'; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_whole_pipeline_is_public() -> None:
    """Each stage a user runs, from slide to report, is reachable from the top namespace."""
    stages = {
        "open_slide", "read_thumb", "sift", "fit_rails", "build_tileset", "train",
        "load_checkpoint", "segment", "scores", "evaluate_slides", "run_cohort", "select_epoch",
        "ablate", "write_report", "make_cohort", "Downsample", "GridSpec",
    }  # fmt: skip
    assert stages <= PUBLIC


def test_error_classes_are_one_family_in_errors() -> None:
    """Every public exception lives in slidesift.errors and derives from SlidesiftError."""
    import slidesift.errors

    for name in PUBLIC:
        obj = getattr(slidesift, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            family = Warning if issubclass(obj, Warning) else slidesift.SlidesiftError
            assert issubclass(obj, family), name
            assert obj.__module__ == "slidesift.errors", name
            assert name in slidesift.errors.__all__


def test_readme_lists_every_exit_code_errors_uses() -> None:
    """The README's exit-code line names each code an error class can give."""
    import re
    from pathlib import Path

    import slidesift.errors as errors

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = readme[readme.index("Exit codes:") :].split("\n\n")[0]
    listed = {int(n) for n in re.findall(r"(\d+) [a-z]", line)}
    used = {
        obj.exit_code
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.SlidesiftError)
    }
    assert used <= listed, f"exit codes {sorted(used - listed)} are not in the README"


def test_public_functions_are_not_shadowed_by_their_modules() -> None:
    """``slidesift.sift`` is the function even after ``import slidesift.sift`` (same for
    segment, train, ablate, ceilings): a lazy namespace would hand back the module."""
    import importlib
    import types

    for name in ("sift", "segment", "train", "ablate", "ceilings"):
        importlib.import_module(f"slidesift.{name}")
        assert not isinstance(getattr(slidesift, name), types.ModuleType), name
        assert callable(getattr(slidesift, name)), name
