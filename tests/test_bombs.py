"""Resource bombs: files that claim sizes no machine holds end in a clear error, fast and small.

Each bomb is opened in a child process (a ``python -c`` snippet) whose own peak RSS comes from
``os.wait4``; it must raise the documented error naming the claimed size and the limit, with a
peak under 2 GB. The child's address space is capped (``RLIMIT_AS``) so that a missing guard
fails the test with a ``MemoryError`` instead of taking the machine's memory, and a child that
hangs is killed after :data:`TIMEOUT` seconds (a guard that refuses answers in about a second;
no test asserts a time otherwise). Next to each bomb, a legitimate large file passes the limit.

The bombs are real files that are small on disk: a tiled TIFF whose one deflate tile is listed
for every grid position, a PNG whose IHDR claims 100,000 x 100,000 px followed by a short IDAT,
sparse files made with ``truncate`` for the gigabyte-sized ones.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import slidesift

#: Seconds a child may run before it is killed (only so a broken guard cannot hang CI).
TIMEOUT = 60.0
#: Peak resident memory a bomb may cost the process that meets it.
PEAK_MAX = 2 * 2**30
#: Address space a child may map: room for its imports, not for what a bomb claims.
_CHILD_AS = 6 * 2**30
_SRC = Path(slidesift.__file__).resolve().parents[1]

_PRELUDE = """
import json, sys, time
t0 = time.perf_counter()
args = sys.argv[1:]
try:
{body}
    out = {{"ok": True, "result": result}}
except Exception as exc:
    out = {{"ok": False, "type": type(exc).__name__, "message": str(exc)}}
out["seconds"] = time.perf_counter() - t0
with open("/proc/self/status") as status:  # VmHWM: this interpreter's own peak, since exec
    out["hwm"] = [int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM")][0]
print(json.dumps(out, default=str))
"""


def run_child(body: str, *args: object, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``body`` (sets ``result``) in a fresh interpreter; its outcome, peak RSS and time.

    Returns
    -------
    dict
        ``ok``, then ``type``/``message`` of the exception or ``result``; ``seconds`` (inside
        the child), ``peak`` (bytes, the child's ``ru_maxrss`` from ``wait4``: an upper bound,
        it counts the pages shared with pytest before ``exec``), ``hwm`` (bytes, ``VmHWM``
        after ``exec``) and ``wall`` (seconds).
    """
    script = _PRELUDE.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_CHILD_AS, _CHILD_AS))

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        preexec_fn=cap,
    )
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > TIMEOUT:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            pytest.fail(f"the child ran over {TIMEOUT:.0f} s: a hang, not a clear error")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.communicate()
    lines = stdout.decode().strip().splitlines()
    assert proc.returncode == 0 and lines, f"child died ({proc.returncode}): {stderr.decode()}"
    out: dict[str, Any] = json.loads(lines[-1])
    out["peak"] = usage.ru_maxrss * 1024
    out["wall"] = time.perf_counter() - start
    return out


def assert_refused(out: dict[str, Any], kind: str, *words: str) -> None:
    """The child raised ``kind`` with every one of ``words``, in under 2 GB."""
    assert not out["ok"], f"no error: {out}"
    assert out["type"] == kind, out
    for word in words:
        assert word in out["message"], (word, out["message"])
    assert out["peak"] < PEAK_MAX, f"peak RSS {out['peak'] / 2**20:.0f} MB"
    print(
        f"{kind}: peak {out['peak'] / 2**20:.0f} MB (VmHWM {out['hwm'] / 2**20:.0f} MB), "
        f"{out['seconds']:.2f} s in the child, {out['wall']:.2f} s wall"
    )


# --- bomb builders ----------------------------------------------------------------------------


def _tags(entries: list[tuple[int, int, int, int]]) -> bytes:
    """A TIFF IFD body: ``(tag, type, count, value_or_offset)`` sorted; SHORT values inline."""
    out = struct.pack("<H", len(entries))
    for tag, typ, count, value in sorted(entries):
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    return out


