"""MLflow implementation of the training logger. Imported only when tracking is configured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow_run.json"


CHECKPOINT_TAG = "litops.checkpoint"


class MLflowLogger:
    """Logs to one MLflow run per checkpoint folder, so a relaunched job continues the same run.

    The run is found by the folder's run file or, on a fresh pod whose folder came back from the
    object store without it, by the run's `litops.checkpoint` tag.
    """

    def __init__(self, tracking_uri: str, experiment: str, ckpt_dir: Path, run_name: str, tags: dict[str, str],
                 artifact_location: str = ""):
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        run_file = ckpt_dir / RUN_FILE
        if run_file.exists():
            self.run_id = json.loads(run_file.read_text())["run_id"]
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=artifact_location or None)
            earlier = self.client.search_runs([exp_id], filter_string=f"tags.`{CHECKPOINT_TAG}` = '{ckpt_dir.name}'",
                                              order_by=["attributes.start_time DESC"], max_results=1)
            tags = {**tags, CHECKPOINT_TAG: ckpt_dir.name}
            self.run_id = earlier[0].info.run_id if earlier else self.client.create_run(
                exp_id, run_name=run_name, tags=tags).info.run_id
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            run_file.write_text(json.dumps({"run_id": self.run_id}))
        self.client.update_run(self.run_id, status="RUNNING")
        self.system_metrics = start_system_metrics(self.run_id, tracking_uri)  # litops-lit

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
        if self.system_metrics is not None:  # litops-lit: flush and stop the sampler before the run ends
            try:
                self.system_metrics.finish()
            except Exception:  # noqa: BLE001 - metrics are best effort, never fail a training run
                pass
        self.client.set_terminated(self.run_id, status=status)


SYSTEM_METRICS_INTERVAL_S = 10.0  # litops-lit


def start_system_metrics(run_id: str, tracking_uri: str, interval: float = SYSTEM_METRICS_INTERVAL_S):
    """litops-lit: MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) sampled into the
    run as `system/*` while training. Needs psutil; returns None (and trains on) when it is missing or
    LITOPS_SYSTEM_METRICS=0."""
    import os

    if os.environ.get("LITOPS_SYSTEM_METRICS", "1") == "0":
        return None
    try:
        import psutil  # noqa: F401
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        return None
    interval = float(os.environ.get("LITOPS_SYSTEM_METRICS_INTERVAL", interval))
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, samples_before_logging=1,
                                   resume_logging=True, tracking_uri=tracking_uri)
    monitor.start()
    return monitor
