"""The train component: learning, determinism, checkpoint resume after SIGKILL, and no orchestration imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from litops.core.checkpoint import latest_checkpoint, load_model
from litops.core.step_results import parse_result
from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig, to_dict
from litops.core.stream import SplitStream
from litops.train.logger import JsonlLogger
from litops.train.loop import train


def tiny_config(**train_kw) -> LitopsConfig:
    return LitopsConfig(
        data=DataConfig(image_size=32),
        model=ModelConfig(image_width=16, text_width=32, text_layers=1, text_heads=2, embed_dim=32, vocab_size=512),
        train=TrainConfig(**{"steps": 12, "batch_size": 16, "checkpoint_every": 4, "warmup_steps": 2, **train_kw}),
    )


def test_training_lowers_the_loss_and_writes_checkpoints(tiny_dataset, tmp_path):
    cfg = tiny_config(steps=60, lr=3e-3)
    ckpt = tmp_path / "ckpt"
    result = train(cfg, tiny_dataset, ckpt, JsonlLogger(ckpt / "metrics.jsonl"))
    records = [json.loads(l) for l in (ckpt / "metrics.jsonl").read_text().splitlines()]
    losses = [r["metrics"]["train/loss"] for r in records if "metrics" in r]
    assert losses[-1] < losses[0], losses
    assert result.steps == 60 and latest_checkpoint(ckpt).name == "step-00000060.pt"
    assert not list(ckpt.glob("*.tmp")), "no temp files left behind"
    model, loaded_cfg = load_model(result.model_path)
    assert loaded_cfg.train.steps == 60
    # Held-out images pick their own caption among the 8 distinct ones far above chance (1/8).
    val = next(SplitStream.open(tiny_dataset, "val").one_pass(batch_size=1000, image_size=32))
    names = sorted(set(val.captions))
    scores = model.embed_images(val.images) @ model.embed_texts(names).T
    acc = (scores.argmax(1) == torch.tensor([names.index(c) for c in val.captions])).float().mean().item()
    assert acc >= 0.5, acc
    assert torch.allclose(model.embed_texts(names).norm(dim=1), torch.ones(len(names)), atol=1e-5)


def test_same_seed_same_weights(tiny_dataset, tmp_path):
    cfg = tiny_config()
    a = train(cfg, tiny_dataset, tmp_path / "a", JsonlLogger(tmp_path / "a.jsonl"))
    b = train(cfg, tiny_dataset, tmp_path / "b", JsonlLogger(tmp_path / "b.jsonl"))
    sa = torch.load(a.model_path, weights_only=False)["model"]
    sb = torch.load(b.model_path, weights_only=False)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _train_cmd(cfg_path: Path, dataset: Path, ckpt: Path) -> list[str]:
    return [sys.executable, "-m", "litops.train", "--config", str(cfg_path), "--dataset-dir", str(dataset),
            "--checkpoint-dir", str(ckpt)]


def test_sigkill_then_relaunch_resumes_from_last_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_config(steps=400, checkpoint_every=5)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(to_dict(cfg)))
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(cfg_path, tiny_dataset, ckpt), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        last = latest_checkpoint(ckpt)
        if last is not None and int(last.stem.split("-")[1]) >= 10:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(ckpt).stem.split("-")[1])
    assert 10 <= killed_at < 400, "the kill must land mid-run"

    # Relaunch with a shorter schedule end so the test stays quick; the resume point is what matters.
    cfg.train.steps = killed_at + 5
    cfg_path.write_text(json.dumps(to_dict(cfg)))
    out = subprocess.run(_train_cmd(cfg_path, tiny_dataset, ckpt), capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = parse_result(out.stdout.splitlines())
    assert result.resumed_from == killed_at
    assert result.steps == killed_at + 5
    assert f"resuming from step-{killed_at:08d}.pt" in out.stderr


def test_resumed_run_matches_uninterrupted_run(tiny_dataset, tmp_path):
    cfg = tiny_config(steps=12, checkpoint_every=4)
    full = train(cfg, tiny_dataset, tmp_path / "full", JsonlLogger(tmp_path / "f.jsonl"))
    part_dir = tmp_path / "part"
    cfg.train.steps = 12
    train(cfg, tiny_dataset, part_dir, JsonlLogger(tmp_path / "p.jsonl"))
    for p in part_dir.glob("step-*.pt"):  # pretend the job died right after step 8
        if p.name != "step-00000008.pt":
            p.unlink()
    resumed = train(cfg, tiny_dataset, part_dir, JsonlLogger(tmp_path / "p.jsonl"))
    assert resumed.resumed_from == 8
    a = torch.load(full.model_path, weights_only=False)["model"]
    b = torch.load(resumed.model_path, weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_trainer_runs_without_orchestration_packages(tiny_dataset, tmp_path):
    """The GPU box has no MLflow, Prefect or DVC: block their import and train anyway."""
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(to_dict(tiny_config(steps=3))))
    blocker = ("import sys, runpy\n"
               "for m in ('mlflow', 'prefect', 'dvc', 'hydra'): sys.modules[m] = None\n"
               "sys.argv = ['litops.train'] + sys.argv[1:]\n"
               "runpy.run_module('litops.train', run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", blocker, "--config", str(cfg_path), "--dataset-dir", str(tiny_dataset),
                          "--checkpoint-dir", str(tmp_path / "ck")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert parse_result(out.stdout.splitlines()).steps == 3