def write_tiled_tiff(
    path: Path, sizes: list[tuple[int, int]], tile: int = 1024, data: bytes | None = None
) -> Path:
    """A tiled RGB TIFF with one IFD per ``(w, h)`` in ``sizes``: every tile the same white one.

    The file holds one deflated tile (``data``, when given, instead) and per level its offset
    and byte count repeated for every grid position, so it claims ``sizes`` in a few MB;
    OpenSlide reads it as generic TIFF.
    """
    if data is None:
        data = zlib.compress(np.full((tile, tile, 3), 255, np.uint8).tobytes(), 9)
    blob = bytearray(b"II*\x00\x00\x00\x00\x00")
    blob += struct.pack("<HHH", 8, 8, 8)
    bps, tile_at = 8, 14
    blob += data
    next_link = 4
    for i, (w, h) in enumerate(sizes):
        n = -(-w // tile) * -(-h // tile)
        offs_at = len(blob)
        blob += np.full(n, tile_at, "<u4").tobytes()
        counts_at = len(blob)
        blob += np.full(n, len(data), "<u4").tobytes()
        blob += b"\x00" * (len(blob) % 2)
        ifd_at = len(blob)
        blob[next_link : next_link + 4] = struct.pack("<I", ifd_at)
        tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, bps), (259, 3, 1, 8),
                (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 4, 1, tile),
                (323, 4, 1, tile), (324, 4, n, offs_at), (325, 4, n, counts_at)]  # fmt: skip
        if n == 1:  # one value is stored in the entry itself, not pointed to
            tags[-2:] = [(324, 4, 1, tile_at), (325, 4, 1, len(data))]
        if i:
            tags.append((254, 4, 1, 1))  # NewSubfileType: reduced resolution (a pyramid level)
        blob += _tags(tags)
        next_link = len(blob)
        blob += b"\x00\x00\x00\x00"
    path.write_bytes(bytes(blob))
    return path


def write_striped_tiff(path: Path, w: int, h: int) -> Path:
    """A non-tiled grey TIFF claiming ``w x h`` px in one strip of a few bytes (not OpenSlide's)."""
    strip = zlib.compress(b"\x00" * 4096)
    blob = bytearray(b"II*\x00" + struct.pack("<I", 8 + len(strip)))
    blob += strip
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
            (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, len(strip))]  # fmt: skip
    blob += _tags(tags) + b"\x00\x00\x00\x00"
    path.write_bytes(bytes(blob))
    return path


def write_png_bomb(path: Path, w: int, h: int) -> Path:
    """A PNG whose IHDR claims ``w x h`` RGB px; its IDAT holds 16 rows of the zeros it inflates."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * w) * 16, 9)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def write_sparse(path: Path, head: bytes, size: int) -> Path:
    """``head`` followed by zeros up to ``size`` bytes, without writing them (a sparse file)."""
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def write_safetensors_raw(path: Path, header: dict[str, Any], data: bytes = b"") -> Path:
    """A safetensors file from a header mapping and the bytes after it."""
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)
    return path


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2000 x 1500 px PNG slide (plain image, read whole)."""
    path = tmp_path_factory.mktemp("slide") / "slide.png"
    rgb = np.full((1500, 2000, 3), 230, np.uint8)
    rgb[500:1000, 600:1400] = (150, 60, 120)
    Image.fromarray(rgb).save(path)
    return path


_THUMB = """
from slidesift.io.annotations import read_mask
from slidesift.io.slide import open_slide, read_thumb
with open_slide(args[0]) as slide:
    thumb = read_thumb(slide, longest=500)
"""


# --- TIFF claiming 1,000,000 x 1,000,000 px ---------------------------------------------------


@pytest.mark.parametrize("reader", ["auto", "openslide"])
def test_tiled_tiff_of_a_million_px_square_is_refused_before_its_level_is_read(
    tmp_path: Path, reader: str
) -> None:
    bomb = write_tiled_tiff(tmp_path / "huge.tif", [(1_000_000, 1_000_000)])
    assert bomb.stat().st_size < 10 * 2**20
    out = run_child(
        f"""
        from slidesift.io.slide import open_slide, read_thumb
        with open_slide(args[0]) as slide:
            opened = slide.format, slide.level_dimensions
            result = read_thumb(slide, longest=6000, reader={reader!r}).size
        """,
        bomb,
    )
    assert_refused(
        out, "SlideReadError", "huge.tif", "1000000 x 1000000 px", "4,294,967,296",
        "SLIDESIFT_MAX_READ_PIXELS", "pyramid",
    )  # fmt: skip


def test_tiff_of_one_giant_tile_is_refused_before_the_tile_is_decoded(tmp_path: Path) -> None:
    """65536 x 65536 px in one tile: within the read limit, but OpenSlide would take 16 GiB."""
    short = zlib.compress(b"\xff" * 2**20)  # the tile's stream is cut short: only the header counts
    bomb = write_tiled_tiff(tmp_path / "onetile.tif", [(65536, 65536)], tile=65536, data=short)
    body = "from slidesift.io.slide import open_slide\nresult = open_slide(args[0]).dimensions"
    out = run_child(body, bomb)
    assert_refused(
        out, "SlideReadError", "onetile.tif", "tiles of 65536 x 65536 px", "200,000,000",
        "SLIDESIFT_MAX_IMAGE_PIXELS",
    )  # fmt: skip


