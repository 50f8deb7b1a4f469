"""One exception family for everything slidesift refuses.

Every error says what was wrong, with the offending value, and what to do about it. The CLI prints
``str(error)`` and exits with a meaningful code; library users can catch :class:`SlidesiftError`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AnnotationError",
    "ConfigError",
    "SlideReadError",
    "SlidesiftError",
]


class SlidesiftError(Exception):
    """Base class of every error slidesift raises on purpose."""

    #: Process exit code the CLI uses for this kind of error.
    exit_code: int = 1


class SlideReadError(SlidesiftError):
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

    def __init__(self, path: str | Path, reason: str, hint: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.hint = hint
        text = f"cannot read slide {str(self.path)!r}: {reason}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


class AnnotationError(SlidesiftError):
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

    def __init__(self, path: str | Path | None, reason: str, hint: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.reason = reason
        self.hint = hint
        where = f"annotation {str(self.path)!r}" if self.path is not None else "annotation"
        text = f"bad {where}: {reason}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


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
