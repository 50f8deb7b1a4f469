"""One exception family for everything slidesift refuses.

Every error says what was wrong, with the offending value, and what to do about it; each class
keeps those parts as attributes (``path``, ``reason``, ``hint``, ...). The CLI prints
``str(error)`` and exits with the class's :attr:`~SlidesiftError.exit_code`; library users can
catch :class:`SlidesiftError` or one kind.

Exit codes, one per kind of fault (the README lists them too):

====  ==============================================================================
code  kind
====  ==============================================================================
1     anything else (:class:`CohortError`, a whole cohort failed)
2     the command line: an option's value (:class:`ConfigError`) or a missing file
3     a slide cannot be read (:class:`SlideReadError`)
4     ground truth and tables: :class:`AnnotationError`, :class:`ManifestError`,
      :class:`ReportError`, :class:`PatchFolderError`
5     the data cannot train or be fitted: :class:`DatasetError`, :class:`TrainingError`,
      :class:`StainError`, :class:`SelectionError`, :class:`SweepError`
6     model files: :class:`CheckpointError`, :class:`RailsError`
7     an optional dependency is missing (:class:`MissingExtraError`)
8     an output cannot be written (:class:`OutputError`)
9     the output folder is in use by another run (:class:`OutputLockedError`)
====  ==============================================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "AnnotationError",
    "CheckpointError",
    "CohortError",
    "ConfigError",
    "DatasetError",
    "ManifestError",
    "MissingExtraError",
    "NoTilesWarning",
    "OutOfDomainWarning",
    "OutputError",
    "OutputLockedError",
    "PatchFolderError",
    "RailsError",
    "ReportError",
    "SelectionError",
    "SelectionOnTestWarning",
    "SlideReadError",
    "SlidesiftError",
    "SlidesiftWarning",
    "StainError",
    "SweepError",
    "TrainingError",
    "WorkerDiedError",
    "require",
]

PathLike = str | os.PathLike[str]


class SlidesiftError(Exception):
    """Base class of every error slidesift raises on purpose."""

    #: Process exit code the CLI uses for this kind of error.
    exit_code: int = 1


def _with_hint(text: str, hint: str) -> str:
    return f"{text}\n  hint: {hint}" if hint else text


class _FileFault(SlidesiftError):
    """A file (or an in-memory object, ``path=None``) that cannot serve; ``what`` names its kind."""

    what = "file"

    def __init__(self, path: PathLike | None, reason: str, hint: str = "") -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        self.hint = hint
        super().__init__(_with_hint(self._headline(), hint))

    def _headline(self) -> str:
        if self.path is None:
            return f"{self.what}: {self.reason}"
        return f"cannot use {self.what} {str(self.path)!r}: {self.reason}"


class SlideReadError(_FileFault):
    """A slide (or plain image) cannot be opened or read.

    Parameters
    ----------
    path
        The file that failed.
    reason
        What went wrong, in words.
    hint
        What the user can do about it.
    """

    exit_code = 3

    def __init__(self, path: PathLike, reason: str, hint: str = "") -> None:
        super().__init__(path, reason, hint)

    def _headline(self) -> str:
        return f"cannot read slide {str(self.path)!r}: {self.reason}"


class AnnotationError(_FileFault):
    """Ground truth (mask image, ASAP XML, GeoJSON) is malformed or does not fit the slide.

    Parameters
    ----------
    path
        The annotation file, or ``None`` for an in-memory object.
    reason
        What went wrong, in words.
    hint
        What the user can do about it.
    """

    exit_code = 4

    def _headline(self) -> str:
        where = f"annotation {str(self.path)!r}" if self.path is not None else "annotation"
        return f"bad {where}: {self.reason}"


class ManifestError(SlidesiftError):
    """A manifest cannot be used; ``problems`` lists each one as ``(line, message)``.

    Parameters
    ----------
    path
        The manifest CSV.
    problems
        ``(line, message)`` pairs; line 0 means the file as a whole.
    hint
        What to do; the default names the columns and the README section.
    """

    exit_code = 4

    def __init__(
        self, path: PathLike, problems: Sequence[tuple[int, str]], hint: str | None = None
    ) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        shown = "\n".join(
            f"  line {line}: {msg}" if line else f"  {msg}" for line, msg in self.problems[:20]
        )
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        self.hint = hint if hint is not None else (
            "columns are slide, annotation, label, split; paths are relative to the manifest's "
            "folder; see the README section 'The cohort manifest'"
        )  # fmt: skip
        super().__init__(
            f"manifest {str(self.path)!r} has {len(self.problems)} problem(s):\n{shown}{more}"
            f"\n  hint: {self.hint}"
        )


class ReportError(_FileFault):
    """An input of the report is missing or malformed (``path=None``: not about one file)."""

    exit_code = 4

    def _headline(self) -> str:
        return self.reason if self.path is None else f"{str(self.path)!r}: {self.reason}"


class PatchFolderError(_FileFault):
    """A folder of labelled patches (``tumor/*.png``, ``normal/*.png``) cannot make a mosaic."""

    exit_code = 4
    what = "patch folder"


class DatasetError(SlidesiftError):
    """The training slides cannot make a tile set (no tumor, one class, tiles too large)."""

    exit_code = 5


class TrainingError(SlidesiftError):
    """A training run cannot start or continue (empty tile set, finished run, changed recipe).

    Parameters
    ----------
    reason
        What is wrong, in words.
    hint
        What the user can do about it.
    """

    exit_code = 5

    def __init__(self, reason: str, hint: str = "") -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(_with_hint(reason, hint))


class StainError(TrainingError):
    """A stain normaliser cannot be fitted or applied (no tissue pixels, bad parameters)."""


class SelectionError(TrainingError):
    """Model selection has nothing to score: no epochs, no slides with truth, mixed scales."""


class SweepError(TrainingError):
    """An N x T sweep cannot run in its folder: it holds a sweep of another recipe."""


class CheckpointError(_FileFault):
    """A checkpoint file is missing, truncated, corrupt or not a slidesift checkpoint.

    Parameters
    ----------
    path
        The file.
    reason
        What is wrong with it.
    hint
        What to do; the default suggests resuming an interrupted run or another epoch.
    """

    exit_code = 6
    what = "checkpoint"
    DEFAULT_HINT = (
        "an interrupted run keeps its previous epochs intact; resume the run "
        "(slidesift train ... --resume) or pick another epoch's file"
    )

    def __init__(self, path: PathLike, reason: str, hint: str | None = None) -> None:
        super().__init__(path, reason, self.DEFAULT_HINT if hint is None else hint)

    def _headline(self) -> str:
        return f"cannot load checkpoint {str(self.path)!r}: {self.reason}"


class RailsError(_FileFault):
    """A rails JSON (or rails spread JSON) cannot be read or does not fit the tiles."""

    exit_code = 6
    what = "rails"


class MissingExtraError(SlidesiftError):
    """An optional dependency is not installed; the message names the pip extra.

    Parameters
    ----------
    module
        The module that failed to import.
    extra
        The slidesift extra that provides it (``learn``, ``infer``, ``cohort``, ``report``).
    purpose
        What needed it, in words ("training", "running a cohort on Dask").
    hint
        Another way round, when there is one.
    """

    exit_code = 7

    def __init__(self, module: str, extra: str, purpose: str = "", hint: str = "") -> None:
        self.module = module
        self.extra = extra
        self.purpose = purpose
        self.hint = hint
        needs = f"{purpose} needs" if purpose else "this needs"
        super().__init__(
            _with_hint(
                f"{needs} {module!r}, which is not installed: pip install 'slidesift[{extra}]'",
                hint,
            )
        )


class CohortError(SlidesiftError):
    """A cohort cannot run (repeated slide names, unreachable scheduler) or every slide failed."""


class OutputError(_FileFault):
    """An output file cannot be written (disk full, read-only folder, encoder failure)."""

    exit_code = 8
    what = "output"

    def _headline(self) -> str:
        return f"cannot write {str(self.path)!r}: {self.reason}"


class OutputLockedError(OutputError):
    """Another run (this process's other thread, or another process) writes the same folder.

    Parameters
    ----------
    path
        The output folder.
    holder
        Who holds it, in words (pid, host, command, start time), as its lock file says.
    hint
        What to do; the default says to wait or choose another folder.

    Notes
    -----
    Exit code 9, apart from :class:`OutputError`'s 8: the folder is fine, only busy, and a
    script may wait and try again.
    """

    exit_code = 9
    DEFAULT_HINT = (
        "wait for that run to finish, or write elsewhere (another --out); the lock is freed "
        "when its process exits, even when it is killed"
    )

    def __init__(self, path: PathLike, holder: str, hint: str | None = None) -> None:
        self.holder = holder
        hint = self.DEFAULT_HINT if hint is None else hint
        super().__init__(path, f"another run is writing it: {holder}", hint)

    def _headline(self) -> str:
        return f"output folder {str(self.path)!r} is in use: {self.reason}"


class WorkerDiedError(CohortError):
    """The process running a slide's task died (killed, out of memory, a crash in C code).

    Not raised by a cohort run: it is the ``error_type`` of that slide's ``failed`` row, after
    the task was tried again on another worker process and that one died too.

    Parameters
    ----------
    slide
        The slide's name.
    tries
        How many worker processes died running it.
    last_worker
        The address of the last one.
    """

    def __init__(self, slide: str, tries: int, last_worker: str) -> None:
        self.slide = slide
        self.tries = tries
        self.last_worker = last_worker
        super().__init__(
            f"the worker process running slide {slide!r} died, {tries} time(s) (last "
            f"{last_worker}): it was killed (kill -9, or the system's out-of-memory killer) or "
            "crashed in a C library such as OpenSlide on this slide's file"
            "\n  hint: check the slide (slidesift info SLIDE), the workers' memory and their "
            "logs; a rerun tries the slide again"
        )


class SlidesiftWarning(UserWarning):
    """Base class of slidesift's warnings: the CLI prints them as one ``warning:`` line."""


class NoTilesWarning(SlidesiftWarning):
    """No tile of a slide survived the sift: its mask is empty."""


class OutOfDomainWarning(SlidesiftWarning):
    """The slide looks unlike the model's training slides: the rails admit little of its
    tissue, its um/px or size is 2x or more from the training slides', or it has no MPP."""


class SelectionOnTestWarning(SlidesiftWarning):
    """Epochs are being chosen on test slides: their scores will then be optimistic."""


def require(module: str, extra: str, purpose: str, hint: str = "") -> None:
    """Raise :class:`MissingExtraError` unless ``module`` imports.

    Call it before the function-level ``import`` of an optional dependency, so that a missing
    extra gives one sentence naming ``pip install 'slidesift[extra]'`` rather than a bare
    ``ModuleNotFoundError``. The module stays imported (in ``sys.modules``), so the ``import``
    that follows costs nothing.
    """
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, extra, purpose, hint) from None


class ConfigError(SlidesiftError, ValueError):
    """An option has a value outside what the method allows.

    Parameters
    ----------
    name
        The option's name, as the user spells it (``tile``, ``overlap``, ...).
    value
        The value that was given.
    valid
        The values or range that would have been accepted.
    """

    exit_code = 2

    def __init__(self, name: str, value: object, valid: str) -> None:
        self.name = name
        self.value = value
        self.valid = valid
        super().__init__(f"invalid {name}={value!r}: {valid}")
