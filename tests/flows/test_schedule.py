"""The retrain service unattended: a real Prefect server, a served deployment whose cron fires,
and new data that triggers a run through a Prefect event.

Real parts: `litops server start` (a real `prefect server start` on 127.0.0.1, SQLite), `litops
deploy` (a Prefect runner serving the deployment), `litops data add` (git + DVC, then the
`litops.data.committed` event over Prefect's websocket), MLflow on SQLite. Nobody calls the flow
by hand: both runs are created by the server, one by the cron schedule and one by the trigger.
The test reads state through Prefect's REST API and CLI, and MLflow's client, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import make_tiny_dataset
from tests.flows.test_e2e import TINY as E2E_TINY

# What fires the runs is under test here, not the model: the small from-scratch one trains fastest.
TINY = ["experiment=scratch_small", *E2E_TINY]

pytestmark = pytest.mark.slow
LITOPS = str(Path(sys.executable).with_name("litops"))
PREFECT = str(Path(sys.executable).with_name("prefect"))
DEPLOYMENT = "litops-retrain/nightly-lit-embedded"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "LITOPS_HOME": str(home), "COLUMNS": "250", **extra}


def _litops(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    out = subprocess.run([LITOPS, *args], env=_env(home), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"litops {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


def _post(url: str, path: str, body: dict, attempts: int = 5) -> list | dict:
    """POST; a 503 (a retryable server error, e.g. SQLite busy) is retried, as Prefect's client does."""
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)


def _runs(url: str) -> list[dict]:
    return _post(url, "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC", "limit": 50})


def _wait_for_run(url: str, created_by: str, deploy_log: Path, timeout: float) -> dict:
    """The first flow run created by `created_by` (SCHEDULE or AUTOMATION), once it is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in _runs(url):
            if (run.get("created_by") or {}).get("type") == created_by and run["state"]["type"] in (
                    "COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
        time.sleep(2)
    raise AssertionError(f"no {created_by} run finished within {timeout:.0f} s; runs: "
                         f"{[(r['name'], r['state']['name']) for r in _runs(url)]}\n"
                         f"deploy log tail:\n{deploy_log.read_text()[-3000:]}")


def _cron_minute_after(seconds: int) -> int:
    """The minute of the first full minute at least `seconds` from now: the cron fires once within ~1.5 min."""
    t = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return (t + timedelta(minutes=1)).minute if t.second else t.minute


def _registry(home: Path) -> MlflowClient:
    uri = f"sqlite:///{home}/mlflow.db"
    return MlflowClient(uri, registry_uri=uri)


def test_cron_run_and_data_trigger_run_complete_on_a_persistent_server(tmp_path):
    home = tmp_path / "home"
    started = _litops(home, "server", "start")
    url = json.loads((home / "prefect" / "server.json").read_text())["api_url"]
    assert url.startswith("http://127.0.0.1:") and url in started.stdout
    deploy_log = tmp_path / "deploy.log"
    minute = _cron_minute_after(25)
    with open(deploy_log, "w") as log:
        deploy = subprocess.Popen([LITOPS, "deploy", f"schedule.cron={minute} * * * *", *TINY], env=_env(home),
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        extra = make_tiny_dataset(tmp_path / "new-data", {"train": 96})
        scheduled = _wait_for_run(url, "SCHEDULE", deploy_log, timeout=200)
        assert scheduled["state"]["type"] == "COMPLETED", scheduled["state"]
        champion = _registry(home).get_model_version_by_alias("lit-embedded", "champion")
        first_data = champion.tags["data_version"]

        added = _litops(home, "data", "add", str(extra / "train"), *TINY)
        assert "event litops.data.committed" in added.stdout, added.stdout
        manual = _post(url, f"/deployments/{scheduled['deployment_id']}/create_flow_run", {})  # races the trigger
        triggered = _wait_for_run(url, "AUTOMATION", deploy_log, timeout=150)
        assert triggered["state"]["type"] == "COMPLETED", triggered["state"]
        _assert_ran_one_at_a_time(url, triggered["id"], manual["id"], deploy_log)
        versions = _registry(home).search_model_versions("name='lit-embedded'")
        new = [v for v in versions if v.tags.get("data_version") != first_data]
        assert len(new) == 1 and new[0].tags.get("gate_decision") in ("promoted", "rejected"), \
            [(v.version, v.tags) for v in versions]

        _check_prefect_cli(url, scheduled["name"])
        _stop_and_check_clean(deploy, deploy_log, url)
    finally:
        if deploy.poll() is None:
            os.killpg(deploy.pid, signal.SIGKILL)
        _litops(home, "server", "stop")
    assert not (home / "prefect" / "server.json").exists()


def _assert_ran_one_at_a_time(url: str, first_id: str, second_id: str, deploy_log: Path) -> None:
    """The deployment's concurrency limit is 1: two runs fired together never overlap in time."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = {r["id"]: r for r in _runs(url)}
        if runs[second_id]["state"]["type"] == "COMPLETED" and runs[first_id]["state"]["type"] == "COMPLETED":
            break
        time.sleep(2)
    else:
        raise AssertionError(f"the second run did not complete: {runs[second_id]['state']}\n"
                             f"{deploy_log.read_text()[-3000:]}")
    at = datetime.fromisoformat
    a, b = sorted((runs[first_id], runs[second_id]), key=lambda r: at(r["start_time"]))
    assert at(a["end_time"]) <= at(b["start_time"]), (a["start_time"], a["end_time"], b["start_time"])


def _check_prefect_cli(url: str, run_name: str) -> None:
    """Prefect's own CLI, pointed at the workspace's server, answers (HTTP 422s with a mismatched fastapi)."""
    env = {**_env(Path("."), PREFECT_API_URL=url)}
    for args, expected in ((["deployment", "ls"], "nightly-lit-embedded"), (["flow-run", "ls"], run_name),
                           (["artifact", "ls"], "litops-gate-lit-embedded")):
        out = subprocess.run([PREFECT, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and expected in out.stdout, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"


def _stop_and_check_clean(deploy: subprocess.Popen, deploy_log: Path, url: str) -> None:
    deploy.send_signal(signal.SIGTERM)
    assert deploy.wait(timeout=60) == 0
    text = deploy_log.read_text()
    for noise in ("Traceback", "Warning", "never awaited"):
        assert noise not in text, f"{noise!r} in the output of a stopped `litops deploy`:\n{text[-3000:]}"
    assert "schedule paused" in text
    deployment = _post(url, "/deployments/filter", {"deployments": {"name": {"any_": ["nightly-lit-embedded"]}}})
    assert deployment and deployment[0]["paused"] is True
    assert not [r for r in _runs(url) if r["state"]["type"] in ("RUNNING", "PENDING")]
