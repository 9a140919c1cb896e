"""Webhook notifications: exactly one message for each of a promotion, a rejection, a failed run and a rollback.

Where each is shown:
- A promotion and a rejection: by the promoting and the rejected flow runs that tests/flows/test_e2e.py
  makes anyway. They post to this same receiver (webhook_receiver.py), and test_e2e.py checks one
  message each (webhook_receiver.assert_promotion / assert_rejection): every field, the gate's
  metrics, run_url, and the token in no log line and no file. Two more training runs here would
  check the same messages for about two minutes more (74 s + 46 s measured).
- A failed run and a rollback: below.

Real parts: the retrain flow under Prefect's test harness (a real temporary Prefect server, whose
Secret block holds the URL for the failed run), every step its own OS process, MLflow on SQLite,
`litops promote` / `litops rollback` through the CLI's dispatch. Stand-ins: the webhook is an
http.server on 127.0.0.1 in a thread that records each POST, instead of Slack. The failure is
injected through the config: an MLflow store in a folder that does not exist fails the lookup step.
The two versions the rollback moves between are registered and gated through the register
component's registry API with chosen metrics, not trained: a rollback reads only the registry.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from test_e2e import TINY, harness, run_flow  # noqa: F401  (harness is a fixture)
from webhook_receiver import (TOKEN, Receiver, assert_links_to, files_holding_token, flow_run_logs, only_new,
                              receiver)  # noqa: F401  (receiver is a fixture)

SMALL = [o for o in TINY if not o.startswith(("data.n_", "data.shard_size"))]
SMALL += ["data.n_train=256", "data.n_val=64", "data.n_test=64", "data.shard_size=256"]
MODEL = "lit-embedded"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("notify-home")


def cli(argv: list[str]) -> int:
    from litops.flows.cli import dispatch, parse

    return dispatch(parse(argv))


def gated_version(client: MlflowClient, experiment_id: str, data_version: str, metrics: dict) -> dict:
    """A version as the flow's register and gate steps leave it, without training it: a run, a model
    version with the lineage tags, and the gate's decision on `metrics` against the champion."""
    from litops.core.config import RegistryConfig
    from litops.register import registry

    run = client.create_run(experiment_id).info
    registry.ensure_registered_model(client, MODEL)
    tags = {"data_version": data_version, "config_hash": "0" * 16, "git_sha": "unknown", "train_run_id": run.run_id}
    mv = client.create_model_version(MODEL, source=f"{run.artifact_uri}/model", run_id=run.run_id, tags=tags)
    decision = registry.gate_version(client, MODEL, mv.version, metrics, RegistryConfig())
    return {"version": int(mv.version), "run_id": run.run_id, "data_version": data_version,
            "promoted": decision["promoted"]}


@pytest.mark.slow
def test_a_failed_run_sends_one_message_to_the_url_in_a_secret_block(harness, home, monkeypatch, receiver, tmp_path):
    """The URL is read from a Prefect Secret block, not the environment."""
    from litops.core.workspace import Workspace
    from litops.data.versioning import DataRepo
    from prefect.blocks.system import Secret

    Secret(value=receiver.url).save("litops-test-webhook", overwrite=True)
    monkeypatch.delenv("LITOPS_WEBHOOK_URL", raising=False)
    broken_store = f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}"
    with pytest.raises(Exception, match="unreachable"):
        run_flow(home, monkeypatch, SMALL + [f"mlflow.tracking_uri={broken_store}",
                                             "notify.webhook_url=block:litops-test-webhook"])
    failed = only_new(receiver, 0)
    assert (failed["event"], failed["decision"], failed["version"]) == ("retrain_failed", "failed", None)
    data_version = DataRepo(Workspace(home)).current_version("embedded")  # versioned before the lookup failed
    assert failed["data_version"] == data_version and data_version.endswith(".dir")
    assert "unreachable" in failed["reason"] and broken_store in failed["reason"] and "\n" not in failed["reason"]
    assert failed["metrics"] == {}
    assert_links_to(failed, "FAILED")

    logs = flow_run_logs([failed["flow_run_id"]])
    assert any("unreachable" in line for line in logs) and not [line for line in logs if TOKEN in line]
    leaks = files_holding_token(home)
    assert not leaks, f"the webhook URL was written to {leaks}"