def test_pyramid_with_a_large_level_0_and_a_small_level_reads_the_small_one(
    tmp_path: Path,
) -> None:
    """100,000 px square at level 0 (over the read limit) with a 2048-px level: fine."""
    ok = write_tiled_tiff(tmp_path / "pyramid.tif", [(100_000, 100_000), (2048, 2048)])
    out = run_child(
        """
        from slidesift.io.slide import open_slide, read_thumb
        with open_slide(args[0]) as slide:
            thumb = read_thumb(slide, longest=2000)
            result = [thumb.level, list(thumb.size), int(thumb.pixels.min())]
        """,
        ok,
    )
    assert out["ok"], out
    assert out["result"] == [1, [2000, 2000], 255]
    assert out["peak"] < PEAK_MAX


def test_plain_tiff_of_a_million_px_square_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = write_striped_tiff(tmp_path / "flat.tif", 1_000_000, 1_000_000)
    out = run_child(
        """
        from slidesift.io.slide import open_slide
        result = open_slide(args[0]).dimensions
        """,
        bomb,
    )
    assert_refused(
        out, "SlideReadError", "flat.tif", "1000000 x 1000000 px", "200,000,000",
        "SLIDESIFT_MAX_IMAGE_PIXELS",
    )  # fmt: skip


# --- PNG decompression bomb -------------------------------------------------------------------


def test_png_bomb_as_slide_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = write_png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 64 * 1024
    out = run_child(
        """
        from slidesift.io.slide import open_slide
        result = open_slide(args[0]).dimensions
        """,
        bomb,
    )
    assert_refused(
        out, "SlideReadError", "bomb.png", "100000 x 100000 px", "SLIDESIFT_MAX_IMAGE_PIXELS"
    )


def test_png_bomb_as_mask_is_refused_from_its_header(tmp_path: Path, small_slide: Path) -> None:
    bomb = write_png_bomb(tmp_path / "bomb_mask.png", 200_000, 150_000)
    out = run_child(_THUMB + "result = read_mask(args[1], thumb).shape", small_slide, bomb)
    assert_refused(
        out, "AnnotationError", "bomb_mask.png", "200000 x 150000 px", "100 times", "2000 x 1500"
    )


def test_plain_image_limit_is_the_environment_variable(tmp_path: Path) -> None:
    png = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(png)
    body = """
    from slidesift.io.slide import open_slide
    result = list(open_slide(args[0]).dimensions)
    """
    refused = run_child(body, png, env={"SLIDESIFT_MAX_IMAGE_PIXELS": "10000"})
    assert_refused(refused, "SlideReadError", "120 x 100 px", "10,000")
    allowed = run_child(body, png, env={"SLIDESIFT_MAX_IMAGE_PIXELS": "12000"})
    assert allowed["ok"] and allowed["result"] == [120, 100], allowed
    bad = run_child(body, png, env={"SLIDESIFT_MAX_IMAGE_PIXELS": "lots"})
    assert bad["type"] == "ConfigError" and "SLIDESIFT_MAX_IMAGE_PIXELS" in bad["message"]


# --- a mask 100 x the slide -------------------------------------------------------------------


def test_mask_a_hundred_times_the_slide_is_refused_before_it_is_read(
    tmp_path: Path, small_slide: Path
) -> None:
    """A tiled mask OpenSlide opens: reading its level 0 band by band would take hours."""
    bomb = write_tiled_tiff(tmp_path / "mask.tif", [(200_000, 150_000)])
    out = run_child(_THUMB + "result = read_mask(args[1], thumb).shape", small_slide, bomb)
    assert_refused(
        out, "AnnotationError", "mask.tif", "200000 x 150000 px", "100 times", "at most 2"
    )


def test_masks_at_or_below_the_slides_size_are_read(tmp_path: Path, small_slide: Path) -> None:
    level0 = tmp_path / "level0.png"
    small = tmp_path / "small.png"
    mask = np.zeros((1500, 2000), np.uint8)
    mask[500:1000, 600:1400] = 1
    Image.fromarray(mask).save(level0)
    Image.fromarray(mask[::4, ::4]).save(small)
    out = run_child(
        _THUMB + "result = [int(read_mask(m, thumb).sum()) for m in args[1:]]",
        small_slide, level0, small,
    )  # fmt: skip
    assert out["ok"], out
    assert out["result"] == [200 * 125, 200 * 125]  # 800 x 500 level-0 px at scale 4


# --- safetensors claiming gigabytes -----------------------------------------------------------


def test_safetensors_header_length_of_gigabytes_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "epoch_001.safetensors"
    bomb.write_bytes(struct.pack("<Q", 5 * 2**30) + b'{"a": 1}' + b"\x00" * 64)
    out = run_child(
        "from slidesift.checkpoint import load_checkpoint\nresult = load_checkpoint(args[0])",
        bomb,
    )
    assert_refused(out, "CheckpointError", "epoch_001.safetensors", "5368709120", "truncated")


