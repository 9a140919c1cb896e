"""`data checkout`: a data version, or a registered model's training data, restored beside the data repo
(real git + DVC repos, a real local remote, a real MLflow registry on SQLite)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from litops.core.component_cli import EXIT_BAD_INPUT, UserError
from litops.core.step_results import CheckoutResult, parse_result
from litops.core.workspace import Workspace
from litops.data import DataRepo, synthesize
from litops.data.api import checkout

from data_helpers import small_cfg, tree_digest


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def two_versions(ws):
    """Two versions of the embedded dataset, v2 checked out in the data repo; v1's files digested."""
    cfg = small_cfg(ws.home)
    synthesize(cfg, ws)
    v1 = DataRepo(ws).version("embedded")["data_version"]
    files_v1 = tree_digest(ws.dataset_dir("embedded"))
    cfg.data.n_train = 30
    synthesize(cfg, ws)
    v2 = DataRepo(ws).version("embedded")["data_version"]
    assert v1 != v2
    return cfg, v1, v2, files_v1


def test_checkout_restores_a_version_without_touching_the_data_repo(ws, two_versions):
    cfg, v1, v2, files_v1 = two_versions
    head, files_v2 = _git(ws.data_repo, "rev-parse", "HEAD"), tree_digest(ws.dataset_dir("embedded"))

    r = checkout(cfg, v1, ws)
    assert r["data_version"] == v1 and r["ref"] == v1 and "model" not in r
    assert tree_digest(r["dataset_dir"]) == files_v1
    assert r["splits"] == {"train": 48, "val": 12, "test": 24}
    assert _git(ws.data_repo, "rev-parse", "HEAD") == head
    assert _git(ws.data_repo, "status", "--porcelain") == ""
    assert tree_digest(ws.dataset_dir("embedded")) == files_v2
    assert DataRepo(ws).current_version("embedded") == v2

    # checking out again repairs a file changed since
    changed = sorted(Path(r["dataset_dir"]).rglob("*.tar"))[0]
    changed.write_bytes(b"edited")
    again = checkout(cfg, v1, ws)
    assert again["dataset_dir"] == r["dataset_dir"] and tree_digest(again["dataset_dir"]) == files_v1


def test_checkout_in_a_bare_home_fetches_from_the_remote(ws, two_versions, tmp_path):
    _, v1, _, files_v1 = two_versions
    bare = Workspace(tmp_path / "bare-home")
    r = DataRepo(bare, remote_url=str(ws.dvc_remote)).checkout("embedded", v1)
    assert r["fetched"] > 0
    assert tree_digest(r["dataset_dir"]) == files_v1
    assert not bare.data_repo.exists(), "a checkout never creates a data repo"


def test_unknown_versions_are_one_line_user_errors(ws, two_versions):
    cfg = two_versions[0]
    missing = "0" * 32 + ".dir"
    with pytest.raises(UserError, match=f"data version {missing} is not in the DVC remote"):
        checkout(cfg, missing, ws)
    assert not (ws.home / "data-checkouts" / ("0" * 32)).exists(), "a failed checkout leaves no folder"
    with pytest.raises(UserError, match="unknown version 'latest'"):
        checkout(cfg, "latest", ws)
    with pytest.raises(UserError, match="no MLflow registry"):
        checkout(cfg, "lit-embedded@champion", ws)


def _register(client: MlflowClient, ws: Workspace, name: str, data_version: str) -> str:
    exp = client.get_experiment_by_name("litops") or client.get_experiment(
        client.create_experiment("litops", artifact_location=str(ws.artifacts)))
    run = client.create_run(exp.experiment_id)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                     tags={"data_version": data_version})
    return mv.version


def test_checkout_of_a_model_reference_uses_its_data_version_tag(ws, two_versions):
    cfg, v1, v2, files_v1 = two_versions
    client = MlflowClient(ws.tracking_uri, registry_uri=ws.tracking_uri)
    client.create_registered_model("lit-embedded")
    first = _register(client, ws, "lit-embedded", v1)
    second = _register(client, ws, "lit-embedded", v2)
    client.set_registered_model_alias("lit-embedded", "champion", first)

    r = checkout(cfg, "lit-embedded@champion", ws)
    assert (r["data_version"], r["model"], r["model_version"]) == (v1, "lit-embedded", int(first))
    assert tree_digest(r["dataset_dir"]) == files_v1
    r2 = checkout(cfg, f"lit-embedded/{second}", ws)
    assert r2["data_version"] == v2 and r2["model_version"] == int(second)
    assert tree_digest(r2["dataset_dir"]) == tree_digest(ws.dataset_dir("embedded"))

    for ref in ("lit-embedded@nope", "lit-embedded/99", "other-model@champion"):
        with pytest.raises(UserError, match=f"no registered model version '{ref}'"):
            checkout(cfg, ref, ws)


def test_cli_prints_where_the_checkout_is_and_fails_in_one_line(ws, two_versions, tmp_path):
    _, v1, _, files_v1 = two_versions
    env = dict(os.environ, LITOPS_HOME=str(ws.home))
    ok = subprocess.run([sys.executable, "-m", "litops.data", "checkout", "--version", v1], capture_output=True,
                        text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    r = parse_result(ok.stdout.splitlines())
    assert isinstance(r, CheckoutResult) and tree_digest(r.dataset_dir) == files_v1
    assert ok.stderr.strip().splitlines() == [f"checked out {v1} into {r.dataset_dir}"]

    bad = subprocess.run([sys.executable, "-m", "litops.data", "checkout", "--version", "lit-embedded/x"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == EXIT_BAD_INPUT
    assert bad.stderr.strip().splitlines() == ["litops data: error: unknown version 'lit-embedded/x' "
                                               "(expected '<32 hex>.dir', 'MODEL@ALIAS' or 'MODEL/N')"]


def test_litops_data_checkout_runs_the_component(ws, two_versions, monkeypatch, capsys):
    from litops.flows.cli import main

    _, v1, _, files_v1 = two_versions
    monkeypatch.setenv("LITOPS_HOME", str(ws.home))
    with pytest.raises(SystemExit) as done:
        main(["data", "checkout", "--version", v1])
    assert done.value.code == 0
    where = re.search(f"checked out {v1} into (\\S+)", capsys.readouterr().out)
    assert where is not None
    assert tree_digest(where.group(1)) == files_v1