def test_a_rollback_sends_one_message_and_a_manual_promotion_none(monkeypatch, receiver, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("LITOPS_HOME", str(home))
    monkeypatch.setenv("LITOPS_WEBHOOK_URL", receiver.url)
    uri = f"sqlite:///{home}/mlflow.db"  # the workspace's own store: the one `litops rollback` reads
    home.mkdir()
    client = MlflowClient(uri, registry_uri=uri)
    experiment_id = client.create_experiment("litops", artifact_location=str(tmp_path / "artifacts"))
    scores = {"retrieval_i2t_r1": 0.5, "retrieval_t2i_r1": 0.5, "compositional_acc": 0.7}
    first = gated_version(client, experiment_id, "1" * 32 + ".dir", {"zeroshot_top1": 0.62, **scores})
    second = gated_version(client, experiment_id, "2" * 32 + ".dir", {"zeroshot_top1": 0.55, **scores})
    assert first["promoted"] and not second["promoted"]
    assert receiver.messages == []  # the flow announces gate decisions, not the registry

    assert cli(["promote", "--version", str(second["version"])]) == 0  # by hand: announces nothing
    assert receiver.messages == []
    assert cli(["rollback"]) == 0
    rollback = only_new(receiver, 0)
    assert (rollback["event"], rollback["decision"], rollback["version"]) == ("rollback", "rolled_back",
                                                                              first["version"])
    assert rollback["data_version"] == first["data_version"] and rollback["mlflow_run_id"] == first["run_id"]
    assert f"from v{second['version']} to v{first['version']}" in rollback["reason"]
    recorded = {"champion": 0.62, "rolled_back": 0.55}
    assert rollback["metrics"]["zeroshot_top1"] == pytest.approx(recorded, abs=1e-5)  # tags keep 6 digits
    assert rollback["flow_run_id"] is None and rollback["run_url"] is None  # no flow run; a SQLite store has no UI
    leaks = files_holding_token(home)
    assert not leaks, f"the webhook URL was written to {leaks}"


def test_an_unreachable_webhook_costs_one_warning_line_and_slack_gets_text_and_blocks(monkeypatch):
    """notify.send on its own: a webhook answering 503 is tried twice, then one warning line without
    the URL; the Slack form is an incoming-webhook body (text + Block Kit blocks)."""
    from litops.core.config import NotifyConfig
    from litops.flows.notify import Message, send

    message = Message(event="challenger_rejected", model="lit-embedded", version=4, data_version="0abc.dir",
                      decision="rejected", reason="zeroshot_top1 0.41 < 0.42 + 0.005", champion_version=3,
                      metrics={"zeroshot_top1": {"challenger": 0.41, "champion": 0.42}}, flow_run_id="f-1",
                      mlflow_run_id="r-1", links={"prefect_flow_run": "http://127.0.0.1:4200/runs/flow-run/f-1"})
    down, slack = Receiver(status=503), Receiver()
    try:
        warnings: list[str] = []
        monkeypatch.setenv("LITOPS_WEBHOOK_URL", down.url)
        assert send(message, NotifyConfig(), warnings.append) is False
        assert len(down.messages) == 2 and len(warnings) == 1
        assert "HTTP 503 after 2 attempts" in warnings[0]
        assert TOKEN not in warnings[0] and "127.0.0.1" not in warnings[0]

        monkeypatch.setenv("HOOK_FOR_SLACK", slack.url)
        assert send(message, NotifyConfig(webhook_url="env:HOOK_FOR_SLACK", format="slack"), warnings.append)
        (body,) = slack.messages
        assert body["text"] == "litops: lit-embedded v4 was not promoted (champion stays v3)"
        assert [b["type"] for b in body["blocks"]] == ["section", "section", "section", "context"]
        facts = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in body["blocks"][1]["fields"]}
        assert facts == {"*Model*": "lit-embedded", "*Version*": "4", "*Data version*": "0abc.dir",
                         "*Decision*": "rejected", "*Champion*": "3"}
        assert "&lt; 0.42" in body["blocks"][0]["text"]["text"]  # Slack markup escaped
        assert "challenger 0.4100  champion 0.4200" in body["blocks"][2]["text"]["text"]
        assert body["blocks"][3]["elements"][0]["text"] == "<http://127.0.0.1:4200/runs/flow-run/f-1|Prefect flow run>"

        monkeypatch.delenv("LITOPS_WEBHOOK_URL")  # unset: notifications are off, silently
        assert send(message, NotifyConfig(), warnings.append) is False and len(warnings) == 1
    finally:
        down.close()
        slack.close()


def test_a_literal_webhook_url_in_the_config_is_refused_without_echoing_it():
    """The config holds where the URL is kept (it is written to run folders and MLflow params)."""
    from litops.core.config import ConfigError
    from litops.flows.config import load_config

    literal = f"https://hooks.slack.com/services/{TOKEN}"
    with pytest.raises(ConfigError) as refused:
        load_config([f"notify.webhook_url={literal}"])
    assert "notify.webhook_url" in str(refused.value) and TOKEN not in str(refused.value)
    assert "\n" not in str(refused.value)
    assert load_config(["notify.webhook_url=block:team-hook"]).notify.webhook_url == "block:team-hook"
