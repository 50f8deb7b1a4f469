"""The files of one segmented slide: the PNG encoder, the output choice, parallel writing."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from slidesift.errors import OutputError
from slidesift.io.outputs import encode_png, write_png
from slidesift.phantom import he_like_image


def _decoded(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The pixels as OpenCV (RGB order restored) and as Pillow read them."""
    cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if cv.ndim == 3:
        cv = cv[..., ::-1]
    return cv, np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("shape", [(37, 53, 3), (37, 53), (1, 1, 3), (5, 1)])
def test_png_round_trips_rgb_and_grey(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img[: shape[0] // 2] = 200  # flat rows next to noisy ones: the "up" filter wraps
    cv, pil = _decoded(encode_png(img))
    assert np.array_equal(cv, img) and np.array_equal(pil, img)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 61])
def test_png_masks_are_one_bit_and_exact(width: int) -> None:
    mask = np.random.default_rng(width).random((23, width)) < 0.4
    data = encode_png(mask)
    assert data[24:26] == bytes([1, 0])  # IHDR: bit depth 1, greyscale
    cv, pil = _decoded(data)
    assert np.array_equal(cv > 0, mask) and np.array_equal(pil.astype(bool), mask)


def test_png_chunks_are_valid_and_the_bytes_depend_only_on_the_pixels() -> None:
    pixels, _ = he_like_image((120, 90), seed=2)
    data = encode_png(pixels)
    assert data == encode_png(pixels.copy()) == encode_png(np.asfortranarray(pixels))
    pos = 8
    while pos < len(data):  # every chunk's CRC is right (a strict reader checks them)
        (length,) = np.frombuffer(data[pos : pos + 4], ">u4")
        body = data[pos + 4 : pos + 8 + length]
        assert int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big") == zlib.crc32(body)
        pos += 12 + int(length)
    assert pos == len(data) and data.endswith(b"IEND\xaeB`\x82")


def test_png_refuses_what_it_cannot_encode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        encode_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(OutputError, match=r"bad\.png"):
        write_png(tmp_path / "bad.png", np.zeros((0, 4), np.uint8))
    assert not list(tmp_path.iterdir())
