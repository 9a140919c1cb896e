"""The registered pyfunc loads in a fresh process and embeds image bytes and texts."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from litops.register.pyfunc import decode_image


def test_pyfunc_loads_in_fresh_process_and_predicts(store):
    """`mlflow.pyfunc.load_model("models:/lit-embedded/1")` in a fresh interpreter (script in conftest)."""
    rc, stdout, stderr = store.finish("pyfunc")
    assert rc == 0, stderr[-3000:]
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    assert res["columns"] == ["image_embedding", "text_embedding"]
    img, txt = res["norms"]["image_embedding"], res["norms"]["text_embedding"]
    assert img[1] is None and txt[2] is None  # missing inputs -> None
    for n in (img[0], img[2], txt[0], txt[1]):
        assert n == pytest.approx(1.0, abs=1e-4)
    assert res["dim"] == 128
    assert res["lit_model"] == "LiTModel" and res["training"] is False
    assert res["text_only_columns"] == ["text_embedding"] and res["same_text"]
    assert res["bad"].startswith("row 0: cannot decode image")


def test_decode_image_crops_to_square_rgb():
    buf = io.BytesIO()
    Image.new("L", (50, 20), 128).save(buf, "PNG")  # greyscale, not square
    arr = decode_image(buf.getvalue(), 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    with pytest.raises(ValueError, match="row 4: cannot decode image"):
        decode_image(b"\x89PNG broken", 16, row=4)


def test_predict_in_process_rejects_bad_inputs(store):
    from litops.core.checkpoint import load_model
    from litops.register.pyfunc import LiTPyfunc

    m = LiTPyfunc()
    m.lit_model, cfg = load_model(store.model_file)
    m.image_size = cfg.data.image_size
    with pytest.raises(ValueError, match="'image' and/or a 'text' column"):
        m.predict(None, pd.DataFrame({"caption": ["x"]}))
    with pytest.raises(ValueError, match="row 1: column 'text' must hold a string"):
        m.predict(None, pd.DataFrame({"text": ["ok", 3]}))
    out = m.predict(None, pd.DataFrame({"text": [None, float("nan")]}))
    assert list(out["text_embedding"]) == [None, None]
