"""MLflow implementation of the training logger. Imported only when tracking is configured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow_run.json"


class MLflowLogger:
    """Logs to one MLflow run per checkpoint folder, so a relaunched job continues the same run."""

    def __init__(self, tracking_uri: str, experiment: str, ckpt_dir: Path, run_name: str, tags: dict[str, str],
                 artifact_location: str = ""):
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        run_file = ckpt_dir / RUN_FILE
        if run_file.exists():
            self.run_id = json.loads(run_file.read_text())["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=artifact_location or None)
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            run_file.write_text(json.dumps({"run_id": self.run_id}))

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
