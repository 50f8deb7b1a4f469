"""The page's runtime: onnxruntime-web at a pinned version, found on disk and checked by hash.

The runtime (about 15 MB of WebAssembly) is not part of slidesift's wheel nor of its git
repository: it is fetched once at setup time with npm (``make web-runtime``, or ``npm pack
onnxruntime-web@1.31.1``) and copied into each exported page. :func:`find_runtime` looks, in
order, at the ``runtime`` argument, ``$SLIDESIFT_ORT_WEB`` and
``<slidesift cache>/onnxruntime-web/1.31.1/``; each may be the ``.tgz`` that ``npm pack``
writes, a folder holding it, the unpacked package folder or its ``dist/``. The version in
``package.json`` and the SHA-256 of every file copied must match :data:`PINNED`: another
build of the runtime could run the network differently from the one the page was tested on.
Nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slidesift.cache import default_cache_dir
from slidesift.errors import SlidesiftError

__all__ = [
    "ORT_WEB_VERSION",
    "PINNED",
    "RUNTIME_ENV",
    "Runtime",
    "WebRuntimeError",
    "default_runtime_dir",
    "find_runtime",
]

#: The onnxruntime-web release the page is written and tested against.
ORT_WEB_VERSION = "1.31.1"
#: Environment variable naming the runtime (a .tgz, the package folder or its dist/).
RUNTIME_ENV = "SLIDESIFT_ORT_WEB"
#: SHA-256 of the files the page needs, by name in the package's ``dist/``: the WebAssembly
#: build only (the ES module with its Emscripten glue bundled, and the SIMD binary).
PINNED: dict[str, str] = {
    "ort.wasm.bundle.min.mjs": "51bd7168175767324ab0acfcfc4ca94a096a3826e3ebac9ccc4f195eb865f8dd",
    "ort-wasm-simd-threaded.wasm": (
        "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d"
    ),
}
_TGZ = f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"


class WebRuntimeError(SlidesiftError):
    """The page's runtime (onnxruntime-web) is missing, of another version, or damaged.

    Parameters
    ----------
    path
        Where it was looked for or found (``None``: nowhere in particular).
    reason
        What is wrong, in words.
    hint
        What to do: the commands that fetch it.
    """

    exit_code = 7  # a dependency is missing, as MissingExtraError

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, hint: str = "") -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        self.hint = hint or fetch_hint()
        where = f" at {str(self.path)!r}" if self.path is not None else ""
        super().__init__(f"cannot use onnxruntime-web{where}: {reason}\n  hint: {self.hint}")


def default_runtime_dir() -> Path:
    """``<slidesift cache>/onnxruntime-web/<version>/``, where ``make web-runtime`` puts it."""
    return default_cache_dir() / "onnxruntime-web" / ORT_WEB_VERSION


def fetch_hint() -> str:
    """The commands that fetch the runtime into :func:`default_runtime_dir` (setup time)."""
    d = default_runtime_dir()
    return (
        f"fetch it once with npm: `make web-runtime`, or `mkdir -p {d} && npm pack "
        f"onnxruntime-web@{ORT_WEB_VERSION} --pack-destination {d}`; or pass the .tgz that "
        f"`npm pack onnxruntime-web@{ORT_WEB_VERSION}` writes (or the unpacked package) as "
        f"--runtime PATH / runtime=PATH, or set {RUNTIME_ENV}=PATH"
    )


@dataclass(frozen=True)
class Runtime:
    """A located runtime, not yet checked.

    Attributes
    ----------
    source
        The ``.tgz`` or the ``dist/`` folder the files are read from.
    kind
        ``tgz`` or ``folder``.
    package_json
        The package's ``package.json`` (a member name inside a ``.tgz``), or ``None`` for a
        bare ``dist/`` folder (then the pinned hashes alone vouch for the files).
    origin
        How it was found: ``runtime=``, ``$SLIDESIFT_ORT_WEB`` or ``cache``.
    """

    source: Path
    kind: Literal["tgz", "folder"]
    package_json: str | None
    origin: str

    def read(self) -> dict[str, bytes]:
        """The pinned files' bytes, after checking the version and every file's SHA-256.

        Raises
        ------
        WebRuntimeError
            Another version, a missing file, a hash that differs from :data:`PINNED`, or an
            unreadable archive.
        """
        try:
            if self.kind == "tgz":
                meta, files = self._read_tgz()
            else:
                meta, files = self._read_folder()
        except (OSError, tarfile.TarError, EOFError) as exc:  # EOFError: a truncated .tgz
            raise WebRuntimeError(self.source, f"it cannot be read ({exc})") from exc
        if meta is not None:
            self._check_version(meta)
        for name, expected in PINNED.items():
            data = files.get(name)
            if data is None:
                raise WebRuntimeError(
                    self.source, f"it has no dist/{name}: not the onnxruntime-web package"
                )
            got = hashlib.sha256(data).hexdigest()
            if got != expected:
                raise WebRuntimeError(
                    self.source,
                    f"dist/{name} has SHA-256 {got[:16]}..., not onnxruntime-web "
                    f"{ORT_WEB_VERSION}'s {expected[:16]}...: damaged, or another build",
                )
        return files

    def _check_version(self, meta: bytes) -> None:
        try:
            version = json.loads(meta).get("version")
        except (ValueError, AttributeError) as exc:
            raise WebRuntimeError(self.source, f"its package.json is not valid ({exc})") from exc
        if version != ORT_WEB_VERSION:
            raise WebRuntimeError(
                self.source,
                f"it is onnxruntime-web {version}, and the page is pinned to {ORT_WEB_VERSION}",
            )

    def _read_tgz(self) -> tuple[bytes | None, dict[str, bytes]]:
        wanted = {f"package/dist/{name}": name for name in PINNED}
        files: dict[str, bytes] = {}
        meta: bytes | None = None
        with tarfile.open(self.source, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name == "package/package.json" or member.name in wanted:
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    data = fh.read()
                    if member.name == "package/package.json":
                        meta = data
                    else:
                        files[wanted[member.name]] = data
        if meta is None:
            raise WebRuntimeError(
                self.source, "it has no package/package.json: not a .tgz that npm pack wrote"
            )
        return meta, files

    def _read_folder(self) -> tuple[bytes | None, dict[str, bytes]]:
        meta = Path(self.package_json).read_bytes() if self.package_json else None
        files = {
            name: (self.source / name).read_bytes()
            for name in PINNED
            if (self.source / name).is_file()
        }
        return meta, files


def _locate(path: Path, origin: str) -> Runtime | None:
    """The runtime at ``path`` in any of its accepted forms, or ``None`` when there is none."""
    if path.is_file():
        return Runtime(path, "tgz", "package/package.json", origin)
    if not path.is_dir():
        return None
    if (path / _TGZ).is_file():  # the folder npm pack --pack-destination wrote into
        return Runtime(path / _TGZ, "tgz", "package/package.json", origin)
    for package in (path, path / "package"):  # the package folder, or where a .tgz was unpacked
        if (package / "package.json").is_file() and (package / "dist").is_dir():
            return Runtime(package / "dist", "folder", str(package / "package.json"), origin)
    if any((path / name).is_file() for name in PINNED):  # a dist/ folder
        parent = path.parent / "package.json"
        return Runtime(path, "folder", str(parent) if parent.is_file() else None, origin)
    return None


def find_runtime(runtime: str | os.PathLike[str] | None = None) -> Runtime:
    """Locate onnxruntime-web: ``runtime``, else ``$SLIDESIFT_ORT_WEB``, else the cache.

    A path that is given (argument or variable) must hold the runtime: there is no falling
    back from a wrong path to another place.

    Parameters
    ----------
    runtime
        The ``.tgz`` from ``npm pack onnxruntime-web@1.31.1``, a folder holding it, the
        unpacked package folder, or its ``dist/``.

    Returns
    -------
    Runtime
        Located, not yet checked (:meth:`Runtime.read` checks).

    Raises
    ------
    WebRuntimeError
        Nothing found, with the commands that fetch it.
    """
    if runtime is not None:
        where, origin = Path(runtime).expanduser(), "runtime="
    elif os.environ.get(RUNTIME_ENV):
        where, origin = Path(os.environ[RUNTIME_ENV]).expanduser(), f"${RUNTIME_ENV}"
    else:
        where, origin = default_runtime_dir(), "cache"
    found = _locate(where, origin)
    if found is not None:
        return found
    if origin == "cache":
        reason = (
            f"onnxruntime-web {ORT_WEB_VERSION}, the runtime the page needs, is not there, "
            f"and neither --runtime nor ${RUNTIME_ENV} names one"
        )
    elif not where.exists():
        reason = f"no such file or folder (from {origin})"
    else:
        reason = (
            f"no onnxruntime-web there (from {origin}): expected {_TGZ}, the package folder "
            "or its dist/"
        )
    raise WebRuntimeError(where, reason)


def main(argv: list[str] | None = None) -> int:
    """``python -m slidesift.web dir|check``: print the cache folder, or check the runtime
    found (what ``make web-runtime`` runs after ``npm pack``)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["dir"]:
        print(default_runtime_dir())
        return 0
    if args == ["check"]:
        try:
            found = find_runtime()
            files = found.read()
        except WebRuntimeError as exc:
            print(exc, file=sys.stderr)
            return exc.exit_code
        size = sum(len(b) for b in files.values()) / 1e6
        print(f"onnxruntime-web {ORT_WEB_VERSION} at {found.source}: {size:.1f} MB to copy, ok")
        return 0
    print("usage: python -m slidesift.web dir|check", file=sys.stderr)
    return 2
