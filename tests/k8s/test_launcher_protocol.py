"""KubernetesJobLauncher against the Kubernetes REST protocol.

Stand-in: there is no control plane here (kube-apiserver is neither on PyPI nor in Debian), so
the official `kubernetes` client talks HTTP to `fake_apiserver.FakeKube`, a local server on
127.0.0.1 that answers the real API paths with real API JSON and applies the submitted Job's
own backoffLimit / podFailurePolicy. Pods are scripted here (log lines, exit codes, a
DisruptionTarget condition); test_preemption_resume.py runs a real trainer as the pod.
"""

from __future__ import annotations

import _thread
import threading

import pytest

from litops.core.config import LitopsConfig
from litops.core.step_errors import ErrorRecord
from litops.core.step_results import TrainResult, UnreadableRecord
from litops.flows.k8s_launcher import KubernetesJobLauncher
from litops.flows.launcher import ComponentFailed, JobSpec, make_launcher

from fake_apiserver import FakeKube, Scripted

pytestmark = pytest.mark.timeout(60)


def trained(steps: int, resumed_from: int | None = None) -> TrainResult:
    return TrainResult(model_path="/var/lib/litops/checkpoints/x/model.pt", steps=steps, resumed_from=resumed_from,
                       final_loss=1.2, samples_per_s=100.0, run_id=None, config_hash="c0ffee")


def launcher_for(kube: FakeKube, **k8s) -> KubernetesJobLauncher:
    cfg = LitopsConfig()
    cfg.kubernetes.api_host = kube.url
    cfg.kubernetes.poll_seconds = 0.05
    for key, value in k8s.items():
        setattr(cfg.kubernetes, key, value)
    launcher = make_launcher("kubernetes", cfg=cfg)  # the flow's factory, as retrain.py calls it
    assert isinstance(launcher, KubernetesJobLauncher)
    return launcher


def paths(kube: FakeKube, method: str) -> list[str]:
    return [r["path"] for r in kube.requests if r["method"] == method]


def test_create_status_logs_success():
    result_line = trained(3).to_line()
    with FakeKube([Scripted(["loading data", "step 1 loss 2.0", "step 2 loss 1.5", "step 3 loss 1.2", result_line])]) as kube:
        logged: list[str] = []
        job = launcher_for(kube).run(JobSpec("train-abc", "train", ["--config", "/x/config.json"]), logged.append)
    assert job.exit_code == 0
    assert job.result == trained(3)
    # every log line streamed into the flow's logger in order; the result line is not shown
    body = [l for l in logged if l.startswith(("loading", "step"))]
    assert body == ["loading data", "step 1 loss 2.0", "step 2 loss 1.5", "step 3 loss 1.2"]
    assert not any("LITOPS_RESULT" in l for l in logged)
    # the real API paths, in order: create, then status polls, pod lists, a followed log
    posts = paths(kube, "POST")
    assert posts == ["/apis/batch/v1/namespaces/litops/jobs"]
    name = kube.requests[0]["body"]["metadata"]["name"]
    assert f"/apis/batch/v1/namespaces/litops/jobs/{name}/status" in paths(kube, "GET")
    lists = [r for r in kube.requests if r["path"] == "/api/v1/namespaces/litops/pods"]
    assert lists and lists[0]["query"]["labelSelector"] == [f"litops.io/job={name}"]
    logs = [r for r in kube.requests if r["path"].endswith("/log")]
    assert logs and logs[0]["query"]["follow"] == ["true"] and logs[0]["query"]["container"] == ["component"]
    assert not paths(kube, "DELETE")  # a finished Job is left to its ttlSecondsAfterFinished


def test_pod_failure_retries_then_surfaces_logs_and_reason():
    crash = Scripted(["step 1", "RuntimeError: CUDA error: an illegal memory access was encountered"], exit_code=1)
    with FakeKube([crash]) as kube:
        logged: list[str] = []
        with pytest.raises(ComponentFailed) as err:
            launcher_for(kube, backoff_limit=2).run(JobSpec("train-x", "train"), logged.append)
    e = err.value
    assert e.exit_code == 1
    assert kube.attempts[kube.requests[0]["body"]["metadata"]["name"]] == 3  # 1 + backoffLimit retries
    msg = str(e)
    assert "BackoffLimitExceeded" in msg and "illegal memory access" in msg
    assert sum("failed with exit code 1; the Job retries it" in l for l in logged) == 3


