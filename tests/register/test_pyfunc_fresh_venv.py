"""The registered pyfunc loads and embeds in a venv built from its own requirements.txt alone.

That venv has no litops: the model must bring its code (code_paths) and name every PyPI
package it needs. Its embeddings must equal those of the project's own loader.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.register.conftest import MODEL_NAME, register_tiny_model

pytestmark = pytest.mark.slow

TEXTS = ["a red circle", "two blue squares left of a green triangle", "yellow"]
IMAGE_SHAPES = [(32, 32), (45, 30), (20, 64)]  # square, wide and tall: the centre crop runs too

# Runs in the fresh venv: argv = tracking URI, model URI, inputs JSON, output JSON.
FRESH_SCRIPT = """
import base64, json, sys

try:
    import litops
    litops_before = "importable"
except ModuleNotFoundError as e:
    litops_before = str(e)

import mlflow
import pandas as pd

tracking_uri, model_uri, inputs_path, out_path = sys.argv[1:5]
inputs = json.load(open(inputs_path))
mlflow.set_tracking_uri(tracking_uri)
model = mlflow.pyfunc.load_model(model_uri)
images = model.predict(pd.DataFrame({"image": [base64.b64decode(s) for s in inputs["png"]]}))
texts = model.predict(pd.DataFrame({"text": inputs["texts"]}))
import litops.core
json.dump({
    "litops_before": litops_before,
    "litops_core_file": litops.core.__file__,
    "lit_model": type(model.unwrap_python_model().lit_model).__name__,
    "orchestration_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "dvc")
                                    or m.startswith(("litops.flows", "litops.register"))),
    "image_embedding": [list(map(float, e)) for e in images["image_embedding"]],
    "text_embedding": [list(map(float, e)) for e in texts["text_embedding"]],
}, open(out_path, "w"))
"""


def png_bytes(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def registered_model(root: Path) -> tuple[str, str, Path]:
    """A tiny real model file, logged and registered in a SQLite store: (tracking URI, model URI, file)."""
    uri, _, _, model_file, _, registered = register_tiny_model(root, "train-fresh-venv")
    return uri, f"models:/{MODEL_NAME}/{registered['version']}", model_file


def model_requirements(tracking_uri: str, model_uri: str) -> Path:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return Path(mlflow.pyfunc.get_model_dependencies(model_uri))


def clean_env() -> dict[str, str]:
    """This process's environment minus anything that would leak the project venv into the fresh one."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def run_step(argv: list[str], what: str, cwd: Path, timeout: float = 900) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{tail}")


def build_venv(venv: Path, requirements: Path) -> Path:
    """`python -m venv`, upgrade pip, `pip install -r requirements.txt`: nothing else goes in."""
    run_step([sys.executable, "-m", "venv", str(venv)], "python -m venv", venv.parent)
    python = venv / "bin" / "python"
    run_step([str(python), "-m", "pip", "install", "-q", "-U", "pip"], "pip install -U pip", venv.parent)
    # --no-compile: byte-compiling all of torch costs minutes; the script compiles what it imports
    run_step([str(python), "-m", "pip", "install", "-q", "--no-compile", "-r", str(requirements)],
             f"pip install -r {requirements.name} (the logged model's requirements)", venv.parent)
    return python


def project_embeddings(model_file: Path, pngs: list[bytes], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The project's own loader on the same inputs: load_model + embed_images / embed_texts."""
    import torch

    from litops.core.checkpoint import load_model
    from litops.core.shards import to_square

    model, cfg = load_model(model_file)
    arrays = [to_square(Image.open(io.BytesIO(p)), model.image_input_size) for p in pngs]  # as training decodes
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return model.embed_images(pixels).float().numpy(), model.embed_texts(texts).float().numpy()


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)  # several GB (torch): do not keep it


def test_registered_pyfunc_loads_in_a_venv_built_from_its_requirements_only(workdir):
    t0 = time.perf_counter()
    tracking_uri, model_uri, model_file = registered_model(workdir)
    requirements = model_requirements(tracking_uri, model_uri)
    lines = [ln.strip() for ln in requirements.read_text().splitlines() if ln.strip()]
    assert lines and all("==" in ln and "/" not in ln for ln in lines), lines
    assert not any(ln.split("==")[0].lower() == "litops" for ln in lines), lines

    python = build_venv(workdir / "venv", requirements)
    t_venv = time.perf_counter()

    pngs = [png_bytes(w, h, seed) for seed, (w, h) in enumerate(IMAGE_SHAPES)]
    inputs, out = workdir / "inputs.json", workdir / "out.json"
    inputs.write_text(json.dumps({"png": [base64.b64encode(p).decode() for p in pngs], "texts": TEXTS}))
    script = workdir / "scripts" / "load_and_predict.py"  # its folder, sys.path[0], holds nothing else
    script.parent.mkdir()
    script.write_text(FRESH_SCRIPT)
    run_step([str(python), str(script), tracking_uri, model_uri, str(inputs), str(out)],
             "load_model + predict in the fresh venv", workdir, timeout=300)
    got = json.loads(out.read_text())
    print(f"fresh venv: built in {t_venv - t0:.0f} s, total {time.perf_counter() - t0:.0f} s")

    assert got["litops_before"] == "No module named 'litops'"  # not installed: only the model's code/
    assert "/code/litops/core/" in got["litops_core_file"]
    assert got["lit_model"] == "LiTModel"
    assert got["orchestration_modules"] == []
    want_images, want_texts = project_embeddings(model_file, pngs, TEXTS)
    image_emb, text_emb = np.array(got["image_embedding"]), np.array(got["text_embedding"])
    assert image_emb.shape == want_images.shape and text_emb.shape == want_texts.shape
    assert np.abs(image_emb - want_images).max() <= 1e-6
    assert np.abs(text_emb - want_texts).max() <= 1e-6
