"""slidesift: find tumor in whole-slide images with entropy rails and a lightweight CNN.

The pipeline as data (see the README)::

    open_slide -> read_thumb -> TileGrid -> measure_tiles -> sift(rails) -> keep
    manifest -> prepare_tilesets (TileSet: rails, balanced classes) -> train -> checkpoints

Importing slidesift has no side effects: no logging set-up, no file reads, no JIT compilation.
"""

from slidesift._version import __version__
from slidesift.cache import ThumbCache
from slidesift.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from slidesift.dataset import build_tileset
from slidesift.errors import (
    AnnotationError,
    ConfigError,
    DatasetError,
    SlideReadError,
    SlidesiftError,
)
from slidesift.io.annotations import (
    mask_to_geojson,
    read_asap_xml,
    read_geojson,
    read_mask,
    read_truth,
    write_geojson,
)
from slidesift.io.slide import Slide, Thumb, open_slide, read_thumb
from slidesift.manifest import Manifest, ManifestEntry, ManifestError, read_manifest, write_manifest
from slidesift.model import LightweightCNN
from slidesift.prepare import Prepared, prepare_tilesets
from slidesift.rails import Rails, fit_rails
from slidesift.sift import SiftResult, SiftSpec, TileStats, measure_tiles, sift
from slidesift.stain import MacenkoNormalizer, ReinhardNormalizer
from slidesift.subsets import make_subsets
from slidesift.tiles import TileGrid
from slidesift.tileset import TileSet, TileSetSpec
from slidesift.train import train
from slidesift.train_spec import TrainSpec
from slidesift.tumor_rails import rails_spread

__all__ = [
    "AnnotationError",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "LightweightCNN",
    "MacenkoNormalizer",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "Prepared",
    "Rails",
    "ReinhardNormalizer",
    "SiftResult",
    "SiftSpec",
    "Slide",
    "SlideReadError",
    "SlidesiftError",
    "Thumb",
    "ThumbCache",
    "TileGrid",
    "TileSet",
    "TileSetSpec",
    "TileStats",
    "TrainSpec",
    "__version__",
    "build_tileset",
    "fit_rails",
    "load_checkpoint",
    "make_subsets",
    "mask_to_geojson",
    "measure_tiles",
    "open_slide",
    "prepare_tilesets",
    "rails_spread",
    "read_asap_xml",
    "read_geojson",
    "read_manifest",
    "read_mask",
    "read_thumb",
    "read_truth",
    "sift",
    "train",
    "write_geojson",
    "write_manifest",
]
