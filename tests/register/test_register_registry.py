"""Registration, the gate's side effects, promote/rollback and the listing, on a real SQLite store."""

from __future__ import annotations

import json

import pytest

from litops.core.config import RegistryConfig
from litops.register import registry as reg
from litops.register.gate import decide

MODEL_NAME = "lit-embedded"
TAGS = {"data_version": "0123456789abcdef.dir", "git_sha": "deadbeef", "config_hash": "cafe0000cafe0000"}
CFG = RegistryConfig(min_improvement=0.01)
GOOD = {"zeroshot_top1": 0.70, "retrieval_i2t_r1": 0.6, "retrieval_t2i_r1": 0.6, "compositional_acc": 0.5}


def test_register_sets_four_tags_and_is_idempotent_per_run(store):
    assert store.first["created"] is True and store.first["version"] == 1
    assert store.first["model_uri"] == f"models:/{MODEL_NAME}/1"
    mv = store.client.get_model_version(MODEL_NAME, "1")
    for key, value in TAGS.items():
        assert mv.tags[key] == value
    assert mv.tags["train_run_id"] == store.run_id
    assert mv.run_id == store.run_id
    assert store.client.get_run(store.run_id).info.status == "FINISHED"  # status restored

    again = reg.register_version(store.client, MODEL_NAME, store.run_id, str(store.model_file), TAGS)
    assert again["created"] is False and again["version"] == 1
    assert len(store.client.search_model_versions(f"name='{MODEL_NAME}'")) == 1


def test_find_version(store):
    mv = reg.find_version(store.client, MODEL_NAME, TAGS["data_version"], TAGS["config_hash"])
    assert mv is not None and int(mv.version) == 1
    assert reg.find_version(store.client, MODEL_NAME, TAGS["data_version"], "other") is None
    assert reg.find_version(store.client, "no-such-model", "x", "y") is None


def test_register_refuses_bad_inputs(store, tmp_path):
    with pytest.raises(reg.RegistryError, match="missing tags"):
        reg.register_version(store.client, MODEL_NAME, store.run_id, str(store.model_file), {"git_sha": "x"})
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(reg.RegistryError, match="cannot be loaded as a LiT model"):
        reg.register_version(store.client, MODEL_NAME, store.new_run(), str(bad), TAGS)
    assert len(store.client.search_model_versions(f"name='{MODEL_NAME}'")) == 1


def test_apply_decision_promotes_and_rejects(store):
    name = "gate-apply"
    v1, v2, v3 = store.fake_versions(name, 3)
    c = store.client

    first = decide(GOOD, None, CFG)
    out = reg.apply_decision(c, name, v1, first, GOOD, CFG, None, run_id=store.run_id)
    assert out["promoted"] and out["champion_version"] == v1
    assert int(c.get_model_version_by_alias(name, "champion").version) == v1
    tags = c.get_model_version(name, str(v1)).tags
    assert tags["gate_decision"] == "promoted" and "absolute floor" in tags["gate_reason"]
    assert float(tags["metric.zeroshot_top1"]) == pytest.approx(0.70)
    assert "| zeroshot_top1 | primary |" in out["markdown"] and store.run_id in out["markdown"]
    assert "mlflow ui --backend-store-uri" in out["markdown"]

    worse = {**GOOD, "zeroshot_top1": 0.705}
    rejected = reg.gate_version(c, name, v2, worse, CFG, champion_metrics=GOOD)
    assert not rejected["promoted"] and "+0.005 < required +0.010" in rejected["reason"]
    assert rejected["champion_version"] == v1
    assert int(c.get_model_version_by_alias(name, "champion").version) == v1
    assert c.get_model_version(name, str(v2)).tags["gate_decision"] == "rejected"
    # a retried gate step returns the recorded decision instead of deciding again
    assert reg.gate_version(c, name, v2, GOOD, CFG)["already_decided"] is True

    better = {**GOOD, "zeroshot_top1": 0.75}
    promoted = reg.gate_version(c, name, v3, better, CFG)  # champion metrics from v1's tags
    assert promoted["promoted"] and promoted["champion_version"] == v3
    assert "recorded on v1" in promoted["markdown"]
    history = json.loads(c.get_registered_model(name).tags["champion_history"])
    assert history == [v1, v3]


def test_promote_rollback_round_trip(store):
    name = "gate-rollback"
    v1, v2 = store.fake_versions(name, 2)
    c = store.client
    with pytest.raises(reg.RegistryError, match="no champion"):
        reg.rollback(c, name)
    reg.promote(c, name, v1)
    with pytest.raises(reg.RegistryError, match="no previous champion"):
        reg.rollback(c, name)

    out = reg.promote(c, name, v2)
    assert out["previous_champion"] == v1
    assert int(c.get_model_version_by_alias(name, "champion").version) == v2
    assert c.get_model_version(name, str(v2)).tags["gate_decision"] == "manual"

    back = reg.rollback(c, name)
    assert {k: back[k] for k in ("version", "rolled_back_from", "model_uri")} == {
        "version": v1, "rolled_back_from": v2, "model_uri": f"models:/{name}@champion"}
    restored = c.get_model_version(name, str(v1))
    assert back["run_id"] == restored.run_id and back["data_version"] == restored.tags.get("data_version", "")
    assert int(c.get_model_version_by_alias(name, "champion").version) == v1
    assert c.get_model_version(name, str(v2)).tags["rolled_back"] == "true"
    with pytest.raises(reg.RegistryError, match="no previous champion"):
        reg.rollback(c, name)

    with pytest.raises(reg.RegistryError, match="has no version 99"):
        reg.promote(c, name, 99)
    with pytest.raises(reg.RegistryError, match="not registered"):
        reg.rollback(c, "no-such-model")


def test_list_models_and_table(store):
    name = "gate-list"
    v1, v2 = store.fake_versions(name, 2)
    reg.apply_decision(store.client, name, v1, decide(GOOD, None, CFG), GOOD, CFG)
    rows = reg.list_models(store.client, name)
    assert [r["version"] for r in rows] == [v2, v1]
    assert rows[1]["aliases"] == ["champion"] and rows[1]["decision"] == "promoted"
    assert rows[1]["metrics"]["zeroshot_top1"] == pytest.approx(0.70)
    table = reg.format_table(rows)
    assert "champion" in table and "zeroshot_top1" in table and "0.7000" in table
    assert reg.list_models(store.client, "no-such-model") == []
    assert reg.format_table([]) == "(no registered versions)"
