"""Entropy rails: the min and max entropy of tumor tiles, which sift every other tile.

Rails belong to a model: they are fitted on the training tumor tiles (all subtypes pooled), saved
beside the weights and applied to every slide the model segments (METHOD.md section 3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from slidesift.errors import ConfigError, DatasetError, RailsError
from slidesift.io.atomic import atomic_write_text
from slidesift.io.sniff import a_kind, file_kind

#: How tile entropy is measured: over all RGB values (the paper's code) or grey values.
EntropyMode = Literal["rgb", "gray"]

__all__ = [
    "EntropyMode",
    "Rails",
    "RailsAtSize",
    "fit_rails",
    "read_spread",
    "spread_from_json",
    "spread_to_json",
    "write_spread",
]

_RAILS_HINT = "give the rails JSON that `slidesift rails --out` writes"


def _unreadable(path: Path, exc: Exception) -> str:
    """Why a rails file cannot be read, naming what it is when it is something else."""
    kind = file_kind(path)
    if kind == "missing":
        return "no such file"
    if kind not in ("JSON", "text"):
        return f"this is {a_kind(kind)}, not rails JSON"
    return f"not valid JSON ({exc})"


@dataclass(frozen=True)
class Rails:
    """Entropy rails: a tile is kept when ``lo <= H <= hi``.

    Attributes
    ----------
    lo, hi
        Minimum and maximum entropy (bits) over the tumor tiles they were fitted on.
    entropy
        The entropy mode they were measured in (``rgb`` or ``gray``).
    tile
        Tile side T they were fitted at, when known.
    n_tiles
        How many tumor tiles they were fitted on.
    """

    lo: float
    hi: float
    entropy: EntropyMode = "rgb"
    tile: int | None = None
    n_tiles: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo <= self.hi):
            raise ConfigError("rails", (self.lo, self.hi), "finite lo <= hi, in bits")

    @property
    def spread(self) -> float:
        """``hi - lo`` in bits: the Fig. 5 diagnostic (wide spreads sift little)."""
        return self.hi - self.lo

    def admits(self, entropy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Bool array, same shape as ``entropy``: on or within the rails."""
        e = np.asarray(entropy)
        return np.asarray((e >= self.lo) & (e <= self.hi))

    def require_tile(self, tile: int) -> None:
        """Refuse tiles of another side than the rails were fitted at (unknown ``tile``: pass).

        Entropy grows with the tile side (a larger tile holds more distinct values, Fig. 5), so
        rails fitted at one T sift tiles of another T by the wrong limits, silently.

        Raises
        ------
        ConfigError
            ``tile`` is not :attr:`tile`.
        """
        if self.tile is not None and tile != self.tile:
            raise ConfigError(
                "tile",
                tile,
                f"the rails were fitted at T={self.tile}; sift at -T {self.tile}, or fit rails "
                f"at this T (slidesift rails -s SLIDE -t TRUTH ... -T {tile} --out rails.json)",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rails:
        """Inverse of :meth:`to_dict`, with clear errors for missing or bad fields."""
        try:
            return cls(
                lo=float(data["lo"]),
                hi=float(data["hi"]),
                entropy=data.get("entropy", "rgb"),
                tile=None if data.get("tile") is None else int(data["tile"]),
                n_tiles=int(data.get("n_tiles", 0)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # float(10**400)
            raise ConfigError("rails", data, "a mapping with numeric 'lo' and 'hi'") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the rails as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Rails:
        """Read rails written by :meth:`save`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: 5000-digit ints too
            raise RailsError(p, _unreadable(p, exc), _RAILS_HINT) from exc
        if not isinstance(data, dict):
            raise RailsError(p, "not a JSON object with 'lo' and 'hi'", _RAILS_HINT)
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise RailsError(p, f"{exc}", _RAILS_HINT) from exc

    def __str__(self) -> str:
        return (
            f"rails [{self.lo:.3f}, {self.hi:.3f}] bits ({self.entropy}, spread {self.spread:.3f})"
        )


def fit_rails(
    entropies: NDArray[np.float64] | Sequence[float],
    *,
    entropy: EntropyMode = "rgb",
    tile: int | None = None,
) -> Rails:
    """Rails from tumor-tile entropies: exactly their min and max.

    Parameters
    ----------
    entropies
        Entropies (bits) of the surviving tumor tiles, any shape.
    entropy
        Mode they were measured in.
    tile
        Tile side they were measured at.

    Raises
    ------
    DatasetError
        No tumor tile survived the background sift.
    """
    e = np.asarray(entropies, dtype=np.float64).ravel()
    if e.size == 0:
        raise DatasetError(
            "no tumor tile survived the background sift, so there is nothing to fit rails on; "
            "check that the masks mark tumor, or use a smaller tile"
        )
    return Rails(float(e.min()), float(e.max()), entropy, tile, int(e.size))


@dataclass(frozen=True)
class RailsAtSize:
    """Rails fitted at one tile size: a row of the Fig. 5 diagnostic."""

    tile: int
    rails: Rails | None

    @property
    def spread(self) -> float:
        """``hi - lo``, or NaN when no tumor tile survived at this size."""
        return self.rails.spread if self.rails else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: ``tile, n_tiles, lo, hi, spread, entropy``.

        ``lo``, ``hi``, ``spread`` and ``entropy`` are ``None`` (JSON ``null``) and ``n_tiles``
        is 0 when no tumor tile survived at this size.
        """
        r = self.rails
        return {
            "tile": self.tile,
            "n_tiles": r.n_tiles if r else 0,
            "lo": r.lo if r else None,
            "hi": r.hi if r else None,
            "spread": r.spread if r else None,
            "entropy": r.entropy if r else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RailsAtSize:
        """Inverse of :meth:`to_dict`; ``spread`` is recomputed, not trusted.

        Raises
        ------
        ConfigError
            ``tile`` is missing or not an integer, or ``lo``/``hi`` are not both numbers or
            both null.
        """
        valid = "an object with an integer 'tile' and numeric (or both null) 'lo' and 'hi'"
        if not isinstance(data, dict):
            raise ConfigError("rails spread row", data, valid)
        try:
            tile = data["tile"]
            if isinstance(tile, bool) or int(tile) != tile:
                raise ValueError(tile)
            lo: Any = data.get("lo")
            hi: Any = data.get("hi")
            if lo is None and hi is None:
                return cls(int(tile), None)
            rails = Rails(
                lo=float(lo),
                hi=float(hi),
                entropy=data.get("entropy") or "rgb",
                tile=int(tile),
                n_tiles=int(data.get("n_tiles") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("rails spread row", data, valid) from exc
        return cls(int(tile), rails)


def spread_to_json(rows: Sequence[RailsAtSize]) -> str:
    """The Fig. 5 rows as a JSON array of :meth:`RailsAtSize.to_dict` objects (one per size)."""
    return json.dumps([r.to_dict() for r in rows], indent=2) + "\n"


def spread_from_json(text: str) -> list[RailsAtSize]:
    """Inverse of :func:`spread_to_json`; also accepts ``{"rows": [...]}``.

    Raises
    ------
    ConfigError
        The text is not JSON, or not an array of rows (see :meth:`RailsAtSize.from_dict`).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("rails spread", text[:80], f"JSON ({exc})") from exc
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    if not isinstance(data, list):
        raise ConfigError(
            "rails spread", data, "a JSON array of {tile, n_tiles, lo, hi, spread} objects"
        )
    return [RailsAtSize.from_dict(row) for row in data]


def write_spread(path: str | os.PathLike[str], rows: Sequence[RailsAtSize]) -> Path:
    """Write :func:`spread_to_json` atomically."""
    return atomic_write_text(path, spread_to_json(rows))


def read_spread(path: str | os.PathLike[str]) -> list[RailsAtSize]:
    """Read rows written by :func:`write_spread` (``slidesift rails --spread-out``).

    Raises
    ------
    SlidesiftError
        The file cannot be read.
    ConfigError
        Its content is not a rails spread.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RailsError(
            p, _unreadable(p, exc), "give the JSON of slidesift rails --spread-out"
        ) from exc
    try:
        return spread_from_json(text)
    except ConfigError as exc:
        raise RailsError(
            p, f"not a rails spread: {exc}", "give the JSON of slidesift rails --spread-out"
        ) from exc
