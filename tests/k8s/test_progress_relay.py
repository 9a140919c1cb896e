"""KubernetesJobLauncher relays a pod's progress lines as the local launcher does: drawn, never logged."""

from __future__ import annotations

import json

import pytest

from litops.core.config import LitopsConfig
from litops.core.step_results import TrainResult
from litops.flows.k8s_launcher import KubernetesJobLauncher
from litops.flows.launcher import JobSpec
from litops.flows.progress import ProgressRenderer

from fake_apiserver import FakeKube, Scripted

pytestmark = pytest.mark.timeout(60)
TRAINED = TrainResult(model_path="/var/lib/litops/checkpoints/x/model.pt", steps=50, resumed_from=None, final_loss=1.0,
                      samples_per_s=100.0, run_id=None, config_hash="c0ffee")


def progress_line(done: int, total: int = 50) -> str:
    return "LITOPS_PROGRESS " + json.dumps({"task": "train", "done": done, "total": total, "unit": "step",
                                            "postfix": {"loss": "1.0"}})


def test_pod_progress_is_drawn_not_logged(monkeypatch):
    monkeypatch.setattr("litops.flows.k8s_launcher.ProgressRenderer", lambda log: ProgressRenderer(log, live=False))
    lines = ["loading data", *[progress_line(done) for done in range(51)], "saved\rsaved again",
             TRAINED.to_line()]
    with FakeKube([Scripted(lines, delay=0.001)]) as kube:
        cfg = LitopsConfig()
        cfg.kubernetes.api_host, cfg.kubernetes.poll_seconds = kube.url, 0.05
        logged: list[str] = []
        job = KubernetesJobLauncher(cfg=cfg).run(JobSpec("train-p", "train"), logged.append)
    assert job.result == TRAINED
    assert not any("LITOPS_PROGRESS" in line for line in logged + job.log_tail)
    drawn = [line for line in logged if line.startswith("train:")]
    assert len(drawn) == 11 and drawn[-1].startswith("train: 100% 50/50 step")
    assert "loading data" in logged and "saved again" in logged and "saved" not in logged  # \r: the last redraw
