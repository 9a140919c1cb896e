"""Preemption on Kubernetes, then a replacement pod that resumes from the checkpoint on S3;
and credentials that never leak into logs or MLflow.

Stand-ins: the Kubernetes API is tests/k8s/fake_apiserver.FakeKube (real REST paths, driven by
the official client); its "kubelet" runs the rendered Job's container command for real (the
trainer), with the container's env plus the values of the Secret named in envFrom, and a fresh
TMPDIR per pod (the pod's emptyDir: nothing survives locally). The first pod is preempted (SIGTERM
and a DisruptionTarget condition) right after it uploaded a checkpoint to S3, which is moto's
S3 server on 127.0.0.1. MLflow tracks to a SQLite file (the run's params are read back).
"""

from __future__ import annotations

import pytest

from s3_helpers import ACCESS_KEY, SECRET_KEY, tiny_config, tiny_dataset
from fake_apiserver import FakeKube, Process
from litops.core.config import LitopsConfig
from litops.flows.k8s_launcher import KubernetesJobLauncher
from litops.flows.launcher import JobSpec

pytestmark = pytest.mark.timeout(180)


def test_preempted_training_pod_resumes_from_s3_and_no_secret_leaks(tmp_path, s3_env, bucket):
    data = tiny_dataset(tmp_path / "tiny")
    cfg_file = tiny_config(tmp_path / "config.json", 6)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    secret = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    pod = Process(env_from={"litops-s3-credentials": secret}, preempt_when=r"uploaded step-00000002\.pt",
                  tmp_root=str(tmp_path / "pods"))
    cfg = LitopsConfig()
    cfg.kubernetes.poll_seconds, cfg.kubernetes.backoff_limit = 0.1, 0  # a counted failure would end the Job
    cfg.storage.kind, cfg.storage.bucket, cfg.storage.endpoint_url = "s3", bucket, s3_env["AWS_ENDPOINT_URL"]
    spec = JobSpec("train-preempt", "train", ["--config", str(cfg_file), "--dataset-dir", str(data), "--checkpoint-dir",
                                              f"s3://{bucket}/checkpoints/run1", "--tracking-uri", tracking,
                                              "--experiment", "leak-check", "--artifact-location", str(tmp_path / "art")])
    logged: list[str] = []
    with FakeKube(lambda n: pod) as kube:
        cfg.kubernetes.api_host = kube.url
        job = KubernetesJobLauncher(cfg).run(spec, logged.append)
        pod_logs = [p.log.decode() for p in kube.pods.values()]
        manifest = kube.requests[0]["body"]
    text = "\n".join(logged)
    assert len(pod_logs) == 2, text[-3000:]
    assert "was disrupted (PreemptionByScheduler" in text
    assert "fetched step-00000002.pt" in text and "resuming from step-00000002.pt (step 2/6)" in text
    assert job.result.resumed_from == 2 and job.result.steps == 6

    # --- credentials: only from the Secret, never in a manifest, a log or an MLflow param
    assert SECRET_KEY not in str(manifest) and ACCESS_KEY not in str(manifest)
    for blob in [text, *pod_logs]:
        assert SECRET_KEY not in blob and ACCESS_KEY not in blob
    import mlflow

    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name("leak-check")
    runs = client.search_runs([exp.experiment_id])
    assert runs
    for run in runs:
        blob = str(run.data.params) + str(run.data.tags) + str(run.data.metrics)
        assert run.data.params and SECRET_KEY not in blob and ACCESS_KEY not in blob
