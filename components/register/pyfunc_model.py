"""The MLflow pyfunc class around an exported LiT model file: what a logged model runs when served.

Input: a DataFrame with optional columns `image` (encoded image bytes, JPEG/PNG/...) and
`text` (str). Output: a DataFrame with `image_embedding` and/or `text_embedding` columns,
L2-normalised lists of floats, one per row; a missing input value gives None.

`load_context` exposes the torch model as `self.lit_model`, so evaluation code can use
`mlflow.pyfunc.load_model(uri).unwrap_python_model().lit_model` directly.

This file ships inside every logged model (litops.register.pyfunc_code), where litops is not
installed: it imports only mlflow, pandas, numpy, PIL, torch and litops.core, never the rest of
litops.register.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import Any

import mlflow.pyfunc
import pandas as pd

MODEL_ARTIFACT = "model"  # artifacts key of the exported model file
IMAGE_COL, TEXT_COL = "image", "text"
IMAGE_OUT, TEXT_OUT = "image_embedding", "text_embedding"


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _image_bytes(value: Any, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):  # base64 text (e.g. JSON clients that skip schema decoding)
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"row {row}: column 'image' holds a string that is not base64-encoded image bytes") from None
    raise ValueError(f"row {row}: column 'image' must hold encoded image bytes, got {type(value).__name__}")


def decode_image(data: bytes, size: int, row: int = 0):
    """Encoded image bytes -> uint8 array [size, size, 3]: RGB, centre-cropped, resized (as in training).

    `size` is the image tower's input size: training and evaluation decode straight to it too."""
    from PIL import Image, UnidentifiedImageError

    from litops.core.shards import to_square  # the same preprocessing the training data gets

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_square(img, size)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"row {row}: cannot decode image ({len(data)} bytes): {e}") from None


def _present_rows(values: list) -> list[int]:
    return [i for i, v in enumerate(values) if not _missing(v)]


class LiTPyfunc(mlflow.pyfunc.PythonModel):
    """Embeds images and/or texts with a LiT model."""

    lit_model = None

    def load_context(self, context) -> None:
        from litops.core.checkpoint import load_model

        model, _ = load_model(context.artifacts[MODEL_ARTIFACT], map_location="cpu")
        self.lit_model = model.eval()

    @property
    def image_input_size(self) -> int:
        """Pixels per side the images are decoded to: the tower's input, never a second resize."""
        return int(self.lit_model.image_input_size)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.lit_model is None:
            raise RuntimeError("LiTPyfunc: model not loaded (load it with mlflow.pyfunc.load_model)")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if IMAGE_COL not in model_input.columns and TEXT_COL not in model_input.columns:
            raise ValueError(f"input needs an '{IMAGE_COL}' and/or a '{TEXT_COL}' column; "
                             f"got columns {list(model_input.columns)}")
        out: dict[str, list] = {}
        if IMAGE_COL in model_input.columns:
            out[IMAGE_OUT] = self._embed_images(list(model_input[IMAGE_COL]))
        if TEXT_COL in model_input.columns:
            out[TEXT_OUT] = self._embed_texts(list(model_input[TEXT_COL]))
        return pd.DataFrame(out, index=model_input.index)

    def _embed_images(self, values: list) -> list:
        import numpy as np
        import torch

        rows = _present_rows(values)
        col: list = [None] * len(values)
        if rows:
            arrays = [decode_image(_image_bytes(values[i], i), self.image_input_size, i) for i in rows]
            pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            for i, e in zip(rows, self.lit_model.embed_images(pixels).float().cpu().tolist()):
                col[i] = e
        return col

    def _embed_texts(self, values: list) -> list:
        rows = _present_rows(values)
        for i in rows:
            if not isinstance(values[i], str):
                raise ValueError(f"row {i}: column 'text' must hold a string, got {type(values[i]).__name__}")
        col: list = [None] * len(values)
        if rows:
            for i, e in zip(rows, self.lit_model.embed_texts([values[i] for i in rows]).float().cpu().tolist()):
                col[i] = e
        return col
