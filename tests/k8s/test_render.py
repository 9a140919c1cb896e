"""The Jobs (and Services) the Kubernetes launcher submits, and `litops k8s render-job`.

Stand-in: no cluster. Each rendered object is validated against the Kubernetes 1.31 OpenAPI
schema with `kubernetes_validate.validate(obj, "1.31", strict=True)`; the launcher submits
exactly these objects (test_launcher_protocol.py checks the POST bodies).
"""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from litops.core.component_cli import EXIT_CONFIG_ERROR
from litops.flows.config import load_config
from litops.flows.k8s_render import example_train_spec, render
from litops.flows.launcher import JobSpec


def k8s_cfg(*overrides):
    return load_config(["backend=kubernetes", "storage=s3", *overrides])


def pod_of(job):
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("component", ["data", "train", "evaluate", "register"])
def test_single_node_job_is_valid_and_locked_down(component):
    cfg = k8s_cfg("kubernetes.queue_name=litops-gpu", "kubernetes.priority_class=litops-training", "train.gpus_per_node=2")
    objs = render(JobSpec(f"{component}-x", component, ["--config", "/var/lib/litops/runs/r/config.json"]), cfg)
    assert [o["kind"] for o in objs] == ["Job"]
    job = objs[0]
    kubernetes_validate.validate(job, "1.31", strict=True)
    spec, pod = job["spec"], pod_of(job)
    c = pod["containers"][0]
    assert c["image"] == cfg.kubernetes.images[component]
    assert c["command"][:4] == ["python", "-u", "-m", f"litops.{component}"]
    # security context
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert next(v for v in pod["volumes"] if v["name"] == tmp["name"])["emptyDir"] == {}
    # lifecycle limits and failure policy
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] == 3
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "component", "operator": "In",
                                                 "values": [EXIT_CONFIG_ERROR]}} in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert pod["restartPolicy"] == "Never"
    # env from ConfigMap and Secret references only; no credential value in the manifest
    assert {"configMapRef": {"name": "litops-config"}} in c["envFrom"]
    assert {"secretRef": {"name": "litops-s3-credentials"}} in c["envFrom"]
    assert not any("SECRET" in e["name"] or "PASSWORD" in e["name"] for e in c["env"])
    assert pod["serviceAccountName"] == "litops-job"
    gpu = component == "train"
    assert (c["resources"]["limits"].get("nvidia.com/gpu") == "2") == gpu
    # CPU and memory limits equal the requests (Guaranteed QoS)
    assert c["resources"]["limits"]["cpu"] == c["resources"]["requests"]["cpu"] == cfg.kubernetes.cpu
    assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"] == cfg.kubernetes.memory
    # GPU placement only for GPU steps
    assert ("nodeSelector" in pod, "tolerations" in pod, "priorityClassName" in pod) == (gpu, gpu, gpu)
    assert (job["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") == "litops-gpu") == gpu
    assert spec.get("suspend", False) == gpu  # Kueue admits it
    if gpu:
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["priorityClassName"] == "litops-training"


def test_multinode_renders_indexed_job_and_headless_service():
    cfg = k8s_cfg("train.nodes=3", "train.gpus_per_node=8")
    svc, job = render(example_train_spec(cfg), cfg, name="litops-train-abc123")
    for obj in (svc, job):
        kubernetes_validate.validate(obj, "1.31", strict=True)
    assert svc["kind"] == "Service" and svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    spec, pod = job["spec"], pod_of(job)
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert all(job["spec"]["template"]["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    c = pod["containers"][0]
    cmd = c["command"]
    assert cmd[0] == "torchrun" and "--nnodes=3" in cmd and "--nproc-per-node=8" in cmd
    assert "--node-rank=$(NODE_RANK)" in cmd  # = JOB_COMPLETION_INDEX
    node_rank = next(e for e in c["env"] if e["name"] == "NODE_RANK")
    assert node_rank["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # pod 0's stable DNS name: <job>-0.<service>.<namespace>.svc
    assert "--master-addr=litops-train-abc123-0.litops-train-abc123.litops.svc.cluster.local" in cmd
    assert cmd[cmd.index("-m") + 1] == "litops.train"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_scanner_exceptions_follow_the_config():
    """checkov skip annotations name what the config chose, with a reason, and vanish with their cause."""
    cfg = k8s_cfg()
    job = render(example_train_spec(cfg), cfg, name="litops-train-abc123")[-1]
    skips = job["metadata"]["annotations"]
    assert all(k.startswith("checkov.io/skip") for k in skips)
    assert {v.split("=")[0] for v in skips.values()} == {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35"}
    assert all(v.count("=") == 1 and v.split("=")[1].strip() for v in skips.values())  # checkov splits on '='
    cfg.kubernetes.images["train"] = "ghcr.io/litops/litops-train@sha256:" + "0" * 64
    cfg.kubernetes.secrets = []
    job = render(example_train_spec(cfg), cfg, name="litops-train-abc123")[-1]
    assert "annotations" not in job["metadata"]
    kubernetes_validate.validate(job, "1.31", strict=True)


def test_job_names_are_dns_labels():
    cfg = k8s_cfg()
    job = render(JobSpec("Train_With A_Very/Long*Name-" + "x" * 80, "train"), cfg)[-1]
    name = job["metadata"]["name"]
    assert len(name) <= 52 and name[0].isalnum() and name[-1].isalnum() and name == name.lower()
    kubernetes_validate.validate(job, "1.31", strict=True)


def test_render_job_cli_prints_valid_yaml():
    out = subprocess.run([sys.executable, "-m", "litops.flows", "k8s", "render-job", "train.nodes=2", "train.gpus_per_node=8"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert [d["kind"] for d in docs] == ["Service", "Job"]
    for d in docs:
        kubernetes_validate.validate(d, "1.31", strict=True)
    single = subprocess.run([sys.executable, "-m", "litops.flows", "k8s", "render-job"], capture_output=True, text=True,
                            timeout=60)
    assert [d["kind"] for d in yaml.safe_load_all(single.stdout) if d] == ["Job"]
    bad = subprocess.run([sys.executable, "-m", "litops.flows", "k8s", "render-job", "train.nodes=zero"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 78 and "train.nodes" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_the_shard_cache_is_node_disk_shared_by_the_pods_readers():
    """S3 shards are cached on the pod's own emptyDir (node disk), not on the shared home volume;
    the trainer finds it through LITOPS_SHARD_CACHE_DIR when data.cache_dir is empty."""
    from litops.flows.k8s_render import SHARD_CACHE_ENV, SHARD_CACHE_MOUNT
    from litops.train.data_stream import shard_cache_spec

    cfg = k8s_cfg()
    pod = pod_of(render(JobSpec("train-x", "train", ["--config", "c.json"]), cfg)[0])
    volume = next(v for v in pod["volumes"] if v["name"] == "shard-cache")
    assert "emptyDir" in volume
    container = pod["containers"][0]
    assert {"name": "shard-cache", "mountPath": SHARD_CACHE_MOUNT} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[SHARD_CACHE_ENV] == SHARD_CACHE_MOUNT
    import os

    os.environ[SHARD_CACHE_ENV] = SHARD_CACHE_MOUNT
    try:
        assert shard_cache_spec(cfg).folder == SHARD_CACHE_MOUNT
    finally:
        del os.environ[SHARD_CACHE_ENV]
