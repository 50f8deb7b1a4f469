"""On-disk cache of downsampled slides and their truth, keyed by file content.

A training run reads every slide at N once; later runs (other tile sizes, more epochs, a resumed
run, DataLoader workers) map the cached ``.npy`` arrays instead of decoding the slide again.

Keys are BLAKE2b digests of the files' bytes, so a slide that is moved or renamed still hits
and a slide that is rewritten in place misses. Hashing a large slide takes a second or two; the
digest is remembered per ``(path, size, mtime)`` so that an unchanged file is hashed once.
Arrays are written atomically with :func:`numpy.save` and read with ``allow_pickle=False``.

Layout under the cache folder (default ``$SLIDESIFT_CACHE``, else ``$XDG_CACHE_HOME/slidesift``,
else ``~/.cache/slidesift``)::

    digests/<path-key>.txt         content digest of a file at a given size and mtime
    thumbs/<digest>-<target>.npy   (H, W, 3) uint8 pixels;  .json beside it: the Thumb's frame
    truth/<digest>-<digest>-<target>.npy  (H, W) bool tumor mask on that thumbnail's grid
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slidesift.io.atomic import atomic_write, atomic_write_text
from slidesift.io.slide import Thumb

__all__ = ["ThumbCache", "default_cache_dir", "file_digest", "file_identity", "partial_digest"]

_CHUNK = 1 << 22
#: :func:`partial_digest` reads files up to this size whole.
PARTIAL_WHOLE = 8 << 20
#: Bytes it reads at each end of a larger file, and the size and number of blocks between.
PARTIAL_EDGE, PARTIAL_BLOCK, PARTIAL_SAMPLES = 1 << 20, 64 << 10, 16


def default_cache_dir() -> Path:
    """``$SLIDESIFT_CACHE``, else ``$XDG_CACHE_HOME/slidesift``, else ``~/.cache/slidesift``."""
    env = os.environ.get("SLIDESIFT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "slidesift"


def file_digest(path: str | os.PathLike[str]) -> str:
    """Hex BLAKE2b-128 digest of a file's bytes (read in 4 MiB chunks)."""
    h = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def partial_digest(path: str | os.PathLike[str]) -> str:
    """Hex BLAKE2b-128 digest of a file's size and some of its bytes: a fast identity check.

    Files up to :data:`PARTIAL_WHOLE` (8 MiB) are read whole. Of a larger file it reads the
    first and the last MiB and :data:`PARTIAL_SAMPLES` (16) blocks of 64 KiB evenly spaced
    between them: 3 MiB whatever the size, a few milliseconds from a warm disk.

    A rewritten slide (rescanned, re-encoded, another file copied over it) differs in its
    header, its tail and nearly every sampled block; so does a mask or annotation (small:
    hashed whole). What it cannot see: a change confined to bytes it does not read, in a file
    over 8 MiB whose size stays the same. Callers pair it with the file's size and mtime.
    """
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    with p.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        if size <= PARTIAL_WHOLE:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
            return h.hexdigest()
        h.update(fh.read(PARTIAL_EDGE))
        span = size - 2 * PARTIAL_EDGE - PARTIAL_BLOCK
        for i in range(PARTIAL_SAMPLES):
            fh.seek(PARTIAL_EDGE + span * i // (PARTIAL_SAMPLES - 1))
            h.update(fh.read(PARTIAL_BLOCK))
        fh.seek(size - PARTIAL_EDGE)
        h.update(fh.read(PARTIAL_EDGE))
    return h.hexdigest()


def file_identity(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """Size, mtime (ns) and :func:`partial_digest` of a file: what tells that it changed.

    Parameters
    ----------
    path
        The file; ``None`` gives ``None``.

    Returns
    -------
    dict or None
        ``{"size", "mtime_ns", "partial_blake2b"}`` (plain JSON values), or ``{"error": ...}``
        when the file cannot be read now (its task reports why).
    """
    if path is None:
        return None
    try:
        st = os.stat(path)
        return {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "partial_blake2b": partial_digest(path),
        }
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc.strerror or exc}"}


def _target_key(longest: int | None, mpp: float | None) -> str:
    return f"N{longest}" if longest is not None else f"mpp{mpp:g}"


def _save_npy(path: Path, array: NDArray[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    atomic_write(path, write)


def _load_npy(path: Path) -> NDArray[Any] | None:
    """The array at ``path`` (memory-mapped), or ``None`` when absent or unreadable."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


class ThumbCache:
    """Cached thumbnails and truth masks in one folder.

    Parameters
    ----------
    root
        Cache folder; created on first write. ``None``: :func:`default_cache_dir`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"ThumbCache({str(self.root)!r})"

    def digest(self, path: str | os.PathLike[str]) -> str:
        """Content digest of ``path``, remembered per (absolute path, size, mtime)."""
        p = Path(path).resolve()
        st = p.stat()
        stamp = f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode()
        memo = self.root / "digests" / (hashlib.blake2b(stamp, digest_size=16).hexdigest() + ".txt")
        try:
            known = memo.read_text(encoding="ascii").strip()
            if len(known) == 32:
                return known
        except OSError:
            pass
        value = file_digest(p)
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, value + "\n")
        return value

    def thumb(
        self,
        slide_path: str | os.PathLike[str],
        read: Callable[[], Thumb],
        *,
        longest: int | None = None,
        mpp: float | None = None,
    ) -> tuple[Thumb, str]:
        """The slide's thumbnail at ``longest``/``mpp``, from the cache or from ``read()``.

        Parameters
        ----------
        slide_path
            The slide file (its bytes make the key).
        read
            Reads the thumbnail when it is not cached (e.g. ``open_slide`` + ``read_thumb``).
        longest, mpp
            The target, as passed to :func:`slidesift.io.slide.read_thumb` (part of the key).

        Returns
        -------
        (Thumb, str)
            The thumbnail (pixels memory-mapped read-only when cached) and its cache key.
        """
        key = f"{self.digest(slide_path)}-{_target_key(longest, mpp)}"
        npy = self.root / "thumbs" / f"{key}.npy"
        meta_path = npy.with_suffix(".json")
        pixels = _load_npy(npy)
        if pixels is not None and meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                return (
                    Thumb(
                        pixels,
                        tuple(meta["l0_size"]),
                        tuple(meta["scale"]),
                        int(meta["level"]),
                        None if meta["mpp"] is None else tuple(meta["mpp"]),
                        str(Path(slide_path)),
                        normalized=meta.get("normalized"),
                    ),
                    key,
                )
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged entry is simply rebuilt
        thumb = read()
        _save_npy(npy, thumb.pixels)
        meta = {
            "l0_size": list(thumb.l0_size),
            "scale": list(thumb.scale),
            "level": thumb.level,
            "mpp": None if thumb.mpp is None else list(thumb.mpp),
            "normalized": thumb.normalized,
        }
        atomic_write_text(meta_path, json.dumps(meta) + "\n")
        return thumb, key

    def truth(
        self,
        annotation_path: str | os.PathLike[str],
        thumb_key: str,
        read: Callable[[], NDArray[np.bool_]],
    ) -> NDArray[np.bool_]:
        """The tumor mask of ``annotation_path`` on the grid of the thumbnail ``thumb_key``.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` bool, memory-mapped read-only when cached.
        """
        key = f"{self.digest(annotation_path)}-{thumb_key}"
        npy = self.root / "truth" / f"{key}.npy"
        mask = _load_npy(npy)
        if mask is not None and mask.dtype == np.bool_:
            return mask
        fresh = np.asarray(read(), dtype=bool)
        _save_npy(npy, fresh)
        return fresh

    def array(self, key: str, make: Callable[[], NDArray[Any]]) -> NDArray[Any]:
        """Any derived array (e.g. a stain-normalised thumbnail) under ``derived/<key>.npy``."""
        npy = self.root / "derived" / f"{key}.npy"
        cached = _load_npy(npy)
        if cached is not None:
            return cached
        fresh = make()
        _save_npy(npy, fresh)
        return fresh
