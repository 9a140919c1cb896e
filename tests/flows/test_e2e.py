"""The whole retrain flow on the embedded default, under Prefect's test harness, with a tiny config.

Real parts: a git+DVC data repo with a local remote, MLflow on SQLite, Prefect's temporary server,
and every step launched as its own OS process. The promotion and the rejection also post to a webhook:
the stand-in is an http.server on 127.0.0.1 (webhook_receiver.py); test_notifications.py covers the
failed run and the rollback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from webhook_receiver import (TOKEN, assert_promotion, assert_rejection, files_holding_token, flow_run_logs,
                              only_new, receiver)  # noqa: F401  (receiver is a fixture)

TINY = ["data.n_train=800", "data.n_val=160", "data.n_test=120", "data.image_size=32", "data.shard_size=400",
        "train.steps=80", "train.batch_size=64", "train.checkpoint_every=40", "train.warmup_steps=8", "train.lr=3e-3",
        "model.image_width=16", "model.text_width=64", "model.text_heads=2", "model.embed_dim=64",
        "registry.absolute_floor=0.25"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("litops-home")


def run_flow(home, monkeypatch, overrides):
    from litops.flows.config import load_config
    from litops.flows.retrain import retrain

    monkeypatch.setenv("LITOPS_HOME", str(home))
    return retrain(config=load_config(overrides))


@pytest.mark.slow
def test_retrain_promotes_then_skips_then_rejects_a_worse_challenger(harness, home, monkeypatch, receiver):
    monkeypatch.setenv("LITOPS_WEBHOOK_URL", receiver.url)
    first = run_flow(home, monkeypatch, TINY)
    assert first["status"] == "promoted", first
    promoted = only_new(receiver, 0)
    assert_promotion(promoted, first)
    uri = f"sqlite:///{home}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    champ = client.get_model_version_by_alias("lit-embedded", "champion")
    assert int(champ.version) == first["version"]
    for tag in ("data_version", "git_sha", "config_hash", "train_run_id"):
        assert champ.tags.get(tag), f"tag {tag} missing: {champ.tags}"
    assert champ.tags["data_version"] == first["data_version"] and champ.tags["data_version"].endswith(".dir")
    assert client.get_run(first["run_id"]).data.tags["git_sha"] == champ.tags["git_sha"]  # the flow's code version
    logged_model = client.get_logged_model(champ.source.removeprefix("models:/"))  # the gate logged the eval metrics
    logged = {m.key: m.value for m in logged_model.metrics}
    assert logged["zeroshot_top1"] == pytest.approx(first["metrics"]["zeroshot_top1"])
    for key in ("zeroshot_top1", "train/loss"):  # linking the model or resuming adds no second point
        steps = [m.step for m in client.get_metric_history(first["run_id"], key)]
        assert len(steps) == len(set(steps)), (key, steps)

    # A fresh process loads the champion through MLflow and gets unit-norm embeddings that match.
    probe = textwrap.dedent(f"""
        import io, json, sys
        import mlflow, numpy as np, pandas as pd
        from litops.core.stream import SplitStream
        from PIL import Image
        mlflow.set_tracking_uri("sqlite:///{home}/mlflow.db")
        model = mlflow.pyfunc.load_model("models:/lit-embedded@champion")
        split = next(SplitStream.open("{first_dataset(home)}", "val").one_pass(batch_size=64, image_size=32))
        images = []
        for img in split.images:
            buf = io.BytesIO(); Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG"); images.append(buf.getvalue())
        out = model.predict(pd.DataFrame({{"image": images, "text": split.captions}}))
        I, T = np.array(out["image_embedding"].tolist()), np.array(out["text_embedding"].tolist())
        names = sorted(set(split.captions))
        Tn = np.array(model.predict(pd.DataFrame({{"text": names}}))["text_embedding"].tolist())
        pred = (I @ Tn.T).argmax(1)
        acc = float(np.mean([names[p] == c for p, c in zip(pred, split.captions)]))
        print(json.dumps({{"img_norm": np.linalg.norm(I, axis=1).tolist(), "txt_norm": np.linalg.norm(T, axis=1).tolist(),
                          "acc": acc, "chance": 1 / len(names)}}))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    probe_result = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(abs(n - 1) < 1e-4 for n in probe_result["img_norm"] + probe_result["txt_norm"])
    assert probe_result["acc"] > 2 * probe_result["chance"], probe_result

    # Unchanged data and config: nothing to train.
    second = run_flow(home, monkeypatch, TINY)
    assert second["status"] == "up_to_date" and second["version"] == first["version"]
    assert "train" not in second["timings"]
    assert len(receiver.messages) == 1  # no decision, no message

    # A deliberately worse challenger is registered but not promoted; the champion stays.
    worse = run_flow(home, monkeypatch, [o for o in TINY if not o.startswith("train.steps")] + ["train.steps=1"])
    assert worse["status"] == "rejected", worse
    assert worse["version"] != first["version"]
    assert int(client.get_model_version_by_alias("lit-embedded", "champion").version) == first["version"]
    rejected = client.get_model_version("lit-embedded", str(worse["version"]))
    assert rejected.tags["gate_decision"] == "rejected" and rejected.tags["gate_reason"]
    rejection = only_new(receiver, 1)
    assert_rejection(rejection, worse, first)
    assert rejection["flow_run_id"] != promoted["flow_run_id"]

    logs = flow_run_logs([m["flow_run_id"] for m in (promoted, rejection)])
    assert any("PROMOTED" in line for line in logs) and not [line for line in logs if TOKEN in line]
    leaks = files_holding_token(home)
    assert not leaks, f"the webhook URL was written to {leaks}"


@pytest.mark.slow
def test_a_guard_the_benchmark_does_not_report_stops_the_flow_before_training(harness, home, monkeypatch):
    """The flow's own check (a scheduled run has no `litops run` before it): the gate-metrics step
    refuses in one line, before a new training config would train."""
    from litops.flows.launcher import ComponentFailed

    checkpoints = set((home / "checkpoints").glob("*")) if (home / "checkpoints").is_dir() else set()
    with pytest.raises(ComponentFailed) as refused:
        run_flow(home, monkeypatch, TINY + ["train.steps=3", "registry.guard_metrics=[auto,retrieval_i2t_r50]"])
    assert refused.value.exit_code == 78 and refused.value.spec.name == "register-gate-metrics"
    (line,) = [line for line in refused.value.tail if line.startswith("litops register: config error: ")]
    assert "guard_metrics entry 'retrieval_i2t_r50' is not reported for dataset 'embedded'" in line
    assert "zeroshot_top1" in line  # what there is
    assert set((home / "checkpoints").glob("*")) == checkpoints  # nothing trained


def first_dataset(home) -> str:
    return str(home / "data" / "datasets" / "embedded")
