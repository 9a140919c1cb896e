"""Shared fixtures: one real SQLite MLflow store per session with one registered LiT version."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Run in a fresh interpreter by the store fixture; checked in test_register_pyfunc.py.
LOAD_AND_PREDICT = textwrap.dedent("""
    import io, json, sys
    import mlflow, numpy as np, pandas as pd
    from PIL import Image

    mlflow.set_tracking_uri(sys.argv[1])
    model = mlflow.pyfunc.load_model(sys.argv[2])

    def encode(fmt, w, h):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
        return buf.getvalue()

    df = pd.DataFrame({"image": [encode("PNG", 40, 30), None, encode("JPEG", 64, 64)],
                       "text": ["a red circle", "a blue square", None]})
    out = model.predict(df)
    norms = {c: [None if v is None else float(np.linalg.norm(v)) for v in out[c]] for c in out.columns}
    lit = model.unwrap_python_model().lit_model
    text_only = model.predict(pd.DataFrame({"text": ["a red circle"]}))
    try:
        model.predict(pd.DataFrame({"image": [b"not an image"]}))
        bad = ""
    except ValueError as e:
        bad = str(e)
    print("RESULT " + json.dumps({
        "columns": list(out.columns), "norms": norms, "dim": len(out["text_embedding"][0]),
        "lit_model": type(lit).__name__, "training": lit.training,
        "text_only_columns": list(text_only.columns),
        "same_text": bool(np.allclose(text_only["text_embedding"][0], out["text_embedding"][0], atol=1e-5)),
        "bad": bad}))
""")

MODEL_NAME = "lit-embedded"
TAGS = {"data_version": "0123456789abcdef.dir", "git_sha": "deadbeef", "config_hash": "cafe0000cafe0000"}


@dataclass
class Store:
    root: Path
    uri: str
    client: object
    experiment_id: str
    model_file: Path
    run_id: str
    first: dict  # register_version's result for version 1
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def launch(self, name: str, argv: list[str]) -> None:
        """Start a fresh-interpreter check now; `finish` collects it (they overlap the in-process tests)."""
        self.procs[name] = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)

    def finish(self, name: str, timeout: float = 120) -> tuple[int, str, str]:
        proc = self.procs[name]
        stdout, stderr = proc.communicate(timeout=timeout)
        return proc.returncode, stdout, stderr

    def new_run(self) -> str:
        run_id = self.client.create_run(self.experiment_id, tags={"litops.step": "train"}).info.run_id
        self.client.set_terminated(run_id)
        return run_id

    def fake_versions(self, name: str, n: int) -> list[int]:
        """Cheap versions (no model artifacts) for alias/gate tests."""
        from litops.register.registry import ensure_registered_model

        ensure_registered_model(self.client, name)
        return [int(self.client.create_model_version(name, source=str(self.root), tags={"i": str(i)}).version)
                for i in range(n)]


def make_model_file(path: Path) -> Path:
    from litops.core.checkpoint import atomic_save
    from litops.core.config import LitopsConfig, ModelConfig, to_dict
    from litops.core.model import LiTModel

    model = LiTModel(ModelConfig(), 32)
    atomic_save({"config": to_dict(LitopsConfig()), "image_size": 32, "model": model.state_dict(), "step": 0}, path)
    return path


def register_tiny_model(root: Path, run_name: str):
    """A tiny real model file, logged and registered in a fresh SQLite store under root:
    (tracking URI, client, experiment id, model file, run id, register_version's result)."""
    from mlflow import MlflowClient

    from litops.register.registry import register_version

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("litops", artifact_location=str(root / "mlartifacts"))
    model_file = make_model_file(root / "model.pt")
    run_id = client.create_run(exp, run_name=run_name).info.run_id
    client.set_terminated(run_id)
    return uri, client, exp, model_file, run_id, register_version(client, MODEL_NAME, run_id, str(model_file), TAGS)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    s = Store(root, *register_tiny_model(root, "train-test"))
    uri = s.uri
    # Fresh-process checks start right away: interpreter + MLflow/torch imports dominate them.
    s.launch("pyfunc", ["-c", LOAD_AND_PREDICT, uri, f"models:/{MODEL_NAME}/1"])
    s.launch("models", ["-m", "litops.register", "models", "--tracking-uri", uri])
    s.launch("lookup", ["-m", "litops.register", "lookup", "--tracking-uri", uri,
                        "--data-version", TAGS["data_version"], "--config-hash", TAGS["config_hash"]])
    yield s
    for proc in s.procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
