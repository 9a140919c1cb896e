"""What a training run records in MLflow: its dataset input, the whole config, the code version, and a metric
history without duplicate steps after a resume. Real MLflow on SQLite, a real DVC data repo."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from unittest import mock

import pytest
import yaml
from mlflow.tracking import MlflowClient

from litops.core.step_results import TrainResult, parse_result
from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig, to_dict
from litops.core.workspace import Workspace
from litops.data import DataRepo, synthesize
from litops.train.cli import build_parser, main, make_logger
from litops.train.logger import flatten
from litops.core.config import TrainConfig
from litops.train.loop import train
from litops.train.mlflow_logger import MLflowLogger

SECRET = "do-not-log-this-secret"


def tiny_config(home, **train_kw) -> LitopsConfig:
    return LitopsConfig(
        home=str(home),
        data=DataConfig(n_train=48, n_val=12, n_test=24, image_size=32, shard_size=24),
        model=ModelConfig(image_width=16, text_width=32, text_layers=1, text_heads=2, embed_dim=32, vocab_size=512),
        train=TrainConfig(**{"steps": 3, "batch_size": 16, "checkpoint_every": 4, "warmup_steps": 2, **train_kw}),
    )


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    """A home whose data repo holds the tiny dataset, and its MLflow store: (workspace, data version)."""
    ws = Workspace(tmp_path_factory.mktemp("lineage") / "home")
    synthesize(tiny_config(ws.home), ws)
    MlflowClient(ws.tracking_uri).search_experiments()  # creates the store once for the module's tests
    return ws, DataRepo(ws).version("embedded")["data_version"]


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch):
    monkeypatch.delenv("LITOPS_HOME", raising=False)
    monkeypatch.setenv("LITOPS_SYSTEM_METRICS", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _train_cli(cfg: LitopsConfig, ws: Workspace, data_version: str, ckpt: Path, *extra: str) -> TrainResult:
    """`python -m litops.train` in this process, with AWS credentials in the environment."""
    cfg_path = ws.home / f"{ckpt.name}.json"
    cfg_path.write_text(json.dumps(to_dict(cfg)))
    secrets = {"AWS_ACCESS_KEY_ID": "AKIA" + SECRET, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": SECRET}
    out = io.StringIO()
    with mock.patch.dict(os.environ, secrets), contextlib.redirect_stdout(out):
        main(["--config", str(cfg_path), "--dataset-dir", str(ws.dataset_dir("embedded")), "--checkpoint-dir",
              str(ckpt), "--data-version", data_version, "--tracking-uri", ws.tracking_uri,
              "--artifact-location", str(ws.artifacts), *extra])
    return parse_result(out.getvalue().splitlines())


def test_run_records_dataset_config_and_code_version_once(versioned, tmp_path):
    ws, data_version = versioned
    cfg = tiny_config(ws.home)
    ckpt = ws.home / "ck-lineage"
    run_id = _train_cli(cfg, ws, data_version, ckpt, "--git-sha", "0123abc").run_id
    cfg.train.steps = 5  # relaunch: the same run continues
    assert _train_cli(cfg, ws, data_version, ckpt, "--git-sha", "0123abc").run_id == run_id
    client = MlflowClient(ws.tracking_uri)
    run = client.get_run(run_id)

    (entry,) = run.inputs.dataset_inputs
    assert (entry.dataset.name, entry.dataset.digest) == ("embedded", data_version)
    source = json.loads(entry.dataset.source)
    assert source == {"uri": str(ws.dataset_dir("embedded")), "data_repo": str(ws.data_repo),
                      "dvc_remote": str(ws.dvc_remote)}
    assert {t.key: t.value for t in entry.tags} == {"mlflow.data.context": "training"}

    started_with = to_dict(tiny_config(ws.home))
    expected = {k: str(v) for k, v in flatten(started_with).items()}
    assert {k: run.data.params[k] for k in expected} == expected
    sections = {k.split(".")[0] for k in run.data.params}
    assert set(started_with) <= sections, "every config section is logged"
    assert run.data.tags["git_sha"] == "0123abc"

    assert "config.yaml" in [f.path for f in client.list_artifacts(run_id)]
    config_text = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert yaml.safe_load(config_text.read_text()) == started_with

    recorded = [*run.data.params.values(), *run.data.tags.values(), config_text.read_text(), entry.dataset.source]
    assert not [text for text in recorded if SECRET in text], "nothing from the environment is logged"


def test_git_sha_defaults_to_unknown(versioned):
    ws, data_version = versioned
    cfg = tiny_config(ws.home)
    args = build_parser().parse_args(["--dataset-dir", str(ws.dataset_dir("embedded")), "--checkpoint-dir",
                                      str(ws.home / "ck-default"), "--data-version", data_version,
                                      "--tracking-uri", ws.tracking_uri, "--artifact-location", str(ws.artifacts)])
    logger, run_id = make_logger(args, cfg, ws.home / "ck-default")
    logger.close()
    assert MlflowClient(ws.tracking_uri).get_run(run_id).data.tags["git_sha"] == "unknown"


def test_resume_logs_each_step_once(versioned):
    ws, _ = versioned
    log_every = TrainConfig().log_every
    every = log_every + log_every // 2  # checkpoints fall between logged steps
    cfg = tiny_config(ws.home, steps=2 * every, checkpoint_every=every)
    ckpt = ws.home / "ck-resume"
    dataset = ws.dataset_dir("embedded")

    def logger():
        return MLflowLogger(ws.tracking_uri, "exp", ckpt, "train", {}, str(ws.artifacts))

    train(cfg, dataset, ckpt, first := logger())
    first.close()
    (ckpt / f"step-{2 * every:08d}.pt").unlink()  # the job died after logging past its last checkpoint
    resumed = train(cfg, dataset, ckpt, again := logger())
    again.close()
    assert resumed.resumed_from == every and again.run_id == first.run_id

    client = MlflowClient(ws.tracking_uri)
    keys = [k for k in client.get_run(first.run_id).data.metrics if k.startswith("train/")]
    assert {"train/loss", "train/data_time_s", "train/step_time_s"} <= set(keys), "where a step's time goes"
    logged = list(range(log_every, 2 * every + 1, log_every))
    for key in keys:
        assert [m.step for m in client.get_metric_history(first.run_id, key)] == logged, key
