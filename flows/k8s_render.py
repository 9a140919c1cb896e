"""Render the Kubernetes objects a step runs as: a batch/v1 Job (and, for multi-node training, an
Indexed Job plus a headless Service). Pure functions of (JobSpec, LitopsConfig) returning plain
manifests (camelCase dicts), so `litops k8s render-job` prints exactly what the launcher submits
and the tests validate it against the Kubernetes 1.31 schema without a cluster.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from litops.core.config import LitopsConfig
from litops.core.step_errors import ERRORS_ENV, EXIT_CONFIG_ERROR
from litops.flows.launcher import JobSpec

CONTAINER = "component"
LABEL_JOB = "litops.io/job"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MAX_JOB_NAME = 52  # Indexed pods are named <job>-<index>-<5 random>: keep hostnames within 63 chars


def dns_name(text: str, limit: int = MAX_JOB_NAME) -> str:
    """An RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (s[:limit].rstrip("-")) or "job"


def job_name(spec: JobSpec, suffix: str | None = None) -> str:
    suffix = suffix or uuid.uuid4().hex[:6]
    return f"{dns_name('litops-' + spec.name, MAX_JOB_NAME - len(suffix) - 1)}-{suffix}"


def is_multinode(spec: JobSpec, cfg: LitopsConfig) -> bool:
    return spec.component == "train" and cfg.train.nodes > 1


def gpus_for(spec: JobSpec, cfg: LitopsConfig) -> int:
    """GPUs per pod: the step's own request, or train.gpus_per_node for the trainer."""
    return max(spec.gpus, cfg.train.gpus_per_node if spec.component == "train" else 0)


def storage_env(cfg: LitopsConfig) -> dict[str, str]:
    """Non-secret storage settings every pod gets; the keys themselves come from the Secrets (envFrom)."""
    st = cfg.storage
    if st.kind != "s3":
        return {}
    env = {"AWS_DEFAULT_REGION": st.region}
    if st.endpoint_url:
        env.update(AWS_ENDPOINT_URL=st.endpoint_url, MLFLOW_S3_ENDPOINT_URL=st.endpoint_url)
    return env


def _command(spec: JobSpec, cfg: LitopsConfig, name: str) -> list[str]:
    module = f"litops.{spec.component}"
    if not is_multinode(spec, cfg):
        return ["python", "-u", "-m", module, *spec.args]
    k = cfg.kubernetes
    master = f"{name}-0.{name}.{k.namespace}.svc.cluster.local"  # pod 0's stable DNS name (hostname.subdomain)
    return ["torchrun", f"--nnodes={cfg.train.nodes}", f"--nproc-per-node={max(1, cfg.train.gpus_per_node)}",
            "--node-rank=$(NODE_RANK)", f"--master-addr={master}", f"--master-port={k.rendezvous_port}",
            "--max-restarts=0", "-m", module, *spec.args]


SHARD_CACHE_MOUNT = "/var/cache/litops/shards"  # the node-local S3 shard cache of a pod (litops.core.shard_cache)
SHARD_CACHE_ENV = "LITOPS_SHARD_CACHE_DIR"


def _env(spec: JobSpec, cfg: LitopsConfig) -> list[dict[str, Any]]:
    fixed = {"LITOPS_HOME": cfg.home, "PYTHONUNBUFFERED": "1", "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib",
             SHARD_CACHE_ENV: SHARD_CACHE_MOUNT,
             "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", ERRORS_ENV: "records", **storage_env(cfg), **spec.env}
    env = [{"name": k, "value": str(v)} for k, v in fixed.items()]
    if is_multinode(spec, cfg):
        env.append({"name": "NODE_RANK",
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}})
    return env


def _resources(spec: JobSpec, cfg: LitopsConfig) -> dict[str, Any]:
    k = cfg.kubernetes
    cpu_limit = k.cpu_limit or k.cpu  # equal to the request by default: Guaranteed QoS
    requests = {"cpu": k.cpu, "memory": k.memory}
    limits = {"cpu": cpu_limit, "memory": k.memory}
    if (gpus := gpus_for(spec, cfg)) > 0:
        requests["nvidia.com/gpu"] = str(gpus)
        limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def _tolerations(cfg: LitopsConfig) -> list[dict[str, Any]]:
    out = []
    for t in cfg.kubernetes.tolerations:
        tol = {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
        if t.operator == "Exists":
            tol.pop("value")
        out.append({k: v for k, v in tol.items() if v != ""})
    return out


def scanner_exceptions(spec: JobSpec, cfg: LitopsConfig, image: str) -> dict[str, str]:
    """checkov skip annotations (`checkov.io/skipN: CHECK=reason`) for what the config chose on purpose.

    Each applies only while its cause holds: pinning the image by digest or choosing
    imagePullPolicy Always removes the matching exception. A reason must not contain '='.
    """
    k = cfg.kubernetes
    reasons = {}
    if "@" not in image:
        reasons["CKV_K8S_43"] = (f"kubernetes.images.{spec.component} is a tag; set it to name@sha256:<digest> to pin "
                                 "the image")
        if k.image_pull_policy != "Always":
            reasons["CKV_K8S_15"] = (f"imagePullPolicy is kubernetes.image_pull_policy ({k.image_pull_policy}) so a "
                                     "node reuses its cached image; set Always or pin the image by digest")
    if k.secrets:
        reasons["CKV_K8S_35"] = ("the steps read the S3 keys as AWS_* variables (boto3 and DVC) from the Secrets in "
                                 "kubernetes.secrets")
    return {f"checkov.io/skip{n}": f"{check}={why}" for n, (check, why) in enumerate(reasons.items(), 1)}


def labels_for(spec: JobSpec, cfg: LitopsConfig, name: str) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "litops", "app.kubernetes.io/part-of": "litops",
              LABEL_COMPONENT: spec.component, LABEL_JOB: name}
    if cfg.kubernetes.queue_name and gpus_for(spec, cfg) > 0:
        labels[LABEL_KUEUE_QUEUE] = cfg.kubernetes.queue_name
    return labels


