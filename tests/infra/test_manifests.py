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


SERVERS = {"postgres", "minio", "mlflow", "prefect-server", "prefect-worker"}  # long-running: probed


def _containers(pod):
    return pod.get("initContainers", []) + pod["containers"]


def test_every_container_has_cpu_and_memory_requests_and_limits(rendered):
    _, objs = rendered
    for name, pod in _pods(objs):
        for c in _containers(pod):
            res = c["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{name}/{c['name']}: {part} {res.get(part)}"


def test_every_server_is_probed(rendered):
    _, objs = rendered
    servers = {name: pod for name, pod in _pods(objs) if name in SERVERS}
    assert set(servers) == SERVERS
    for name, pod in servers.items():
        c = pod["containers"][0]
        assert "livenessProbe" in c and "readinessProbe" in c, name
    worker = servers["prefect-worker"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    # the runner's health server: on, and on loopback only (it also serves run and shutdown endpoints)
    assert env["PREFECT_RUNNER_SERVER_ENABLE"] == "true" and env["PREFECT_RUNNER_SERVER_HOST"] == "127.0.0.1"
    assert "http://127.0.0.1:8080/health" in " ".join(worker["livenessProbe"]["exec"]["command"])


def _skips(obj):
    return {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k.startswith("checkov.io/skip")}


def test_scanner_skips_carry_a_reason(rendered):
    _, objs = rendered
    for obj in objs:
        for key, value in _skips(obj).items():
            check, sep, reason = value.partition("=")
            # checkov splits the value on '=': exactly one, then a reason
            assert sep and check.startswith("CKV") and reason.strip() and "=" not in reason, (obj["metadata"]["name"], key)


def test_secrets_reach_env_only_where_a_skip_says_why(rendered):
    _, objs = rendered
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        name, pod = o["metadata"]["name"], o["spec"]["template"]["spec"]
        from_env = any("secretRef" in src for c in _containers(pod) for src in c.get("envFrom", [])) or any(
            "secretKeyRef" in (e.get("valueFrom") or {}) for c in _containers(pod) for e in c.get("env", []))
        skipped = any(v.startswith("CKV_K8S_35=") for v in _skips(o).values())
        assert from_env == skipped, f"{name}: Secret in env {from_env}, CKV_K8S_35 skip {skipped}"
    by_name = {name: pod for name, pod in _pods(objs)}
    # these read their credentials from mounted files
    for name in ("postgres", "minio", "minio-bucket-init", "prefect-server"):
        mounted = {v["secret"]["secretName"] for v in by_name[name]["volumes"] if "secret" in v}
        assert mounted, name
    env = {e["name"]: e.get("value") for e in by_name["postgres"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/postgres/")


def test_platform_pods_run_with_high_uids_and_always_pull(rendered):
    _, objs = rendered
    for name, pod in _pods(objs):
        assert pod["securityContext"]["runAsUser"] >= 10000, name
        for c in _containers(pod):
            assert c["imagePullPolicy"] == "Always", (name, c["name"])


def test_kustomize_images_pin_a_digest(tmp_path):
    """An overlay's `images:` entry with a digest pins the image as name@digest (kustomize semantics)."""
    import shutil

    shutil.copytree(infra_dir() / "base", tmp_path / "base")
    digest = "sha256:" + "0" * 64  # a made-up digest: this checks the rewrite, it pins nothing real
    (tmp_path / "overlays" / "pinned").mkdir(parents=True)
    (tmp_path / "overlays" / "pinned" / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["../../base"],
        "images": [{"name": "postgres", "digest": digest},
                   {"name": "ghcr.io/litops/litops-platform", "newName": "registry.local:5000/litops-platform",
                    "newTag": "0.2.0"}]}))
    objs = render("pinned", root=tmp_path)
    images = {name: pod["containers"][0]["image"] for name, pod in _pods(objs)}
    assert images["postgres"] == f"postgres@{digest}"
    assert images["mlflow"] == "registry.local:5000/litops-platform:0.2.0"
    assert images["minio"] == "minio/minio:RELEASE.2024-10-13T13-34-11Z"  # no entry: unchanged
