"""The cohort manifest: one CSV that names every slide, its ground truth, label and split.

It is the single input of training, segmentation, evaluation and the cohort runner::

    slide,annotation,label,split
    slides/case_001.svs,masks/case_001_mask.tif,MSI-H,train
    slides/case_002.svs,masks/case_002_mask.tif,MSI-L,test
    slides/normal_014.tif,,normal,train
    slides/tumor_031.tif,xml/tumor_031.xml,tumor,test

Rules (checked by :func:`read_manifest`, every problem reported at once with its line):

- ``slide`` (required): a slide file, relative to the manifest's folder or absolute. Each slide
  appears once.
- ``annotation`` (optional): a mask image (PNG/TIFF, PAIP2020), ASAP XML (CAMELYON16) or
  GeoJSON (QuPath). Empty means no tumor drawn: the slide's truth is an empty mask when its
  label is a normal label (``normal``, ``negative``), and unknown otherwise (the slide is
  segmented but not scored).
- ``label`` (optional): the slide-level class, e.g. a subtype (``MSI-H``, ``MSI-L``) or
  ``tumor`` / ``normal``. Empty means unlabelled.
- ``split`` (optional): ``train``, ``val`` or ``test``; empty means not assigned (subsets are
  drawn later).
- Other columns are kept (for example ``patient``) and passed through to result tables.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slidesift.errors import ManifestError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.sniff import SLIDE_KINDS, a_kind, file_kind

__all__ = [
    "COLUMNS",
    "NORMAL_LABELS",
    "SPLITS",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "read_manifest",
    "write_manifest",
]

#: Columns every manifest has, in this order (``annotation``, ``label``, ``split`` may be empty).
COLUMNS: tuple[str, ...] = ("slide", "annotation", "label", "split")
#: Allowed values of ``split`` (besides empty).
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Labels that mean "no tumor on this slide": their empty annotation is an empty mask.
NORMAL_LABELS: tuple[str, ...] = ("normal", "negative", "non-tumor")
_ANNOTATION_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".xml", ".geojson", ".json")
#: File kinds (:func:`~slidesift.io.sniff.file_kind`) that are no manifest CSV.
_NOT_CSV = SLIDE_KINDS | {"checkpoint (safetensors)", "zip archive", "JSON", "XML", "folder"}


@dataclass(frozen=True)
class ManifestEntry:
    """One slide of a cohort.

    Attributes
    ----------
    slide
        Absolute path of the slide file.
    annotation
        Absolute path of its ground truth, or ``None`` when none is drawn.
    label
        Slide-level class, or ``None``.
    split
        ``train``, ``val``, ``test`` or ``None``.
    extra
        Other columns of the row, by name.
    line
        Line of the CSV it came from (1 is the header), for messages.
    """

    slide: Path
    annotation: Path | None = None
    label: str | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def name(self) -> str:
        """The slide's file name without its suffix: a stable id for outputs."""
        return self.slide.name.split(".")[0] if self.slide.name else str(self.slide)

    @property
    def is_normal(self) -> bool:
        """Labelled tumor-free (:data:`NORMAL_LABELS`)."""
        return self.label is not None and self.label.lower() in NORMAL_LABELS

    @property
    def has_truth(self) -> bool:
        """Whether a tumor mask is known: drawn, or empty by a normal label."""
        return self.annotation is not None or self.is_normal


@dataclass(frozen=True)
class Manifest:
    """A validated cohort manifest.

    Attributes
    ----------
    path
        The CSV file (``None`` when built in memory).
    entries
        One entry per slide, in file order.
    """

    path: Path | None
    entries: tuple[ManifestEntry, ...]

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def split(self, name: str) -> list[ManifestEntry]:
        """Entries whose split is ``name``."""
        return [e for e in self.entries if e.split == name]

    @property
    def labels(self) -> list[str]:
        """Distinct labels in first-seen order."""
        seen: dict[str, None] = {}
        for e in self.entries:
            if e.label is not None:
                seen.setdefault(e.label, None)
        return list(seen)


def _clean(value: str | None) -> str | None:
    text = (value or "").strip()
    return text or None


def _unusable(text: str) -> bool:
    """Whether a path from the CSV holds a NUL or is longer than file systems allow."""
    size = len(text.encode("utf-8", "surrogateescape"))
    long_part = any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in Path(text).parts)
    return "\0" in text or size > 4000 or long_part


