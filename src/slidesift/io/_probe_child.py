"""The child of :func:`slidesift.io.slide_probe.probe_slide`: ``python _probe_child.py PATH``.

It asks OpenSlide what the file is and, for a slide OpenSlide reads, opens it, applies the
tile-size limit that :func:`~slidesift.io.slide.open_slide` applies before any pixel is decoded
(:func:`slidesift.io.limits.check_tile_sizes`), and reads two regions of at most 512 x 512 px
per level (origin and centre), under an address-space cap of
:data:`~slidesift.io.slide_probe.CHILD_MEMORY`. It exits 0 whatever Python raises (the parent
meets that error itself), :data:`~slidesift.io.slide_probe.NO_MEMORY` when the cap is hit;
a crash in C ends it by a signal, which is what the parent looks for.

It runs as a script, not as ``-m slidesift...``: importing the ``slidesift`` package would load
its whole public API (0.2 s of the 0.27 s a child took). :func:`_bare_package` registers the
package without running its ``__init__``, so the child imports only OpenSlide, ``errors`` and
``io.limits`` (about 0.05 s).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

_REGION = 512


def _bare_package() -> None:
    """Make ``slidesift`` importable from this file's tree without its ``__init__``."""
    here = Path(__file__).resolve().parent
    # Run as a script, Python put this folder first on sys.path: its modules (slide, tiff,
    # lock, ...) must not shadow top-level names.
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != here]
    root = here.parent  # src/slidesift
    for name, folder in (("slidesift", root), ("slidesift.io", root / "io")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(folder)]
        sys.modules.setdefault(name, pkg)


def _child(path: str) -> None:
    """Open the slide and read a sample of each level; Python errors are the parent's to meet."""
    import logging
    import resource

    _bare_package()
    from slidesift.io.limits import check_tile_sizes
    from slidesift.io.slide_probe import CHILD_MEMORY, NO_MEMORY

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = CHILD_MEMORY if hard == resource.RLIM_INFINITY else min(CHILD_MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    logging.disable(logging.CRITICAL)
    try:
        import openslide

        vendor = openslide.OpenSlide.detect_format(path)
        if vendor is None or vendor == "dicom":
            return  # plain rasters are read by tifffile or Pillow, not OpenSlide
        with openslide.OpenSlide(path) as slide:
            check_tile_sizes(Path(path), slide.properties, slide.level_count)
            for level, (w, h) in enumerate(slide.level_dimensions):
                size = (min(w, _REGION), min(h, _REGION))
                scale = slide.level_downsamples[level]
                half = _REGION // 2
                for lv_x, lv_y in ((0, 0), (max(0, w // 2 - half), max(0, h // 2 - half))):
                    l0 = (round(lv_x * scale), round(lv_y * scale))
                    slide.read_region(l0, level, size)
    except MemoryError:
        sys.exit(NO_MEMORY)
    except Exception:  # the parent reads the slide itself and reports it
        pass


if __name__ == "__main__":
    _child(sys.argv[1])
