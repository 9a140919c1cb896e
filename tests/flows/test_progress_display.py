"""Progress in the flow's process: the renderer, the launcher's relay, and real components run through it."""

from __future__ import annotations

import io
import json
import sys

import pytest

from litops.core import progress
from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig, to_dict
from litops.core.step_results import ChampionResult
from litops.flows import launcher as launcher_module
from litops.flows.launcher import JobSpec, LocalProcessLauncher
from litops.flows.progress import ProgressRenderer
from tests.flows.test_launcher import ScriptLauncher

MLFLOW_CHATTER = ("INFO mlflow", "alembic", "Creating initial MLflow database tables", "system metrics")


def event(task: str, done: int, total: int, **postfix) -> dict:
    return {"task": task, "done": done, "total": total, "unit": "step", "postfix": postfix}


def test_log_file_gets_at_most_one_line_per_tenth():
    lines: list[str] = []
    renderer = ProgressRenderer(lines.append, live=False)
    for done in range(1, 1001):
        renderer.show(event("train", done, 1000, loss="0.5"))
    renderer.close()
    assert len(lines) == 11, lines  # 0%, 10%, ..., 100%
    assert lines[0].startswith("train:   0% 1/1000 step") and lines[1].startswith("train:  10% 100/1000 step")
    assert lines[-1].startswith("train: 100% 1000/1000 step") and "loss=0.5" in lines[-1]


def test_a_new_task_starts_its_own_tenths():
    lines: list[str] = []
    renderer = ProgressRenderer(lines.append, live=False)
    for task in ("evaluate challenger", "evaluate champion"):
        for done in (0, 50, 100):
            renderer.show(event(task, done, 100))
    assert [line.split("%")[0] for line in lines] == ["evaluate challenger:   0", "evaluate challenger:  50",
                                                      "evaluate challenger: 100", "evaluate champion:   0",
                                                      "evaluate champion:  50", "evaluate champion: 100"]


def test_terminal_gets_one_bar_redrawn_in_place_and_log_lines_above_it():
    screen, logged = io.StringIO(), []

    def log(line: str) -> None:  # a console log handler writes to the same terminal
        logged.append(line)
        screen.write(line + "\n")

    renderer = ProgressRenderer(log, live=True, stream=screen)
    for done in range(0, 301, 30):
        renderer.show(event("train", done, 300, loss=f"{3 - done / 100:.2f}"))
        if done == 150:
            renderer.log_around("checkpoint saved")
    renderer.close()
    assert logged == ["checkpoint saved"]  # the bar itself is never a log line
    text = screen.getvalue()
    assert text.count("\r") >= 10  # redrawn in place
    assert "train: 100%" in text and "300/300" in text and "loss=0.00" in text
    assert "\n" not in text.split("checkpoint saved\n", 1)[1].rstrip("\n")  # after the log line: the bar, on one line


class RecordingRenderer(ProgressRenderer):
    """The launcher's renderer in log-file mode, keeping every event it is shown."""

    events: list[dict] = []

    def __init__(self, log):
        super().__init__(log, live=False)

    def show(self, event: dict) -> None:
        RecordingRenderer.events.append(event)
        super().show(event)


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    monkeypatch.setattr(launcher_module, "ProgressRenderer", RecordingRenderer)
    RecordingRenderer.events = []
    return RecordingRenderer.events


