"""Where graphs derived from a checkpoint live: ``<cache>/onnx/<checkpoint digest>/``.

Nothing is ever written beside a checkpoint (its folder may be read-only or shared). A model
bundle (:mod:`slidesift.bundle`) is keyed by its source checkpoint's digest, and its graphs are
placed here when first used (:func:`provide_graph`), so every reader of the cache finds them as
if they had been exported on this machine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from slidesift.cache import default_cache_dir
from slidesift.checkpoint import Checkpoint

__all__ = ["checkpoint_digest", "onnx_cache_dir", "provide_graph"]


def checkpoint_digest(checkpoint: Checkpoint) -> str:
    """BLAKE2b-128 of the checkpoint file (of its tensors when built in memory); a bundle's
    source checkpoint digest."""
    if checkpoint.source_digest is not None:  # a bundle: keyed by its source checkpoint
        return checkpoint.source_digest
    if checkpoint.path is not None and checkpoint.path.exists():
        return hashlib.blake2b(checkpoint.path.read_bytes(), digest_size=16).hexdigest()
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(checkpoint.state):
        h.update(k.encode())
        value = checkpoint.state[k]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        h.update(array.tobytes())
    return h.hexdigest()


def onnx_cache_dir(checkpoint: Checkpoint, root: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/onnx/<checkpoint digest>``: where graphs derived from ``checkpoint`` live.

    ``root`` defaults to :func:`slidesift.cache.default_cache_dir`. Nothing is ever written
    beside a checkpoint: its folder may be read-only or shared.
    """
    base = Path(root) if root is not None else default_cache_dir()
    return base / "onnx" / checkpoint_digest(checkpoint)


def provide_graph(checkpoint: Checkpoint, path: Path) -> None:
    """Place a model bundle's copy of the graph named ``path.name`` at ``path`` (in the ONNX
    cache), unless the same bytes are there already; nothing for a checkpoint."""
    data = checkpoint.graphs.get(path.name)
    if data is None:
        return
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    from slidesift.io.atomic import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
