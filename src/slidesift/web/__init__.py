"""Segmentation in the browser: a checkpoint as a static page (``slidesift export --web``).

:func:`export_web` writes ``index.html``, the page's scripts, the fp32 ONNX network and
onnxruntime-web's WebAssembly runtime into one folder that any static http server serves.
The page reads a thumbnail, sifts its tiles exactly as :func:`slidesift.sift.measure_tiles`
and :func:`slidesift.sift.sift` do, classifies the kept tiles and draws the mask; nothing leaves
the page. The runtime is fetched once at setup (``make web-runtime``), see
:mod:`slidesift.web.runtime`.
"""

from slidesift.web.export import export_web, is_web_export
from slidesift.web.runtime import (
    ORT_WEB_VERSION,
    RUNTIME_ENV,
    WebRuntimeError,
    default_runtime_dir,
    find_runtime,
)

__all__ = [
    "ORT_WEB_VERSION",
    "RUNTIME_ENV",
    "WebRuntimeError",
    "default_runtime_dir",
    "export_web",
    "find_runtime",
    "is_web_export",
]
