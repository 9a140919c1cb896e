"""`litops deploy` SIGKILLed while its run trains, then started again: the dead run is marked Crashed
within 2 minutes of its last heartbeat, its concurrency slot is freed, and the next run resumes
the training from its checkpoint.

Real parts: `litops server start` (a real Prefect server on 127.0.0.1, SQLite, with its automation
services), two `litops deploy` processes (Prefect runners), the crash automation they create, the
flow runs' own heartbeat events, MLflow on SQLite, the training's checkpoints. The SIGKILL of the
deploy's process group stands in for a power cut of the serving machine; the server survives, as
it does when it runs elsewhere. The test reads state through Prefect's REST API, as a user would.

`schedule.crashed_after_seconds=60` (the shortest the config allows with Prefect's minimum 30 s
heartbeat) keeps the test short; the default is 90 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from litops.core.config import ConfigError
from litops.flows.config import load_config
from tests.flows.test_crash_safety import assert_consistent, versions
from tests.flows.test_schedule import LITOPS, TINY, _env, _litops, _post

DEPLOYMENT = "nightly-lit-embedded"
CRASHED_AFTER = 60
STEPS = 30
BOUND_S = 120  # the bar: Crashed within 2 minutes of the last heartbeat
# Long enough to be killed after its first checkpoint; the resumed run trains the rest.
OVERRIDES = [*(o for o in TINY if not o.startswith(("train.steps", "train.checkpoint_every"))),
             f"train.steps={STEPS}", "train.checkpoint_every=10", "schedule.cron=0 0 1 1 *",
             f"schedule.crashed_after_seconds={CRASHED_AFTER}"]


def _deploy(home: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([LITOPS, "deploy", *OVERRIDES], env=_env(home), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _deployment_id(url: str, deploy_log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _post(url, "/deployments/filter", {"deployments": {"name": {"any_": [DEPLOYMENT]}}})
        if found and "serving" in deploy_log.read_text():
            return found[0]["id"]
        time.sleep(1)
    raise AssertionError(f"`litops deploy` did not serve within {timeout:.0f} s:\n{deploy_log.read_text()[-3000:]}")


def _run(url: str, run_id: str) -> dict:
    return _post(url, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})[0]


def _wait_state(url: str, run_id: str, states: set[str], timeout: float, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _run(url, run_id)
        if run["state"]["type"] in states:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} not {states} within {timeout:.0f} s: {run['state']}\n"
                         f"{log.read_text()[-3000:]}")


def _wait_checkpoint(home: Path, deploy_log: Path, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := sorted(home.glob("checkpoints/*/step-*.pt")):
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint within {timeout:.0f} s:\n{deploy_log.read_text()[-3000:]}")


def _heartbeats(url: str, run_id: str) -> list[datetime]:
    page = _post(url, "/events/filter", {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                                                     "resource": {"id": [f"prefect.flow-run.{run_id}"]}},
                                         "limit": 50})
    return sorted(datetime.fromisoformat(e["occurred"]) for e in page["events"])


def _deployment_slots(url: str, deployment_id: str) -> int:
    limits = _post(url, "/v2/concurrency_limits/filter", {})
    (limit,) = [lim for lim in limits if lim["name"] == f"deployment:{deployment_id}"]
    return limit["active_slots"]


def _crash_trigger(url: str) -> str:
    """The id the server gave the crash automation's trigger: it changes when the automation is updated."""
    (automation,) = [a for a in _post(url, "/automations/filter", {}) if a["name"].endswith("mark silent runs Crashed")]
    return automation["trigger"]["id"]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.parametrize("override, key", [("schedule.heartbeat_seconds=10", "schedule.heartbeat_seconds"),
                                           ("schedule.crashed_after_seconds=45", "schedule.crashed_after_seconds")])
def test_heartbeat_and_crash_window_out_of_range_are_refused_in_one_line(override, key):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_a_killed_deploy_run_is_marked_crashed_and_the_next_run_resumes_its_training(tmp_path):
    home = tmp_path / "home"
    _litops(home, "server", "start")
    url = json.loads((home / "prefect" / "server.json").read_text())["api_url"]
    first_log, second_log = tmp_path / "deploy-1.log", tmp_path / "deploy-2.log"
    first = _deploy(home, first_log)
    second = None
    try:
        deployment_id = _deployment_id(url, first_log)
        killed = _post(url, f"/deployments/{deployment_id}/create_flow_run", {})
        checkpoint = _wait_checkpoint(home, first_log)
        trigger = _crash_trigger(url)
        assert _run(url, killed["id"])["state"]["type"] == "RUNNING"
        _kill_group(first)  # the power cut: the runner, the flow and its forkserver at once
        killed_at = time.time()

        second = _deploy(home, second_log)
        assert _deployment_id(url, second_log) == deployment_id
        assert _crash_trigger(url) == trigger  # left alone: an update would forget the silence it is timing
        next_run = _post(url, f"/deployments/{deployment_id}/create_flow_run", {})  # queued behind the slot

        crashed = _wait_state(url, killed["id"], {"CRASHED"}, CRASHED_AFTER + BOUND_S, second_log)
        beats = _heartbeats(url, killed["id"])
        assert beats and beats[-1].timestamp() <= killed_at + 1, (beats, killed_at)
        crashed_at = datetime.fromisoformat(crashed["state"]["timestamp"])
        silence = crashed_at - beats[-1]
        print(f"marked Crashed {silence.total_seconds():.1f} s after the last of {len(beats)} heartbeats "
              f"({crashed_at.timestamp() - killed_at:.1f} s after the kill)")
        assert silence.total_seconds() <= BOUND_S, silence
        assert "heartbeat" in crashed["state"]["message"], crashed["state"]

        done = _wait_state(url, next_run["id"], {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 300, second_log)
        assert done["state"]["type"] == "COMPLETED", f"{done['state']}\n{second_log.read_text()[-3000:]}"
        started = datetime.fromisoformat(done["start_time"])
        assert started >= crashed_at  # it waited for the slot the dead run held
        resumed = re.findall(r"resuming from step-(\d+)\.pt", second_log.read_text())
        assert resumed and int(checkpoint.stem.split("-")[1]) <= int(resumed[0]) < STEPS, \
            second_log.read_text()[-3000:]
        (version,) = versions(home)
        assert version.tags["gate_decision"] in ("promoted", "rejected")
        assert_consistent(home)
        assert _deployment_slots(url, deployment_id) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                _kill_group(proc)
        _litops(home, "server", "stop")
