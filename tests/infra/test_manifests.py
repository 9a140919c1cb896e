"""infra/ (kustomize base + dev/gpu overlays) and `litops infra render`.

Stand-in: no cluster, no `kustomize` binary. flows/infra.py renders the kustomize layout in
Python, and every object is checked against the Kubernetes 1.31 OpenAPI schema with
`kubernetes_validate.validate(obj, "1.31", strict=True)` (unknown fields fail), which is what
`kubectl apply --dry-run=server` would check for built-in kinds. Policy (security context,
RBAC scope, no secret values) is asserted on the rendered objects.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from litops.flows.infra import infra_dir, render

OVERLAYS = ["base", "dev", "gpu"]
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return request.param, render(request.param)


def test_every_object_passes_the_1_31_schema(rendered):
    overlay, objs = rendered
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, "1.31", strict=True)


def test_base_has_the_platform():
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render("base")}
    for want in [("Namespace", "litops"), ("Deployment", "mlflow"), ("Service", "mlflow"), ("StatefulSet", "postgres"),
                 ("StatefulSet", "minio"), ("Job", "minio-bucket-init"), ("Deployment", "prefect-server"),
                 ("Deployment", "prefect-worker"), ("ServiceAccount", "litops-launcher"), ("Role", "litops-launcher"),
                 ("RoleBinding", "litops-launcher"), ("NetworkPolicy", "default-deny-ingress"),
                 ("PersistentVolumeClaim", "litops-home")]:
        assert want in kinds, want
    assert not any(o["kind"] == "Secret" for o in render("base")), "Secrets are created out of band"


def test_mlflow_uses_postgres_and_s3_artifacts():
    mlflow = next(o for o in render("base") if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    c = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--artifacts-destination=s3://litops/litops/mlflow" in c["args"] and "--serve-artifacts" in c["args"]
    store = next(e for e in c["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert store["valueFrom"]["secretKeyRef"]["name"] == "litops-mlflow-db"  # the password is never in the manifest


def _pods(objs):
    for o in objs:
        if o["kind"] in WORKLOADS:
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def test_security_context_of_every_pod(rendered):
    _, objs = rendered
    for name, pod in _pods(objs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            limits = c["resources"]["limits"]
            assert "memory" in limits or "nvidia.com/gpu" in limits, name
        if name != "gpu-smoke":  # nvidia-smi writes nothing
            tmp = [m for c in pod["containers"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            vols = {v["name"]: v for v in pod["volumes"]}
            assert tmp and "emptyDir" in vols[tmp[0]["name"]], f"{name}: /tmp must be an emptyDir"


def test_images_are_pinned(rendered):
    _, objs = rendered
    for name, pod in _pods(objs):
        for c in pod["containers"]:
            assert ":" in c["image"] and not c["image"].endswith(":latest"), (name, c["image"])


def test_rbac_is_namespaced_and_minimal(rendered):
    _, objs = rendered
    assert not any(o["kind"] in ("ClusterRole", "ClusterRoleBinding") for o in objs)
    roles = [o for o in objs if o["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in roles] == ["litops-launcher"]
    granted = {(g, r) for rule in roles[0]["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("batch", "jobs"), ("batch", "jobs/status"), ("", "pods"), ("", "pods/log"), ("", "services")}
    for rule in roles[0]["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert set(rule["verbs"]) <= {"create", "get", "list", "watch", "delete"}
    assert all(r["metadata"]["namespace"] == "litops" for r in roles)
    binding = next(o for o in objs if o["kind"] == "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "litops-launcher"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "litops-launcher", "namespace": "litops"}]
    # only the worker runs under the launcher's account; the step pods' account has no binding
    users = {name for name, pod in _pods(objs) if pod.get("serviceAccountName") == "litops-launcher"}
    assert users == {"prefect-worker"}
    job_sa = next(o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "litops-job")
    assert job_sa["automountServiceAccountToken"] is False


def test_network_policies_default_deny(rendered):
    _, objs = rendered
    deny = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_no_secret_in_infra_carries_a_value():
    found = 0
    for path in infra_dir().rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                found += 1
                kubernetes_validate.validate(doc, "1.31", strict=True)
                values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
                assert values and all(v in ("", None) for v in values.values()), f"{path}: {doc['metadata']['name']}"
    assert found >= 4  # the templates exist, empty


def test_overlays_differ_where_they_should():
    base, dev, gpu = (render(o) for o in OVERLAYS)
    get = lambda objs, kind, name: next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
    assert get(dev, "Deployment", "mlflow")["spec"]["replicas"] == 1 and get(base, "Deployment", "mlflow")["spec"]["replicas"] == 2
    assert get(dev, "PersistentVolumeClaim", "litops-home")["spec"]["accessModes"] == ["ReadWriteOnce"]
    # the patch merged the named container, keeping the base's other fields
    c = get(dev, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["cpu"] == "100m" and "--serve-artifacts" in c["args"]
    overrides = get(gpu, "ConfigMap", "litops-config")["data"]["LITOPS_OVERRIDES"]
    assert "train.gpus_per_node=8" in overrides and "kubernetes.priority_class=litops-training" in overrides
    smoke = get(gpu, "Job", "gpu-smoke")["spec"]["template"]["spec"]
    assert smoke["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert get(gpu, "PriorityClass", "litops-training")["value"] == 1000


def test_gpu_overlay_overrides_compose():
    """The overrides the gpu overlay's worker runs with are a valid litops config."""
    from litops.flows.config import load_config

    gpu = render("gpu")
    overrides = next(o for o in gpu if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "litops-config")["data"]["LITOPS_OVERRIDES"]
    cfg = load_config(overrides.split())
    assert (cfg.launcher.kind, cfg.storage.kind, cfg.train.gpus_per_node) == ("kubernetes", "s3", 8)
    dev = render("dev")
    overrides = next(o for o in dev if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "litops-config")["data"]["LITOPS_OVERRIDES"]
    assert load_config(overrides.split()).train.device == "cpu"


def test_cli_prints_the_overlay():
    out = subprocess.run([sys.executable, "-m", "litops.flows", "infra", "render", "--overlay", "gpu"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs == render("gpu")
    bad = subprocess.run([sys.executable, "-m", "litops.flows", "infra", "render", "--overlay", "nope"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 78 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr
