"""The MLflow training logger continues one run per checkpoint folder, even on a fresh machine."""

from __future__ import annotations

import shutil

from mlflow.tracking import MlflowClient

from litops.train.mlflow_logger import RUN_FILE, MLflowLogger


def test_relaunch_continues_the_same_run_with_or_without_the_run_file(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ckpt = tmp_path / "ck" / "abc123-def456"
    first = MLflowLogger(uri, "exp", ckpt, "train-abc", {"config_hash": "abc123"}, str(tmp_path / "art"))
    first.log_metrics({"train/loss": 2.0}, step=10)
    first.close("FAILED")  # the pod died

    again = MLflowLogger(uri, "exp", ckpt, "train-abc", {"config_hash": "abc123"})
    assert again.run_id == first.run_id

    shutil.rmtree(ckpt)  # a replacement pod: checkpoints come back from S3, the run file does not
    fresh = MLflowLogger(uri, "exp", ckpt, "train-abc", {"config_hash": "abc123"})
    assert fresh.run_id == first.run_id and (ckpt / RUN_FILE).exists()
    fresh.log_metrics({"train/loss": 1.0}, step=20)
    fresh.close()
    client = MlflowClient(uri)
    assert [m.value for m in client.get_metric_history(first.run_id, "train/loss")] == [2.0, 1.0]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 1
