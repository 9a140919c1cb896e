"""Decoding one sample's image the same way everywhere: training, evaluation and the served model."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def to_square(img: Image.Image, size: int) -> np.ndarray:
    """RGB, centre-cropped to a square and resized (bicubic) to `size`: uint8 [size, size, 3]."""
    img = img.convert("RGB")
    if img.size != (size, size):
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Encoded image bytes -> uint8 [3, size, size], decoded straight to the tower's input size."""
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(to_square(img, size).copy()).permute(2, 0, 1)
