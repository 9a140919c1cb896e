"""Decoding a sample's image: the fast JPEG path gives exactly PIL's pixels, for any size and mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from litops.core import shards
from litops.core.shards import decode_image, to_square


def encoded(shape: tuple[int, int], mode: str, fmt: str = "JPEG") -> bytes:
    pixels = (np.random.default_rng(sum(shape)).random((*shape, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def with_pil(data: bytes, size: int) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(to_square(img, size).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("shape,mode,size", [((64, 64), "RGB", 64), ((128, 96), "RGB", 224), ((50, 80), "L", 32),
                                             ((40, 40), "CMYK", 40)])
def test_jpeg_fast_path_equals_pil(shape, mode, size):
    data = encoded(shape, mode)
    assert shards.decode_jpeg_rgb(data) is not None, "the fast path was taken"
    got = decode_image(data, size)
    assert got.shape == (3, size, size) and got.dtype == torch.uint8
    assert torch.equal(got, with_pil(data, size))


def test_other_formats_and_refused_jpegs_go_through_pil(monkeypatch):
    png = encoded((30, 20), "RGBA", "PNG")
    assert torch.equal(decode_image(png, 16), with_pil(png, 16))
    jpeg = encoded((30, 30), "RGB")
    monkeypatch.setattr(shards, "decode_jpeg_rgb", lambda data: None)
    assert torch.equal(decode_image(jpeg, 30), with_pil(jpeg, 30))