def test_launcher_draws_progress_lines_and_never_logs_them(recorded):
    script = ("import os, sys, time\n"
              "from litops.core import progress\n"
              "assert os.environ['LITOPS_PROGRESS'] == 'lines'\n"
              "print('loading')\n"
              "with progress.start('demo', 200, unit='step') as bar:\n"
              "    for _ in range(200):\n"
              "        time.sleep(0.005); bar.update(1)\n"
              "sys.stderr.write('LITOPS_PROGRESS {\"task\": \"de\\n'); sys.stderr.flush()\n"  # torn
              "from litops.core.step_results import ChampionResult\n"
              "print(ChampionResult(version=1, model_uri=None).to_line())\n")
    seen: list[str] = []
    job = ScriptLauncher(script).run(JobSpec("t", "data"), log=seen.append)
    assert job.result == ChampionResult(version=1, model_uri=None)
    assert not any("LITOPS_PROGRESS" in line for line in seen + job.log_tail)
    assert recorded[0]["done"] == 0 and recorded[-1]["done"] == 200 and len(recorded) >= 2
    drawn = [line for line in seen if line.startswith("demo:")]
    assert 2 <= len(drawn) <= 11 and drawn[-1].startswith("demo: 100% 200/200 step")
    assert "loading" in seen and "loading" in job.log_tail and not any(line.startswith("demo:") for line in job.log_tail)


def tiny_config(tmp_path) -> str:
    cfg = LitopsConfig(
        data=DataConfig(image_size=32),
        model=ModelConfig(image_width=16, text_width=32, text_layers=1, text_heads=2, embed_dim=32, vocab_size=512),
        train=TrainConfig(steps=12, batch_size=16, checkpoint_every=4, warmup_steps=2),
    )
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(to_dict(cfg)))
    return str(path)


def test_train_and_evaluate_report_progress_and_no_mlflow_chatter(tiny_dataset, tmp_path, recorded):
    """Real components, forked from the warm-start server as `litops run` does, tracking to a fresh MLflow store
    (whose table creation and system-metrics monitor log at INFO)."""
    cfg, uri = tiny_config(tmp_path), f"sqlite:///{tmp_path}/mlflow.db"
    launcher, seen = LocalProcessLauncher(), []
    trained = launcher.run(JobSpec("train", "train", ["--config", cfg, "--dataset-dir", str(tiny_dataset),
                                                      "--checkpoint-dir", str(tmp_path / "ck"), "--tracking-uri", uri,
                                                      "--artifact-location", str(tmp_path / "artifacts")]),
                           log=seen.append).result
    launcher.run(JobSpec("evaluate", "evaluate", ["--config", cfg, "--dataset-dir", str(tiny_dataset), "--out",
                                                  str(tmp_path / "eval"), "--tracking-uri", uri, "--run-id",
                                                  trained.run_id, "--model", f"challenger={trained.model_path}"]),
                 log=seen.append)

    train_events = [e for e in recorded if e["task"] == "train"]
    assert train_events[0]["done"] == 0 and train_events[-1]["done"] == 12 and train_events[-1]["total"] == 12
    assert "loss" in train_events[-1]["postfix"]
    eval_events = [e for e in recorded if e["task"] == "evaluate challenger"]
    assert eval_events and eval_events[-1]["done"] == eval_events[-1]["total"] > 0
    for task in ("train", "evaluate challenger"):
        drawn = [line for line in seen if line.startswith(f"{task}:")]
        assert 1 <= len(drawn) <= 11 and drawn[-1].startswith(f"{task}: 100%"), drawn
    assert not [line for line in seen if any(noise in line for noise in MLFLOW_CHATTER)]
    assert not any("LITOPS_PROGRESS" in line for line in seen)


def test_feature_cache_encoding_reports_progress_per_batch(monkeypatch, capsys):
    import torch

    from litops.train.feature_cache import encode

    class MeanTower(torch.nn.Module):
        def preprocess(self, images: torch.Tensor) -> torch.Tensor:
            return images.float()

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return pixels.mean(dim=(2, 3))

    monkeypatch.setenv(progress.MODE_ENV, "lines")
    features = encode(MeanTower(), torch.zeros(40, 3, 8, 8, dtype=torch.uint8), torch.device("cpu"), batch_size=16)
    events = [progress.parse(line) for line in capsys.readouterr().err.splitlines()]
    assert features.shape == (40, 3)
    assert events[0] == {"task": "feature cache", "done": 0, "total": 40, "unit": "img", "postfix": {}}
    assert events[-1]["done"] == 40
