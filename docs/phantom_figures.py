"""Make the phantom figures in docs/: one slide of each regime beside its mask, and a
scale-matched look at real H&E from ../shared/data.

Run: ``.venv/bin/python docs/phantom_figures.py`` (about a minute; writes docs/*.png).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from slidesift.io.annotations import read_truth
from slidesift.io.slide import open_slide, read_thumb
from slidesift.phantom.cohort import CohortSpec, make_cohort

DOCS = Path(__file__).resolve().parent
SHARED = DOCS.parent.parent / "shared" / "data"
WIDTH = 760  # px per panel


def panel(pixels: NDArray[np.uint8], width: int = WIDTH) -> NDArray[np.uint8]:
    h, w = pixels.shape[:2]
    size = (width, max(1, round(h * width / w)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def label(img: NDArray[np.uint8], text: str) -> NDArray[np.uint8]:
    out = img.copy()
    ink = (20, 20, 20) if out[:40].mean() > 128 else (235, 235, 235)
    cv2.putText(out, text, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, ink, 2, cv2.LINE_AA)
    return out


def side_by_side(*panels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 8), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(padded, axis=1)


def save(path: Path, rgb: NDArray[np.uint8]) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def regime_figure(regime: str, out: Path, work: Path) -> tuple[NDArray[np.uint8], float]:
    spec = CohortSpec(regime=regime, count=4, subtypes=2 if regime == "paip" else 1, seed=3)
    manifest = make_cohort(spec, work)
    entry = next(e for e in manifest if e.annotation is not None)
    with open_slide(entry.slide) as slide:
        thumb = read_thumb(slide, longest=2000)
    truth = read_truth(entry.annotation, thumb)  # type: ignore[arg-type]
    outline = thumb.pixels.copy()
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outline, contours, -1, (0, 170, 0), 3)
    mask = np.repeat((truth * 255).astype(np.uint8)[..., None], 3, axis=2)
    um = thumb.mpp[0] if thumb.mpp else 0
    fig = side_by_side(
        label(panel(thumb.pixels), f"{entry.slide.name} ({entry.label}), {um:.0f} um/px"),
        label(panel(outline), "truth outline"),
        label(panel(mask), f"{entry.annotation.name}"),  # type: ignore[union-attr]
    )
    save(out, fig)
    return thumb.pixels, um


def real_comparison(paip_thumb: NDArray[np.uint8], um: float, out: Path) -> None:
    panels = []
    tcga = SHARED / "tcga_cr_7395_small_svs" / "tcga-cr-7395-01a-01-ts1.svs"
    cmu = SHARED / "cmu1_small_region" / "CMU-1-Small-Region.svs"
    if tcga.exists():
        with open_slide(tcga) as s:
            panels.append(label(panel(read_thumb(s, longest=1200).pixels, 500), "real: TCGA"))
    if cmu.exists():
        with open_slide(cmu) as s:
            panels.append(label(panel(read_thumb(s, mpp=3.0).pixels, 300), "real: CMU-1, 3 um/px"))
    h, w = paip_thumb.shape[:2]
    crop = paip_thumb[h // 3 : h // 3 + 500, w // 3 : w // 3 + 400]
    panels.append(label(panel(crop, 400), f"phantom, {um:.0f} um/px crop"))
    save(out, side_by_side(*panels))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paip, um = regime_figure("paip", DOCS / "phantom-paip.png", Path(tmp) / "paip")
        regime_figure("camelyon", DOCS / "phantom-camelyon.png", Path(tmp) / "camelyon")
    real_comparison(paip, um, DOCS / "phantom-vs-real.png")


if __name__ == "__main__":
    main()
