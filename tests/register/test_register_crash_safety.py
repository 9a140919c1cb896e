"""A gate killed between recording a promotion and moving the alias, and the next gate finishing it.

The kill is real: `python -m litops.register gate` runs with LITOPS_CRASH_AT=before_alias and dies
by SIGKILL. Also: the gate logs the challenger's metrics onto the version's MLflow LoggedModel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from litops.core.config import RegistryConfig
from litops.register import registry as reg
from litops.register.cli import lookup

CFG = RegistryConfig(min_improvement=0.01)
GOOD = {"zeroshot_top1": 0.70, "retrieval_i2t_r1": 0.6, "retrieval_t2i_r1": 0.6, "compositional_acc": 0.5}
BETTER = {**GOOD, "zeroshot_top1": 0.80}
TAGS = {"data_version": "feed.dir", "git_sha": "deadbeef", "config_hash": "c0ffee"}


def kill_gate_before_alias(store, name: str, version: int, metrics: dict, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / f"challenger-{name}-{version}.json"
    path.write_text(json.dumps(metrics))
    env = {k: v for k, v in os.environ.items() if k != "LITOPS_FLOW_PID"}
    env["LITOPS_CRASH_AT"] = "before_alias"
    return subprocess.run([sys.executable, "-m", "litops.register", "gate", "--tracking-uri", store.uri,
                           "--model-name", name, "--version", str(version), "--challenger-metrics", str(path)],
                          env=env, capture_output=True, text=True, timeout=120, start_new_session=True)


def champion_of(store, name: str) -> int | None:
    mv = reg.champion_version(store.client, name)
    return int(mv.version) if mv else None


def test_killed_promotion_is_recorded_as_pending_and_finished_by_the_next_gate(store, tmp_path):
    name = "crash-finish"
    v1, v2 = store.fake_versions(name, 2)
    reg.apply_decision(store.client, name, v1, reg.decide(GOOD, None, CFG), GOOD, CFG)

    killed = kill_gate_before_alias(store, name, v2, BETTER, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "SIGKILL at before_alias" in killed.stderr
    tags = store.client.get_model_version(name, str(v2)).tags
    assert tags["gate_decision"] == "promoting" and tags["gate_champion_version"] == str(v1)
    assert champion_of(store, name) == v1  # the alias never moved
    assert reg.recorded_decision(store.client, name, v2) is None  # not mistaken for a finished decision

    again = reg.gate_version(store.client, name, v2, BETTER, CFG)
    assert again["promoted"] and again["resumed"] and again["champion_version"] == v2
    assert champion_of(store, name) == v2
    assert store.client.get_model_version(name, str(v2)).tags["gate_decision"] == "promoted"
    assert json.loads(store.client.get_registered_model(name).tags["champion_history"]) == [v1, v2]


def test_pending_promotion_is_decided_again_when_the_champion_changed_meanwhile(store, tmp_path):
    name = "crash-moved"
    v1, v2, v3 = store.fake_versions(name, 3)
    reg.apply_decision(store.client, name, v1, reg.decide(GOOD, None, CFG), GOOD, CFG)
    assert kill_gate_before_alias(store, name, v2, BETTER, tmp_path).returncode == -signal.SIGKILL
    reg.promote(store.client, name, v3)  # a human moved the alias while v2's promotion was pending

    again = reg.gate_version(store.client, name, v2, BETTER, CFG, champion_metrics={**GOOD, "zeroshot_top1": 0.9})
    assert not again["promoted"] and "resumed" not in again
    assert "vs champion 0.900" in again["reason"]
    assert champion_of(store, name) == v3
    assert store.client.get_model_version(name, str(v2)).tags["gate_decision"] == "rejected"


def test_lookup_reports_an_ungated_version_until_the_gate_decides(store):
    name = "crash-lookup"
    reg.ensure_registered_model(store.client, name)
    run_id = store.new_run()
    v = int(store.client.create_model_version(name, source=str(store.root), run_id=run_id,
                                              tags={**TAGS, "train_run_id": run_id}).version)
    before = lookup(store.client, name, TAGS["data_version"], TAGS["config_hash"])
    assert before["version"] == v and before["decided"] is False and before["train_run_id"] == run_id
    reg.gate_version(store.client, name, v, GOOD, CFG)
    assert lookup(store.client, name, TAGS["data_version"], TAGS["config_hash"])["decided"] is True


def test_gate_logs_the_challenger_metrics_on_the_logged_model(store):
    name = "crash-logged-model"
    registered = reg.register_version(store.client, name, store.new_run(), str(store.model_file), TAGS)
    assert registered["model_id"]
    metrics = {**GOOD, "zeroshot_top1_heldout": 0.65}
    reg.gate_version(store.client, name, registered["version"], metrics, CFG)

    logged = {m.key: m.value for m in store.client.get_logged_model(registered["model_id"]).metrics}
    assert logged == pytest.approx(metrics)