def test_safetensors_header_of_a_gigabyte_in_a_file_that_long_is_refused(tmp_path: Path) -> None:
    """The file really is 1.5 GB (sparse), so only the header limit stands between."""
    bomb = write_sparse(
        tmp_path / "big.safetensors", struct.pack("<Q", 1_400_000_000) + b'{"', 1_500_000_000
    )
    body = "from slidesift.checkpoint import load_checkpoint\nresult = load_checkpoint(args[0])"
    out = run_child(body, bomb)
    assert_refused(out, "CheckpointError", "1,430.5 MB", "1,024 MB", "SLIDESIFT_MAX_CHECKPOINT_MB")
    raised = run_child(body, bomb, env={"SLIDESIFT_MAX_CHECKPOINT_MB": "4096"})
    assert_refused(raised, "CheckpointError", "1,400,000,000", "100,000,000")


def test_safetensors_tensors_claiming_gigabytes_beyond_the_file_are_refused(
    tmp_path: Path,
) -> None:
    offsets = {"dtype": "F32", "shape": [2**31], "data_offsets": [0, 2**33]}
    by_offsets = write_safetensors_raw(tmp_path / "offsets.safetensors", {"w": offsets}, b"\0" * 64)
    shape = {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 16]}
    by_shape = write_safetensors_raw(tmp_path / "shape.safetensors", {"w": shape}, b"\0" * 16)
    body = "from slidesift.checkpoint import read_safetensors\nresult = read_safetensors(args[0])"
    out = run_child(body, by_offsets)
    assert_refused(out, "CheckpointError", "offsets.safetensors", "8589934592", "truncated")
    out = run_child(body, by_shape)
    assert_refused(out, "CheckpointError", "shape.safetensors", "not a readable safetensors")


def test_a_real_safetensors_file_still_reads(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from slidesift.checkpoint import read_safetensors, write_safetensors

    path = write_safetensors(
        tmp_path / "w.safetensors", {"w": torch.arange(12.0).reshape(3, 4)}, {"k": "v"}
    )
    tensors, meta = read_safetensors(path)
    assert tensors["w"].shape == (3, 4) and float(tensors["w"].sum()) == 66.0
    assert meta == {"k": "v"}


# --- a 1 GB GeoJSON (and XML) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head", "body"),
    [
        ("tumor.geojson", b'{"type": "FeatureCollection", "features": [',
         "from slidesift.io.geojson import parse_geojson\nresult = parse_geojson(args[0])"),
        ("tumor.xml", b"<ASAP_Annotations><Annotations>",
         "from slidesift.io.asap import parse_asap_xml\nresult = parse_asap_xml(args[0])"),
    ],
    ids=["geojson", "asap-xml"],
)  # fmt: skip
def test_gigabyte_annotation_is_refused_by_its_size(
    tmp_path: Path, name: str, head: bytes, body: str
) -> None:
    bomb = write_sparse(tmp_path / name, head, 2**30)
    out = run_child(body, bomb)
    assert_refused(
        out, "AnnotationError", name, "1,024.0 MB", "256 MB", "SLIDESIFT_MAX_ANNOTATION_MB"
    )


def test_gigabyte_json_given_as_checkpoint_is_named_without_parsing_it(tmp_path: Path) -> None:
    head = b'{"type": "FeatureCollection", "features": [' + b" " * 8192
    bomb = write_sparse(tmp_path / "tumor.geojson", head, 2**30)
    out = run_child(
        "from slidesift.checkpoint import load_checkpoint\nresult = load_checkpoint(args[0])",
        bomb,
    )
    assert_refused(out, "CheckpointError", "this is a JSON file")


def test_geojson_of_tens_of_mb_still_parses(tmp_path: Path) -> None:
    """About 20 MB: 2000 polygons of 500 vertices, as a QuPath export of a busy slide."""
    ring = np.round(
        1000 * np.c_[np.cos(np.linspace(0, 6.28, 500)), np.sin(np.linspace(0, 6.28, 500))], 3
    )
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [(ring + 5000 + 3 * i).tolist()]},
            "properties": {"classification": {"name": "Tumor"}},
        }
        for i in range(2000)
    ]
    path = tmp_path / "busy.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert path.stat().st_size > 15 * 2**20
    body = "from slidesift.io.geojson import parse_geojson\nresult = len(parse_geojson(args[0]))"
    out = run_child(body, path)
    assert out["ok"] and out["result"] == 2000, out
    assert out["peak"] < PEAK_MAX
    low = run_child(body, path, env={"SLIDESIFT_MAX_ANNOTATION_MB": "10"})
    assert_refused(low, "AnnotationError", "10 MB", "SLIDESIFT_MAX_ANNOTATION_MB")