def render_job(spec: JobSpec, cfg: LitopsConfig, name: str) -> dict[str, Any]:
    k = cfg.kubernetes
    labels = labels_for(spec, cfg, name)
    pod_labels = {key: v for key, v in labels.items() if key != LABEL_KUEUE_QUEUE}
    multi = is_multinode(spec, cfg)
    image = k.images.get(spec.component)
    if not image:
        from litops.core.config import ConfigError

        raise ConfigError(f"config key 'kubernetes.images.{spec.component}' is not set")
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}},
                                     {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k.shm_size}},
                                     {"name": "shard-cache", "emptyDir": {}}]  # node disk, not the shared home
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"},
                                    {"name": "shard-cache", "mountPath": SHARD_CACHE_MOUNT}]
    if k.home_pvc:
        volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": k.home_pvc}})
        mounts.append({"name": "home", "mountPath": cfg.home})
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": k.image_pull_policy,
        "command": _command(spec, cfg, name),
        "env": _env(spec, cfg),
        "envFrom": [{"configMapRef": {"name": n}} for n in k.config_maps] + [{"secretRef": {"name": n}} for n in k.secrets],
        "resources": _resources(spec, cfg),
        "securityContext": {"runAsNonRoot": True, "runAsUser": k.run_as_user, "runAsGroup": k.run_as_user,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if multi:
        container["ports"] = [{"name": "rendezvous", "containerPort": k.rendezvous_port, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the Job controller replaces failed pods; required by podFailurePolicy
        "serviceAccountName": k.service_account,
        "automountServiceAccountToken": False,  # a step never talks to the API server
        "securityContext": {"runAsNonRoot": True, "runAsUser": k.run_as_user, "runAsGroup": k.run_as_user,
                            "fsGroup": k.run_as_user, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if gpus_for(spec, cfg) > 0:  # GPU placement applies to GPU steps only; CPU steps run on the default pool
        if k.node_selector:
            pod_spec["nodeSelector"] = dict(k.node_selector)
        if tol := _tolerations(cfg):
            pod_spec["tolerations"] = tol
        if k.priority_class:
            pod_spec["priorityClassName"] = k.priority_class
    if multi:
        pod_spec["subdomain"] = name  # <job>-<index>.<service> resolves through the headless Service
    job_spec: dict[str, Any] = {
        "backoffLimit": k.backoff_limit,
        "activeDeadlineSeconds": k.active_deadline_seconds,
        "ttlSecondsAfterFinished": k.ttl_seconds_after_finished,
        "podFailurePolicy": {"rules": [
            # A config error fails the same way on every retry: fail the Job at once.
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                  "values": [EXIT_CONFIG_ERROR]}},
            # Preemption, eviction, node drain: not the step's fault; not counted against backoffLimit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if multi:
        job_spec.update(completionMode="Indexed", completions=cfg.train.nodes, parallelism=cfg.train.nodes)
    if LABEL_KUEUE_QUEUE in labels:
        job_spec["suspend"] = True  # Kueue admits (unsuspends) the Job when its quota allows
    metadata: dict[str, Any] = {"name": name, "namespace": k.namespace, "labels": labels}
    if annotations := scanner_exceptions(spec, cfg, image):
        metadata["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def render_service(spec: JobSpec, cfg: LitopsConfig, name: str) -> dict[str, Any]:
    """Headless Service giving each Indexed pod a stable DNS name (<job>-<index>.<job>)."""
    k = cfg.kubernetes
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": k.namespace, "labels": labels_for(spec, cfg, name)},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {LABEL_JOB: name},
                     "ports": [{"name": "rendezvous", "port": k.rendezvous_port, "targetPort": k.rendezvous_port,
                                "protocol": "TCP"}]}}


def render(spec: JobSpec, cfg: LitopsConfig, name: str | None = None) -> list[dict[str, Any]]:
    """Every object a step submits: [Service (multi-node only), Job]."""
    name = name or job_name(spec)
    objs = [render_job(spec, cfg, name)]
    if is_multinode(spec, cfg):
        objs.insert(0, render_service(spec, cfg, name))
    return objs


def example_train_spec(cfg: LitopsConfig) -> JobSpec:
    """The train step as the retrain flow builds it (flows/steps.py), for `litops k8s render-job`."""
    from pathlib import Path

    home = Path(cfg.home)
    ckpt = home / "checkpoints" / "<config-hash>-<data-version>"
    args = ["--config", str(home / "runs" / "<run>" / "config.yaml"), "--dataset-dir",
            str(home / "data" / "datasets" / cfg.data.name), "--checkpoint-dir", str(ckpt),
            "--data-version", "<data-version>", "--tracking-uri", cfg.mlflow.tracking_uri or "<tracking-uri>",
            "--experiment", cfg.mlflow.experiment, "--artifact-location", cfg.mlflow.artifact_location]
    return JobSpec(name="train", component="train", args=args, gpus=0)
