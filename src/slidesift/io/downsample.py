"""How far a slide is downsampled: a longest side N in px, or a resolution in um/px.

One value type, validated where it is made, so a command, a tile set, a checkpoint and the
slide reader cannot read the choice in different ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slidesift.errors import ConfigError

__all__ = ["DEFAULT_LONGEST", "Downsample"]

#: The paper's N for PAIP2020, and the default everywhere a target is not given.
DEFAULT_LONGEST = 6000


@dataclass(frozen=True)
class Downsample:
    """A downsample target: exactly one of ``longest`` (px) or ``mpp`` (microns per px).

    ``longest=N`` never upsamples: a slide smaller than N is read at level 0. ``mpp`` finer
    than the scan is clamped to level 0.

    Attributes
    ----------
    longest
        Longer side of the thumbnail in px (the paper's N: 6000 PAIP2020, 15000 CAMELYON16).
    mpp
        Microns per thumbnail px (needs the slide's MPP metadata).
    """

    longest: int | None = None
    mpp: float | None = None

    def __post_init__(self) -> None:
        if (self.longest is None) == (self.mpp is None):
            raise ConfigError(
                "longest/mpp",
                (self.longest, self.mpp),
                "give exactly one: a longest side N in px (-N 6000) or microns per px (--mpp 4)",
            )
        if self.longest is not None:
            n = self.longest
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError("longest", n, "a positive number of pixels, e.g. 6000")
        if self.mpp is not None:
            x = self.mpp
            if (
                isinstance(x, bool)
                or not isinstance(x, (int, float))
                or not (math.isfinite(x) and x > 0)
            ):
                raise ConfigError("mpp", x, "a positive number of microns per pixel, e.g. 4.0")

    @classmethod
    def of(cls, longest: int | None = None, mpp: float | None = None) -> Downsample:
        """From command-line options where both may be absent: then N = 6000.

        Raises
        ------
        ConfigError
            Both are given (``-N 1500 --mpp 2`` is ambiguous, not "the um/px wins").
        """
        if longest is None and mpp is None:
            return cls(longest=DEFAULT_LONGEST)
        return cls(longest=longest, mpp=float(mpp) if mpp is not None else None)

    def to_dict(self) -> dict[str, Any]:
        """``{"longest": N}`` or ``{"mpp": X}``: the keyword arguments of ``read_thumb``."""
        if self.mpp is not None:
            return {"mpp": float(self.mpp)}
        return {"longest": int(self.longest or 0)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Downsample:
        """Inverse of :meth:`to_dict`; also accepts both keys with one of them null."""
        mpp = data.get("mpp")
        if mpp is not None:
            return cls(mpp=float(mpp))
        longest = data.get("longest")
        return cls(longest=int(longest) if longest is not None else None)

    def factor(self, l0_size: tuple[int, int], slide_mpp: float | None, name: str = "") -> float:
        """Level-0 px per thumbnail px (>= 1) for a slide of ``(w, h)`` level-0 px.

        Raises
        ------
        ConfigError
            ``mpp`` is asked of a slide without MPP metadata.
        """
        if self.longest is not None:
            return max(1.0, max(l0_size) / self.longest)
        assert self.mpp is not None
        if slide_mpp is None:
            raise ConfigError(
                "mpp",
                self.mpp,
                f"{name or 'the slide'} carries no MPP metadata; downsample by size instead "
                "(longest=N, e.g. 6000)",
            )
        return max(1.0, self.mpp / slide_mpp)

    def target_size(
        self, l0_size: tuple[int, int], slide_mpp: float | None, name: str = ""
    ) -> tuple[int, int]:
        """``(w, h)`` of the thumbnail: ``round(l0 / factor)`` per axis, at least 1."""
        factor = self.factor(l0_size, slide_mpp, name)
        return (max(1, round(l0_size[0] / factor)), max(1, round(l0_size[1] / factor)))

    def __str__(self) -> str:
        return f"{self.mpp:g} um/px" if self.mpp is not None else f"N {self.longest}"
