"""`litops run` killed like a power cut at three points, then run again: the registry stays consistent.

Each case starts `litops run` in its own session with LITOPS_CRASH_AT set; the fault hook SIGKILLs
the flow's whole process group (and, for before_alias, the register component that hit it). A
plain re-run must then leave: one registered version per training run, a gate decision on every
version, and the `champion` alias only on a promoted (or manually promoted) version.

The cases share one workspace (the data is generated once); each uses its own config, so each
trains its own version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from test_e2e import TINY

pytestmark = pytest.mark.slow

LITOPS = str(Path(sys.executable).with_name("litops"))
MODEL = "lit-embedded"
SHORT = [o for o in TINY if not o.startswith(("train.steps", "train.checkpoint_every"))]
ALWAYS_PROMOTE = ["registry.min_improvement=-1", "registry.guard_tolerance=1"]  # not in the config hash


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("crash-home")


def litops_run(home: Path, overrides: list[str], crash_at: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITOPS_", "PREFECT_API_URL"))}
    env["LITOPS_HOME"] = str(home)
    if crash_at:
        env["LITOPS_CRASH_AT"] = crash_at
    proc = subprocess.Popen([LITOPS, "run", *overrides], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        _kill_group(proc.pid)  # nothing of a killed run may linger into the next case
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def client_for(home: Path) -> MlflowClient:
    uri = f"sqlite:///{home}/mlflow.db"
    return MlflowClient(uri, registry_uri=uri)


def versions(home: Path) -> list:
    return client_for(home).search_model_versions(f"name='{MODEL}'")


def assert_killed(run: subprocess.CompletedProcess) -> None:
    """Died by SIGKILL (the hook's message may die unprinted with the flow: the registry state tells where)."""
    assert run.returncode == -signal.SIGKILL, f"exit {run.returncode}\n{run.stderr[-3000:]}"


def assert_consistent(home: Path) -> None:
    """One version per training run, a decision on every version, the alias only on a promoted one."""
    client = client_for(home)
    all_versions = versions(home)
    run_ids = [mv.tags.get("train_run_id") for mv in all_versions]
    assert len(run_ids) == len(set(run_ids)), f"duplicate versions of a training run: {run_ids}"
    experiments = [e.experiment_id for e in client.search_experiments()]
    train_runs = {r.info.run_id for r in client.search_runs(experiments, "tags.`litops.step` = 'train'")}
    assert train_runs == set(run_ids), "every training run has exactly one registered version"
    undecided = {mv.version: mv.tags.get("gate_decision") for mv in all_versions
                 if mv.tags.get("gate_decision") not in ("promoted", "rejected", "manual")}
    assert not undecided, f"versions without a gate decision: {undecided}"
    try:
        champion = client.get_model_version_by_alias(MODEL, "champion")
    except MlflowException:
        return
    assert champion.tags["gate_decision"] in ("promoted", "manual"), champion.tags


def assert_completed(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr


def test_killed_before_the_alias_moves(home):
    """The gate recorded a promotion, then died: the re-run finishes it instead of skipping the version."""
    overrides = TINY + ALWAYS_PROMOTE
    assert_killed(litops_run(home, overrides, "before_alias"))
    (pending,) = versions(home)
    assert pending.tags["gate_decision"] == "promoting"
    with pytest.raises(MlflowException):
        client_for(home).get_model_version_by_alias(MODEL, "champion")

    again = litops_run(home, overrides)
    assert_completed(again)
    assert f"resuming the gate of version {pending.version}" in again.stdout + again.stderr
    assert f"version {pending.version}: PROMOTED" in again.stdout
    assert client_for(home).get_model_version_by_alias(MODEL, "champion").version == pending.version
    assert_consistent(home)


def test_killed_between_register_and_gate(home):
    overrides = SHORT + ["train.steps=40", "train.checkpoint_every=20"]
    before = {mv.version for mv in versions(home)}
    assert_killed(litops_run(home, overrides, "after_register"))
    (stranded,) = [mv for mv in versions(home) if mv.version not in before]
    assert "gate_decision" not in stranded.tags

    again = litops_run(home, overrides)
    assert_completed(again)
    assert f"resuming the gate of version {stranded.version}" in again.stdout + again.stderr
    assert f"version {stranded.version}: " in again.stdout and "up to date" not in again.stdout
    assert_consistent(home)


def test_killed_after_training(home):
    overrides = SHORT + ["train.steps=30", "train.checkpoint_every=15"]
    before = {mv.version for mv in versions(home)}
    assert_killed(litops_run(home, overrides, "after_train"))
    assert {mv.version for mv in versions(home)} == before  # nothing registered yet
    client = client_for(home)
    trained = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.`litops.step` = 'train' and attributes.status = 'FINISHED'")
    registered = {mv.tags["train_run_id"] for mv in versions(home)}
    assert len([r for r in trained if r.info.run_id not in registered]) == 1  # trained, then killed

    again = litops_run(home, overrides)
    assert_completed(again)
    (new,) = [mv for mv in versions(home) if mv.version not in before]
    assert new.tags["gate_decision"] in ("promoted", "rejected")
    assert_consistent(home)
