"""A dataset that stays in S3 trains through a Kubernetes Job: `data add --in-place` versions the
bucket (manifest only), the Job's trainer streams the shards through its pod's node-cache emptyDir,
and nothing lands in the home. Stand-ins: the Kubernetes API is tests/k8s/fake_apiserver.FakeKube
(real REST paths, driven by the official client; its "kubelet" runs the rendered container command
for real, each emptyDir a folder of the pod's own); S3 is moto's server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_apiserver import FakeKube, Process
from s3_helpers import ACCESS_KEY, SECRET_KEY, tiny_config
from test_s3_in_place import config, flat_bucket, s3_client  # noqa: F401 - flat_bucket is a fixture
from litops.core.config import LitopsConfig
from litops.flows.k8s_launcher import KubernetesJobLauncher
from litops.flows.launcher import JobSpec

pytestmark = pytest.mark.timeout(180)


def test_a_kubernetes_job_trains_on_a_dataset_that_stays_in_the_bucket(flat_bucket, s3_env, tmp_path):
    from litops.data.api import add_in_place_and_version

    home = tmp_path / "home"
    added = add_in_place_and_version(f"s3://{flat_bucket}/laion", config(home, "laion"))
    dataset = Path(added["dataset_dir"])
    assert not list(home.rglob("*.tar")), "the data repo holds the manifest, not the shards"
    cfg_file = tiny_config(tmp_path / "config.json", 4, flat_bucket, s3_env["AWS_ENDPOINT_URL"])
    pod = Process(env_from={"litops-s3-credentials": {"AWS_ACCESS_KEY_ID": ACCESS_KEY,
                                                      "AWS_SECRET_ACCESS_KEY": SECRET_KEY}},
                  tmp_root=str(tmp_path / "pods"))
    cfg = LitopsConfig()
    cfg.kubernetes.poll_seconds, cfg.kubernetes.backoff_limit = 0.1, 0
    cfg.storage.kind, cfg.storage.bucket, cfg.storage.endpoint_url = "s3", flat_bucket, s3_env["AWS_ENDPOINT_URL"]
    spec = JobSpec("train-in-place", "train", ["--config", str(cfg_file), "--dataset-dir", str(dataset),
                                               "--checkpoint-dir", str(tmp_path / "ckpt"),
                                               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                               "--experiment", "in-place", "--artifact-location", str(tmp_path / "art")])
    logged: list[str] = []
    with FakeKube(lambda n: pod) as kube:
        cfg.kubernetes.api_host = kube.url
        job = KubernetesJobLauncher(cfg).run(spec, logged.append)
    assert job.result.steps == 4, "\n".join(logged)[-3000:]
    cached = sorted(p.name for p in (tmp_path / "pods").rglob("volumes/shard-cache/shards/*"))
    assert any(name.endswith("00000.tar") for name in cached) and any(name.endswith("00001.tar") for name in cached), \
        f"the shards came through the pod's node cache: {cached}"
    assert not list(home.rglob("*.tar")) and not (home / "shard-cache").exists()
