"""MLflow implementation of the training logger. Imported only when tracking is configured."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow_run.json"
CHECKPOINT_TAG = "litops.checkpoint"
CONFIG_ARTIFACT = "config.yaml"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
NOT_IN_PARAM_KEYS = re.compile(r"[^/\w.\- :]")  # MLflow accepts only these characters in param keys


def param_key(key: str) -> str:
    return NOT_IN_PARAM_KEYS.sub("_", key)


def last_logged_steps(client, run) -> dict[str, int]:
    """Per training metric, the highest step the run already holds (empty for a new run).
    system/* metrics belong to MLflow's sampler, which keeps its own step count."""
    keys = [k for k in run.data.metrics if not k.startswith("system/")]
    return {k: max(m.step for m in client.get_metric_history(run.info.run_id, k)) for k in keys}


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
        self.run_id = self._open_run(experiment, ckpt_dir, run_name, tags, artifact_location)
        run = self.client.get_run(self.run_id)
        for key, value in tags.items():  # a run created by an older trainer may lack newer tags
            if key not in run.data.tags:
                self.client.set_tag(self.run_id, key, value)
        self.logged_steps = last_logged_steps(self.client, run)
        self.client.update_run(self.run_id, status="RUNNING")
        # started at the first metrics, once the data readers have forked: a fork beside the
        # sampler's thread can copy a lock mid-use and hang a reader
        self.tracking_uri, self.system_metrics, self.sampling = tracking_uri, None, False

    def _open_run(self, experiment: str, ckpt_dir: Path, run_name: str, tags: dict[str, str],
                  artifact_location: str) -> str:
        """The run id of this checkpoint folder's run: from its run file, its tag, or a new run."""
        run_file = ckpt_dir / RUN_FILE
        if run_file.exists():
            return json.loads(run_file.read_text())["run_id"]
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=artifact_location or None)
        earlier = self.client.search_runs([exp_id], filter_string=f"tags.`{CHECKPOINT_TAG}` = '{ckpt_dir.name}'",
                                          order_by=["attributes.start_time DESC"], max_results=1)
        run_id = earlier[0].info.run_id if earlier else self.client.create_run(
            exp_id, run_name=run_name, tags={**tags, CHECKPOINT_TAG: ckpt_dir.name}).info.run_id
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"run_id": run_id}))
        return run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        named = {param_key(k): v for k, v in params.items()}
        new = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in named.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        # A resumed job re-runs the steps between its checkpoint and the crash: those points are already here.
        if not self.sampling:
            self.system_metrics, self.sampling = start_system_metrics(self.run_id, self.tracking_uri), True
        fresh = {k: v for k, v in metrics.items() if step > self.logged_steps.get(k, -1)}
        if not fresh:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in fresh.items()])
        self.logged_steps.update(dict.fromkeys(fresh, step))

    def log_dataset(self, name: str, digest: str, source: dict[str, str]) -> None:
        """The training data as a run input (MLflow dataset entity), once per run however often it resumes."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = self.client.get_run(self.run_id).inputs
        logged = inputs.dataset_inputs if inputs else []
        if any(d.dataset.name == name and d.dataset.digest == digest for d in logged):
            return
        dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps(source, sort_keys=True))
        training = [InputTag(MLFLOW_DATASET_CONTEXT, "training")]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, training)])

    def log_config_file(self, config: dict[str, Any]) -> None:
        """The resolved config as `config.yaml`, written once: a resumed run keeps the config it started with."""
        import yaml

        if any(f.path == CONFIG_ARTIFACT for f in self.client.list_artifacts(self.run_id)):
            return
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), CONFIG_ARTIFACT)

    def close(self, status: str = "FINISHED") -> None:
        if self.system_metrics is not None:  # flush and stop the sampler before the run ends
            try:
                self.system_metrics.finish()
            except Exception:  # noqa: BLE001 - metrics are best effort, never fail a training run
                pass
        self.client.set_terminated(self.run_id, status=status)


SYSTEM_METRICS_INTERVAL_S = 10.0


def start_system_metrics(run_id: str, tracking_uri: str, interval: float = SYSTEM_METRICS_INTERVAL_S):
    """MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) sampled into the
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
