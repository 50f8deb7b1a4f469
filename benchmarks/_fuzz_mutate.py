"""Seeded corruptions of the files slidesift reads, shared by ``bench_fuzz.py`` and the tests.

Every mutator takes the valid bytes of one file and a :class:`random.Random` and returns
``(what, bytes)``: a short name of the corruption (the benchmark counts outcomes per name) and
the damaged file. The same seed gives the same bytes, on any machine.

- TIFF (:func:`mutate_tiff`): the IFD chain and every tile's offset and byte count are parsed
  (:func:`tiff_layout`), then the file is cut at an IFD or a tile offset, bits are flipped in
  the header and IFD entries or in tile data, tag counts, byte counts, offsets and image sizes
  grow or shrink, or an IFD's entry count or next-IFD link changes.
- Text and JSON (:func:`mutate_text`, :func:`mutate_json`): cut, bit flips, deleted and
  repeated spans, numbers replaced by edge values, values replaced by other JSON types, deep
  nesting.
- safetensors (:func:`mutate_safetensors`): the 8-byte header length, the JSON header (text
  damage, shapes, dtypes, data offsets), the slidesift metadata inside it, the tensor bytes.
"""

from __future__ import annotations

import json
import random
import re
import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TiffLayout",
    "mutate_json",
    "mutate_safetensors",
    "mutate_text",
    "mutate_tiff",
    "tiff_layout",
]

#: Values a number in a text file is replaced by.
EDGE_NUMBERS = (
    "0", "-1", "-0", "1e308", "1e999", "-1e999", "NaN", "Infinity", "4294967296",
    "9" * 40, "9" * 5000, "0.5", "1e-320", "", "x", "+", "00",
)  # fmt: skip
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


@dataclass
class TiffLayout:
    """Where the parts of a classic little- or big-endian TIFF lie.

    Attributes
    ----------
    order
        ``<`` or ``>``.
    ifds
        File offset of each IFD in chain order.
    entries
        File offset of each 12-byte IFD entry, with its tag, type and count.
    tiles
        ``(offset, bytecount)`` of every tile (or strip) of every IFD.
    arrays
        ``(tag, file offset of its values, type, count)`` of the offset and byte-count arrays.
    """

    order: str
    ifds: list[int] = field(default_factory=list)
    entries: list[tuple[int, int, int, int]] = field(default_factory=list)
    tiles: list[tuple[int, int]] = field(default_factory=list)
    arrays: list[tuple[int, int, int, int]] = field(default_factory=list)


def tiff_layout(data: bytes) -> TiffLayout:
    """Parse the IFD chain of a classic TIFF (not BigTIFF) into a :class:`TiffLayout`."""
    order = "<" if data[:2] == b"II" else ">"
    if struct.unpack(order + "H", data[2:4])[0] != 42:
        raise ValueError("not a classic TIFF")
    lay = TiffLayout(order)
    offset = struct.unpack(order + "I", data[4:8])[0]
    while offset and offset not in lay.ifds and offset + 2 <= len(data):
        lay.ifds.append(offset)
        (n,) = struct.unpack(order + "H", data[offset : offset + 2])
        values: dict[int, list[int]] = {}
        for i in range(n):
            at = offset + 2 + 12 * i
            tag, typ, count = struct.unpack(order + "HHI", data[at : at + 8])
            lay.entries.append((at, tag, typ, count))
            if tag in (273, 279, 324, 325) and typ in (3, 4):
                size = _TYPE_SIZES[typ] * count
                where = at + 8
                if size > 4:
                    (where,) = struct.unpack(order + "I", data[at + 8 : at + 12])
                fmt = order + ("H" if typ == 3 else "I") * count
                values[tag] = list(struct.unpack(fmt, data[where : where + size]))
                lay.arrays.append((tag, where, typ, count))
        end = offset + 2 + 12 * n
        for offs, counts in ((324, 325), (273, 279)):
            if offs in values and counts in values:
                lay.tiles += list(zip(values[offs], values[counts], strict=False))
        offset = struct.unpack(order + "I", data[end : end + 4])[0]
    return lay


def _flip(data: bytearray, lo: int, hi: int, rng: random.Random, bits: int) -> None:
    for _ in range(bits):
        at = rng.randrange(lo, max(lo + 1, min(hi, len(data))))
        if at < len(data):
            data[at] ^= 1 << rng.randrange(8)