def read_manifest(path: str | os.PathLike[str], *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest CSV.

    Parameters
    ----------
    path
        The CSV (UTF-8, comma-separated, header row first).
    check_files
        Check that every slide and annotation file exists.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        Listing every problem with its line: a missing column, an empty or repeated slide, a
        missing file, an annotation of unknown type, an unknown split.
    """
    p = Path(path)
    kind = file_kind(p)
    if kind in _NOT_CSV:  # a slide or checkpoint may even decode as UTF-8: say what it is
        one = "; to segment one slide: slidesift segment CHECKPOINT SLIDE"
        raise ManifestError(
            p,
            [(0, f"this is {a_kind(kind)}, not a manifest CSV")],
            "a manifest is a CSV listing slides (columns slide, annotation, label, split; see "
            "the README section 'The cohort manifest')"
            + (one if kind in SLIDE_KINDS else "; check the order of the arguments (--help)"),
        )
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(p, [(0, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(p, [(0, f"cannot read it as UTF-8 text ({exc})")]) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if "slide" not in header:
        raise ManifestError(p, [(1, f"no 'slide' column (header: {', '.join(header) or 'none'})")])
    reader.fieldnames = header
    root = p.parent.resolve()
    problems: list[tuple[int, str]] = []
    entries: list[ManifestEntry] = []
    seen: dict[Path, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append((line, f"more fields than the header has ({len(header)})"))
            continue
        slide_text = _clean(row.get("slide"))
        if slide_text is None:
            if any(_clean(v) for v in row.values()):
                problems.append((line, "empty 'slide'"))
            continue
        ann_text = _clean(row.get("annotation"))
        bad = [t for t in (slide_text, ann_text) if t is not None and _unusable(t)]
        if bad:  # resolve() and is_file() raise on a NUL or a name past the system's limit
            problems.append((line, f"{bad[0][:80]!r} is not a usable file path"))
            continue
        slide = (root / slide_text).resolve()
        annotation = (root / ann_text).resolve() if ann_text else None
        label, split = _clean(row.get("label")), _clean(row.get("split"))
        if split is not None and split not in SPLITS:
            problems.append((line, f"split {split!r} is not one of {', '.join(SPLITS)} or empty"))
        if slide in seen:
            problems.append((line, f"slide {slide_text!r} is already on line {seen[slide]}"))
        seen.setdefault(slide, line)
        if check_files and not slide.is_file():
            problems.append((line, f"slide {slide_text!r} not found (looked at {slide})"))
        if annotation is not None:
            if annotation.suffix.lower() not in _ANNOTATION_SUFFIXES:
                problems.append((line, f"annotation {ann_text!r}: unknown type; use a mask "
                                 "image, ASAP .xml or .geojson"))  # fmt: skip
            elif check_files and not annotation.is_file():
                problems.append(
                    (line, f"annotation {ann_text!r} not found (looked at {annotation})")
                )
        extra = {k: (v or "").strip() for k, v in row.items() if k not in COLUMNS}
        entries.append(ManifestEntry(slide, annotation, label, split, extra, line))
    if not entries and not problems:
        problems.append((0, "no slides listed"))
    if problems:
        raise ManifestError(p, problems)
    return Manifest(p, tuple(entries))


def write_manifest(path: str | os.PathLike[str], entries: Iterable[ManifestEntry]) -> Path:
    """Write a manifest CSV atomically, with paths relative to its folder where possible.

    Parameters
    ----------
    path
        Destination ``.csv``.
    entries
        The slides; ``extra`` columns are written after the standard ones.

    Returns
    -------
    pathlib.Path
    """
    p = Path(path)
    root = p.parent.resolve()
    rows = list(entries)
    extra_cols: dict[str, None] = {}
    for e in rows:
        for k in e.extra:
            extra_cols.setdefault(k, None)

    def rel(q: Path | None) -> str:
        if q is None:
            return ""
        try:
            return Path(os.path.relpath(q.resolve(), root)).as_posix()
        except ValueError:  # another drive on Windows
            return str(q)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*COLUMNS, *extra_cols])
    for e in rows:
        writer.writerow([rel(e.slide), rel(e.annotation), e.label or "", e.split or "",
                         *(e.extra.get(k, "") for k in extra_cols)])  # fmt: skip
    return atomic_write_text(p, buf.getvalue())
