"""slidesift: find tumor in whole-slide images with entropy rails and a lightweight CNN.

The pipeline as data (see the README)::

    open_slide -> read_thumb -> TileGrid -> measure_tiles -> sift(rails) -> keep

Importing slidesift has no side effects: no logging set-up, no file reads, no JIT compilation.
"""

from slidesift.errors import AnnotationError, ConfigError, SlideReadError, SlidesiftError
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
from slidesift.rails import Rails, fit_rails, rails_spread
from slidesift.sift import SiftResult, SiftSpec, TileStats, measure_tiles, sift
from slidesift.tiles import TileGrid

__version__ = "0.1.0"

__all__ = [
    "AnnotationError",
    "ConfigError",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "Rails",
    "SiftResult",
    "SiftSpec",
    "Slide",
    "SlideReadError",
    "SlidesiftError",
    "Thumb",
    "TileGrid",
    "TileStats",
    "__version__",
    "fit_rails",
    "mask_to_geojson",
    "measure_tiles",
    "open_slide",
    "rails_spread",
    "read_asap_xml",
    "read_geojson",
    "read_manifest",
    "read_mask",
    "read_thumb",
    "read_truth",
    "sift",
    "write_geojson",
    "write_manifest",
]
