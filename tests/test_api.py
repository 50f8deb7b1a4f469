"""The public API is curated: adding or removing a name is a decision, made here."""

from __future__ import annotations

import subprocess
import sys

import slidesift

PUBLIC = {
    "AnnotationError", "ConfigError", "Rails", "SiftResult", "SiftSpec", "Slide",
    "SlideReadError", "SlidesiftError", "Thumb", "TileGrid", "TileStats", "__version__",
    "fit_rails", "mask_to_geojson", "measure_tiles", "open_slide", "rails_spread",
    "read_asap_xml", "read_geojson", "read_mask", "read_thumb", "read_truth", "sift",
    "write_geojson", "Manifest", "ManifestEntry", "ManifestError", "read_manifest",
    "write_manifest", "ThumbCache", "Checkpoint", "CheckpointError", "load_checkpoint",
    "DatasetError", "TileSet", "TileSetSpec", "build_tileset", "LightweightCNN", "Prepared",
    "prepare_tilesets", "MacenkoNormalizer", "ReinhardNormalizer", "make_subsets", "TrainSpec",
    "train",
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
