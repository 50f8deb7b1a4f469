"""slidesift: find tumor in whole-slide images with entropy rails and a lightweight CNN.

The pipeline as data (see the README)::

    open_slide -> read_thumb(Downsample) -> GridSpec/TileGrid -> measure_tiles -> sift(rails)
    manifest -> prepare_tilesets (TileSet: rails, balanced classes) -> train -> checkpoints
    checkpoint + slide -> segment -> SegmentResult (mask) -> scores (metrics)
    checkpoint + manifest -> evaluate_slides / run_cohort (Dask) -> select_epoch, ablate
    manifest + SweepSpec -> run_sweep: a model per N x T, epoch chosen on val, test scored
    cohort folder -> build_report / write_report (one HTML page)
    CohortSpec -> make_cohort: phantom slides with exact truth

Importing slidesift has no side effects: no logging set-up, no file reads, no JIT compilation,
no torch and no numba (``LightweightCNN``, ``CohortSpec`` and ``make_cohort`` are loaded
the first time they are asked for).
"""

from typing import TYPE_CHECKING, Any

from slidesift._version import __version__
from slidesift.ablate import AblationRow, ablate
from slidesift.augment import AugmentSpec
from slidesift.cache import ThumbCache
from slidesift.ceilings import Ceilings, ceilings
from slidesift.checkpoint import Checkpoint, load_checkpoint
from slidesift.cohort import CohortResult, run_cohort
from slidesift.dataset import build_tileset
from slidesift.errors import (
    AnnotationError,
    CheckpointError,
    CohortError,
    ConfigError,
    DatasetError,
    ManifestError,
    MissingExtraError,
    OutputError,
    OutputLockedError,
    PatchFolderError,
    RailsError,
    ReportError,
    SelectionError,
    SlideReadError,
    SlidesiftError,
    StainError,
    SweepError,
    TrainingError,
)
from slidesift.evaluate import SlideOutcome, evaluate_slide, evaluate_slides
from slidesift.io.annotations import (
    mask_to_geojson,
    read_asap_xml,
    read_geojson,
    read_mask,
    read_truth,
    write_geojson,
)
from slidesift.io.downsample import Downsample
from slidesift.io.slide import Slide, Thumb, open_slide, read_thumb
from slidesift.manifest import Manifest, ManifestEntry, read_manifest, write_manifest
from slidesift.metrics import Confusion, Scores, confusion, scores
from slidesift.prepare import Prepared, prepare_tilesets
from slidesift.rails import Rails, fit_rails
from slidesift.report import build_report, read_cohort, write_report
from slidesift.segment import (
    NoTilesWarning,
    OutOfDomainWarning,
    SegmentResult,
    SegmentSpec,
    segment,
)
from slidesift.segment_outputs import OutputSpec, write_segmentation
from slidesift.select import Selection, SelectionOnTestWarning, select_epoch
from slidesift.sift import SiftResult, SiftSpec, TileStats, measure_tiles, sift
from slidesift.sift_maps import SiftRun, sift_slide
from slidesift.stain import MacenkoNormalizer, ReinhardNormalizer, VahadaneNormalizer
from slidesift.subsets import make_subsets
from slidesift.sweep import SweepResult, SweepSpec, run_sweep
from slidesift.tiles import GridSpec, TileGrid
from slidesift.tileset import TileSet, TileSetSpec
from slidesift.train import train
from slidesift.train_spec import TrainSpec
from slidesift.tumor_rails import rails_spread

if TYPE_CHECKING:
    from slidesift.model import LightweightCNN
    from slidesift.phantom.cohort import CohortSpec, make_cohort

__all__ = [
    "AblationRow",
    "AnnotationError",
    "AugmentSpec",
    "Ceilings",
    "Checkpoint",
    "CheckpointError",
    "CohortError",
    "CohortResult",
    "CohortSpec",
    "ConfigError",
    "Confusion",
    "DatasetError",
    "Downsample",
    "GridSpec",
    "LightweightCNN",
    "MacenkoNormalizer",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "MissingExtraError",
    "NoTilesWarning",
    "OutOfDomainWarning",
    "OutputError",
    "OutputLockedError",
    "OutputSpec",
    "PatchFolderError",
    "Prepared",
    "Rails",
    "RailsError",
    "ReinhardNormalizer",
    "ReportError",
    "Scores",
    "SegmentResult",
    "SegmentSpec",
    "Selection",
    "SelectionError",
    "SelectionOnTestWarning",
    "SiftResult",
    "SiftRun",
    "SiftSpec",
    "Slide",
    "SlideOutcome",
    "SlideReadError",
    "SlidesiftError",
    "StainError",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "Thumb",
    "ThumbCache",
    "TileGrid",
    "TileSet",
    "TileSetSpec",
    "TileStats",
    "TrainSpec",
    "TrainingError",
    "VahadaneNormalizer",
    "__version__",
    "ablate",
    "build_report",
    "build_tileset",
    "ceilings",
    "confusion",
    "evaluate_slide",
    "evaluate_slides",
    "fit_rails",
    "load_checkpoint",
    "make_cohort",
    "make_subsets",
    "mask_to_geojson",
    "measure_tiles",
    "open_slide",
    "prepare_tilesets",
    "rails_spread",
    "read_asap_xml",
    "read_cohort",
    "read_geojson",
    "read_manifest",
    "read_mask",
    "read_thumb",
    "read_truth",
    "run_cohort",
    "run_sweep",
    "scores",
    "segment",
    "select_epoch",
    "sift",
    "sift_slide",
    "train",
    "write_geojson",
    "write_manifest",
    "write_report",
    "write_segmentation",
]

#: Names whose module needs an optional extra (torch) or compiles (numba): imported on first use.
_LAZY = {
    "LightweightCNN": "slidesift.model",
    "CohortSpec": "slidesift.phantom.cohort",
    "make_cohort": "slidesift.phantom.cohort",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slidesift' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