def _scaled(value: int, rng: random.Random, bits: int = 32) -> int:
    """An integer near, far below or far above ``value``, kept within ``bits`` unsigned bits."""
    choices = [0, 1, value - 1, value + 1, value // 2, value * 2, value + 4096]
    choices += [rng.randrange(1 << bits), (1 << bits) - 1, value ^ (1 << rng.randrange(bits))]
    return rng.choice(choices) % (1 << bits)


def mutate_tiff(data: bytes, rng: random.Random, op: str | None = None) -> tuple[str, bytes]:
    """One corruption of a TIFF (see the module docstring); ``op`` forces the kind."""
    lay = tiff_layout(data)
    out = bytearray(data)
    ops = ["cut-ifd", "cut-tile", "flip-header", "flip-tile", "tag-count", "byte-count",
           "tile-offset", "entry-value", "ifd-count", "ifd-link", "flip-tail"]  # fmt: skip
    op = op or rng.choice(ops)
    o = lay.order
    if op == "cut-ifd":
        at = rng.choice(lay.ifds) + rng.choice([0, 0, 1, 2, 7])
        return op, bytes(out[:at])
    if op == "cut-tile":
        off, count = rng.choice(lay.tiles)
        return op, bytes(out[: off + rng.choice([0, 1, count // 2, max(0, count - 1)])])
    if op == "flip-header":
        at, *_ = rng.choice(lay.entries)
        _flip(out, at, at + 12, rng, rng.choice([1, 1, 2, 4]))
        if rng.random() < 0.2:
            _flip(out, 0, 8, rng, 1)
        return op, bytes(out)
    if op == "flip-tile":
        off, count = rng.choice([t for t in lay.tiles if t[1]] or lay.tiles)
        _flip(out, off, off + count, rng, rng.choice([1, 3, 16, 64]))
        return op, bytes(out)
    if op == "flip-tail":  # anywhere in the file: descriptions, JPEG tables, arrays
        _flip(out, 8, len(out), rng, rng.choice([1, 8, 32]))
        return op, bytes(out)
    if op == "tag-count":
        at, _, _, count = rng.choice(lay.entries)
        struct.pack_into(o + "I", out, at + 4, _scaled(count, rng))
        return op, bytes(out)
    if op in ("byte-count", "tile-offset"):
        want = 325 if op == "byte-count" else 324
        arrays = [a for a in lay.arrays if a[0] in (want, want - 51 if want == 324 else 279)]
        _, where, typ, count = rng.choice(arrays or lay.arrays)
        size = 2 if typ == 3 else 4
        i = rng.randrange(count)
        fmt = o + ("H" if typ == 3 else "I")
        (old,) = struct.unpack_from(fmt, out, where + i * size)
        struct.pack_into(fmt, out, where + i * size, _scaled(old, rng, 8 * size))
        return op, bytes(out)
    if op == "entry-value":  # widths, lengths, tile sizes, compression, photometric, ...
        at, _, typ, _ = rng.choice(lay.entries)
        if typ == 3:
            (old,) = struct.unpack_from(o + "H", out, at + 8)
            struct.pack_into(o + "H", out, at + 8, _scaled(old, rng, 16))
        else:
            (old,) = struct.unpack_from(o + "I", out, at + 8)
            struct.pack_into(o + "I", out, at + 8, _scaled(old, rng))
        return op, bytes(out)
    if op == "ifd-count":
        at = rng.choice(lay.ifds)
        (n,) = struct.unpack_from(o + "H", out, at)
        struct.pack_into(o + "H", out, at, _scaled(n, rng, 16))
        return op, bytes(out)
    if op == "ifd-link":
        i = rng.randrange(len(lay.ifds))
        at = lay.ifds[i]
        (n,) = struct.unpack_from(o + "H", out, at)
        target = rng.choice([*lay.ifds, 0, len(data), len(data) + 100, 3, at])  # loops, past end
        struct.pack_into(o + "I", out, at + 2 + 12 * n, target)
        return op, bytes(out)
    raise ValueError(f"unknown TIFF corruption {op!r}")


def mutate_text(data: bytes, rng: random.Random, op: str | None = None) -> tuple[str, bytes]:
    """One byte-level corruption of a text file (XML, CSV, JSON)."""
    ops = ["cut", "flip", "delete-span", "repeat-span", "number", "insert-junk", "swap-bytes"]
    op = op or rng.choice(ops)
    n = len(data)
    a = rng.randrange(n)
    b = min(n, a + rng.choice([1, 2, 8, 64, 512]))
    if op == "cut":
        return op, data[:a]
    if op == "flip":
        out = bytearray(data)
        _flip(out, 0, n, rng, rng.choice([1, 2, 8, 32]))
        return op, bytes(out)
    if op == "delete-span":
        return op, data[:a] + data[b:]
    if op == "repeat-span":
        return op, data[:b] + data[a:b] * rng.choice([1, 2, 100, 2000]) + data[b:]
    if op == "number":
        spans = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", data)]
        if not spans:
            return mutate_text(data, rng, "flip")
        s, e = rng.choice(spans)
        return op, data[:s] + rng.choice(EDGE_NUMBERS).encode() + data[e:]
    if op == "insert-junk":
        doctype = b"<!DOCTYPE x [<!ENTITY e 'z'>]>"
        one = bytes([rng.randrange(256)])
        junk = rng.choice([b"\x00", b"\xff\xfe", b'"', b"<", b"]]]", b"{", b",", b"\n", b"\r",
                           b"&amp;", doctype, one])  # fmt: skip
        return op, data[:a] + junk * rng.choice([1, 3, 1000]) + data[a:]
    if op == "swap-bytes":
        out = bytearray(data)
        c = rng.randrange(n)
        out[a], out[c] = out[c], out[a]
        return op, bytes(out)
    raise ValueError(f"unknown text corruption {op!r}")


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "true", "int", "neg", "float", "str", "list", "dict", "huge", "empty-list"]
    if depth > 1:
        kinds = kinds[:6]
    k = rng.choice(kinds)
    return {
        "null": lambda: None,
        "true": lambda: True,
        "int": lambda: rng.choice([0, 1, 2, 3, 255, 65536]),
        "neg": lambda: -rng.randrange(1, 10**6),
        "float": lambda: rng.choice([0.5, -1.5, 1e300, 1e-300, 3.0]),
        "str": lambda: rng.choice(["", "x", "Tumor", "Polygon", "_0", "1e3", "\u00e9", "a" * 300]),
        "list": lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        "dict": lambda: {"type": _random_value(rng, depth + 1), "x": 1},
        "huge": lambda: 10 ** rng.choice([20, 400]),
        "empty-list": lambda: [],
    }[k]()


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON document as a key path (the root is ``()``)."""
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:50]):
            out += _nodes(v, (*path, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return doc


def mutate_json(data: bytes, rng: random.Random, op: str | None = None) -> tuple[str, bytes]:
    """One corruption of a JSON file: text damage, or a value of another type, or deep nesting."""
    ops = ["type", "type", "drop-key", "nest", "text"]
    op = op or rng.choice(ops)
    if op == "text":
        return mutate_text(data, rng)
    doc = json.loads(data)
    if op == "nest":
        depth = rng.choice([100, 5000, 200000])
        return op, b"[" * depth + data + b"]" * depth
    nodes = _nodes(doc)
    where = rng.choice(nodes)
    if op == "drop-key":
        keyed = [p for p in nodes if p and isinstance(p[-1], str)]
        if keyed:
            where = rng.choice(keyed)
            parent = doc
            for k in where[:-1]:
                parent = parent[k]
            del parent[where[-1]]
            return op, json.dumps(doc).encode()
    return "type", json.dumps(_replace(doc, where, _random_value(rng))).encode()


def mutate_safetensors(data: bytes, rng: random.Random, op: str | None = None) -> tuple[str, bytes]:
    """One corruption of a safetensors file (see the module docstring)."""
    (n,) = struct.unpack("<Q", data[:8])
    header, body = data[8 : 8 + n], data[8 + n :]
    ops = ["length", "header-text", "shape", "dtype", "offsets", "metadata", "cut", "flip-data",
           "extra-tensor"]  # fmt: skip
    op = op or rng.choice(ops)
    if op == "length":
        new = rng.choice([0, 1, n - 1, n + 1, n + 7, len(data), 2**63, 2**64 - 1, 10**9, n // 2])
        return op, struct.pack("<Q", new) + data[8:]
    if op == "header-text":
        _, h = mutate_text(header, rng)
        keep = rng.random() < 0.5  # keep the old length (misaligned) or fix it
        return op, struct.pack("<Q", n if keep else len(h)) + h + body
    if op == "cut":
        return op, data[: rng.randrange(len(data))]
    if op == "flip-data":
        out = bytearray(data)
        _flip(out, 8 + n, len(out), rng, rng.choice([1, 16, 256]))
        return op, bytes(out)
    doc = json.loads(header)
    names = [k for k in doc if k != "__metadata__"]
    name = rng.choice(names)
    t = doc[name]
    if op == "shape":
        dims = t["shape"]
        if dims and rng.random() < 0.7:
            i = rng.randrange(len(dims))
            dims[i] = rng.choice([0, -1, dims[i] + 1, dims[i] * 2, 2**40, 2**63])
        else:
            t["shape"] = rng.choice([[], [1], [*dims, 1], "x", None])
    elif op == "dtype":
        t["dtype"] = rng.choice(["F16", "F64", "I64", "U8", "BOOL", "BF16", "XX", "", 3, None])
    elif op == "offsets":
        a, b = t["data_offsets"]
        t["data_offsets"] = rng.choice([[b, a], [a, b + 4], [a, b - 4], [a + 1, b], [a, 2**64],
                                        [-1, b], [a], [0, 0], "x"])  # fmt: skip
    elif op == "metadata":
        meta = doc.get("__metadata__", {})
        key = rng.choice(list(meta) or ["slidesift"])
        inner = meta.get(key, "{}").encode()
        _, damaged = mutate_json(inner, rng) if rng.random() < 0.7 else mutate_text(inner, rng)
        meta[key] = damaged.decode("utf-8", "replace")
        if rng.random() < 0.2:
            doc["__metadata__"] = _random_value(rng)
    elif op == "extra-tensor":
        doc[f"junk{rng.randrange(99)}"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    h = json.dumps(doc).encode()
    h += b" " * (-len(h) % 8)
    return op, struct.pack("<Q", len(h)) + h + body