def test_config_error_fails_the_job_at_once():
    """Exit code 78 matches the podFailurePolicy FailJob rule: no retry, and the flow sees 78 (its retry
    condition then does not retry either)."""
    with FakeKube([Scripted(["litops train: config error: config key 'train.steps' must be >= 0"], exit_code=78)]) as kube:
        with pytest.raises(ComponentFailed) as err:
            launcher_for(kube, backoff_limit=5).run(JobSpec("train-x", "train"), lambda _l: None)
    assert err.value.exit_code == 78
    assert "PodFailurePolicy" in str(err.value) and "train.steps" in str(err.value)
    assert list(kube.attempts.values()) == [1]
    assert err.value.error is None and err.value.kind == "config" and not err.value.retried  # judged by its exit code


def test_a_pods_error_record_reaches_the_flow_as_its_one_line():
    record = ErrorRecord("train", "config", "config key 'train.steps' must be >= 0")
    with FakeKube([Scripted(["loading", record.to_line()], exit_code=record.exit_code)]) as kube:
        logged: list[str] = []
        with pytest.raises(ComponentFailed) as err:
            launcher_for(kube, backoff_limit=5).run(JobSpec("train-x", "train"), logged.append)
    assert err.value.error == record and not err.value.retried
    assert "litops train: config error: config key 'train.steps' must be >= 0" in logged
    assert not any("LITOPS_ERROR" in line for line in logged + err.value.tail)


def test_a_result_of_an_unknown_kind_is_refused_naming_the_step():
    line = trained(3).to_line().replace('"kind": "train"', '"kind": "train-v9"')
    with FakeKube([Scripted([line])]) as kube:
        with pytest.raises(UnreadableRecord, match=r"train step 'train-u': unknown result kind 'train-v9'"):
            launcher_for(kube).run(JobSpec("train-u", "train"), lambda _l: None)


def test_preempted_pod_is_replaced_without_counting_a_failure():
    first = Scripted(["resuming: none", "step 10 checkpoint saved"], preempt=True)
    second = Scripted(["resuming from step-00000010.pt (step 10/20)", "step 20 checkpoint saved",
                       trained(20, resumed_from=10).to_line()])
    with FakeKube([first, second]) as kube:
        logged: list[str] = []
        job = launcher_for(kube, backoff_limit=0).run(JobSpec("train-p", "train"), logged.append)
    assert job.result == trained(20, resumed_from=10)  # backoffLimit 0, yet it completed: Ignore rule
    assert any("was disrupted (PreemptionByScheduler" in l for l in logged)
    assert sum(l.startswith("--- pod ") for l in logged) == 2  # both pods' logs were streamed
    assert logged.index("step 10 checkpoint saved") < logged.index("resuming from step-00000010.pt (step 10/20)")


def test_cancellation_deletes_the_job_with_foreground_propagation():
    """The flow run is cancelled while the step runs: Prefect raises into the flow's thread; here a
    KeyboardInterrupt is raised in the main thread while it blocks on the log stream."""
    with FakeKube([Scripted([], forever=True, delay=0.02)]) as kube:
        logged: list[str] = []
        started = threading.Event()

        def log(line: str) -> None:
            logged.append(line)
            if line.startswith("working 5"):
                started.set()

        timer = threading.Thread(target=lambda: started.wait(20) and _thread.interrupt_main(), daemon=True)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            launcher_for(kube).run(JobSpec("train-c", "train"), log)
        deletes = [r for r in kube.requests if r["method"] == "DELETE"]
        assert len(deletes) == 1
        name = kube.requests[0]["body"]["metadata"]["name"]
        assert deletes[0]["path"] == f"/apis/batch/v1/namespaces/litops/jobs/{name}"
        assert deletes[0]["query"]["propagationPolicy"] == ["Foreground"]
        assert deletes[0]["body"]["propagationPolicy"] == "Foreground"
        assert not kube.jobs and not kube.pods  # the pod is gone too
    assert any("deleted Job" in l and "foreground" in l for l in logged)


def test_multinode_submits_service_and_indexed_job():
    cfg_nodes = dict(backoff_limit=1)
    with FakeKube([Scripted([trained(1).to_line()])]) as kube:
        launcher = launcher_for(kube, **cfg_nodes)
        launcher.cfg.train.nodes = 2
        job = launcher.run(JobSpec("train-m", "train"), lambda _l: None)
    assert job.result == trained(1)
    posts = [r for r in kube.requests if r["method"] == "POST"]
    assert [p["path"] for p in posts] == ["/api/v1/namespaces/litops/services", "/apis/batch/v1/namespaces/litops/jobs"]
    assert posts[1]["body"]["spec"]["completionMode"] == "Indexed"
    # the Service is cleaned up with the run (the Job's TTL does not cover it)
    assert any(r["method"] == "DELETE" and "/services/" in r["path"] for r in kube.requests)
