"""checkov (an IaC scanner) finds nothing on what litops deploys: the base/dev/gpu overlays, the
Jobs the launcher submits, and every Dockerfile.

A check that does not apply is skipped in the manifest itself (`checkov.io/skipN: CHECK=reason`
on the workload); this test accepts a skip only with a reason and only for the checks listed in
ALLOWED_SKIPS (infra/README.md explains each). checkov pins boto3 1.35 while litops needs 1.43,
so it cannot live in the project's venv: it runs from its own venv (.venv/checkov), which this
test builds once with pip if no `checkov` is on PATH or in $CHECKOV (40-80 s).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from litops.flows.config import load_config
from litops.flows.infra import render as render_infra
from litops.flows.infra import to_yaml
from litops.flows.k8s_render import example_train_spec
from litops.flows.k8s_render import render as render_job
from litops.flows.launcher import JobSpec

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
CHECKOV_REQUIREMENT = "checkov==3.3.30"
TOOL_VENV = ROOT / ".venv" / "checkov"
DOCKERFILES = [f"components/{c}/Dockerfile" for c in ("data", "train", "evaluate", "register")] + ["flows/Dockerfile"]
# Checks that may be skipped, each for a reason given next to the skip (and in infra/README.md).
ALLOWED_SKIPS = {
    "CKV_K8S_43",  # image digests: set per deployment with a kustomize `images:` digest / kubernetes.images
    "CKV_K8S_35",  # Secrets as env where the software takes them only from env (MLflow's store URI, AWS_* keys)
    "CKV_K8S_38",  # the Prefect worker needs its service-account token to launch Jobs
    "CKV_K8S_15",  # rendered Jobs: imagePullPolicy follows kubernetes.image_pull_policy
}


def _checkov() -> str:
    found = os.environ.get("CHECKOV") or shutil.which("checkov")
    if found:
        return found
    exe = TOOL_VENV / "bin" / "checkov"
    if not exe.exists():
        python = TOOL_VENV / "bin" / "python"
        steps = [[sys.executable, "-m", "venv", str(TOOL_VENV)],
                 [str(python), "-m", "pip", "install", "-q", "-U", "pip"],
                 [str(python), "-m", "pip", "install", "-q", CHECKOV_REQUIREMENT]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"could not install {CHECKOV_REQUIREMENT} into {TOOL_VENV}: {last}")
    return str(exe)


def _write_targets(scan: Path) -> dict[str, str]:
    """The scanned files under `scan`, keyed by the path checkov reports ('/base.yaml')."""
    targets = {}
    for overlay in ("base", "dev", "gpu"):
        (scan / f"{overlay}.yaml").write_text(to_yaml(render_infra(overlay)))
        targets[f"/{overlay}.yaml"] = f"overlay {overlay}"
    single = load_config(["backend=kubernetes", "storage=s3"])
    multi = load_config(["backend=kubernetes", "storage=s3", "train.nodes=2", "train.gpus_per_node=8"])
    jobs = {
        "train-job.yaml": render_job(example_train_spec(single), single, name="litops-train-example"),
        "train-job-multinode.yaml": render_job(example_train_spec(multi), multi, name="litops-train-example"),
        "step-jobs.yaml": [obj for c in ("data", "evaluate", "register")
                           for obj in render_job(JobSpec(c, c, ["--config", "/var/lib/litops/runs/r/config.json"]),
                                                 single, name=f"litops-{c}-example")],
    }
    for name, objs in jobs.items():
        (scan / name).write_text(to_yaml(objs))
        targets[f"/{name}"] = f"rendered {name}"
    for rel in DOCKERFILES:
        (scan / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, scan / rel)
        targets[f"/{rel}"] = rel
    return targets


def _reports(stdout: str) -> list[dict]:
    data = json.loads(stdout)
    return data if isinstance(data, list) else [data]


def test_checkov_finds_nothing_unexplained(tmp_path):
    exe = _checkov()
    scan = tmp_path / "scan"
    scan.mkdir()
    targets = _write_targets(scan)
    # One directory, one run: the Jobs are scanned beside the overlays, whose NetworkPolicies
    # (default-deny-ingress selects every pod in the namespace) are what CKV2_K8S_6 looks for.
    out = subprocess.run([exe, "-d", str(scan), "--framework", "kubernetes", "dockerfile", "-o", "json", "--compact",
                          "--skip-download"], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.stdout.strip(), f"checkov printed no report (exit {out.returncode}): {out.stderr[-2000:]}"
    reports = _reports(out.stdout)
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, out.stderr[-2000:]

    counts: dict[str, collections.Counter] = {t: collections.Counter() for t in targets.values()}
    failed, bad_skips, graph_covered = [], [], set()
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        results = report["results"]
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in results.get(kind, []):
                target = targets.get(check["file_path"], check["file_path"])
                counts.setdefault(target, collections.Counter())[kind.split("_")[0]] += 1
                where = f"{target}: {check['check_id']} on {check['resource']}"
                if kind == "failed_checks":
                    failed.append(where)
                elif kind == "skipped_checks":
                    reason = (check.get("check_result") or {}).get("suppress_comment", "").strip()
                    if check["check_id"] not in ALLOWED_SKIPS or not reason or reason == "No comment provided":
                        bad_skips.append(f"{where} (reason: {reason!r})")
                elif check["check_id"] == "CKV2_K8S_6":
                    graph_covered.add(check["resource"])

    table = "\n".join(f"  {t:38s} passed {c['passed']:4d}  failed {c['failed']:3d}  skipped {c['skipped']:3d}"
                      for t, c in sorted(counts.items()))
    assert not failed, "checkov failed checks:\n  " + "\n  ".join(failed) + f"\nper target:\n{table}"
    assert not bad_skips, "skips without an allowed check id or a reason:\n  " + "\n  ".join(bad_skips) + f"\n{table}"
    assert all(counts[t]["passed"] > 0 for t in targets.values()), f"a target was not scanned:\n{table}"
    for name in ("litops-train-example", "litops-data-example", "litops-evaluate-example", "litops-register-example"):
        assert any(r.startswith(f"Pod.litops.{name}.") for r in graph_covered), \
            f"no NetworkPolicy covers the pods of Job {name} (CKV2_K8S_6)\n{table}"
