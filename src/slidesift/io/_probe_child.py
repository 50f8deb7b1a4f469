"""The child of :func:`slidesift.io.slide_probe.probe_slide`: ``python -m ... PATH``.

It asks OpenSlide what the file is and, for a slide OpenSlide reads, opens it as
:func:`~slidesift.io.slide.open_slide` does and reads two regions of at most 512 x 512 px per
level (origin and centre), under an address-space cap of
:data:`~slidesift.io.slide_probe.CHILD_MEMORY`. It exits 0 whatever Python raises (the parent
meets that error itself), :data:`~slidesift.io.slide_probe.NO_MEMORY` when the cap is hit;
a crash in C ends it by a signal, which is what the parent looks for.
"""

from __future__ import annotations

import sys

from slidesift.io.slide_probe import CHILD_MEMORY, NO_MEMORY

_REGION = 512


def _child(path: str) -> None:
    """Open the slide and read a sample of each level; Python errors are the parent's to meet."""
    import logging
    import resource

    import openslide

    from slidesift.io.slide import open_slide

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = CHILD_MEMORY if hard == resource.RLIM_INFINITY else min(CHILD_MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    logging.disable(logging.CRITICAL)
    try:
        vendor = openslide.OpenSlide.detect_format(path)
        if vendor is None or vendor == "dicom":
            return  # plain rasters are read by tifffile or Pillow, not OpenSlide
        with open_slide(path, probe=False) as slide:
            for level, (w, h) in enumerate(slide.level_dimensions):
                size = (min(w, _REGION), min(h, _REGION))
                slide.read_region(level, (0, 0), size)
                half = _REGION // 2
                slide.read_region(level, (max(0, w // 2 - half), max(0, h // 2 - half)), size)
    except MemoryError:
        sys.exit(NO_MEMORY)
    except Exception:  # the parent reads the slide itself and reports it
        pass


if __name__ == "__main__":
    _child(sys.argv[1])
