"""Exact mid-epoch resume: a run SIGKILLed at three random steps and resumed each time ends with
weights bit-identical to an uninterrupted run (reader processes on, several shards, a bounded shuffle)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig, to_dict
from litops.core.step_results import parse_result
from tests.conftest import COLOURS, SHAPES, _draw, write_shard

STEPS = 60


def sharded_dataset(root: Path, shards: int = 4, per_shard: int = 24) -> Path:
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for j in range(shards):
        samples = []
        for i in range(per_shard):
            colour, shape = combos[(i + j) % len(combos)]
            samples.append((f"s{j}-{i:03d}", _draw(colour, shape, 32), f"a {colour} {shape}", {}))
        write_shard(root / "train" / f"shard-{j:06d}.tar", samples)
    return root


def config_file(path: Path, **train) -> Path:
    cfg = LitopsConfig(
        data=DataConfig(image_size=32, workers=2, shuffle_buffer=40),
        model=ModelConfig(image_width=16, text_width=32, text_layers=1, text_heads=2, embed_dim=32, vocab_size=512),
        train=TrainConfig(**{"steps": STEPS, "batch_size": 16, "checkpoint_every": 7, "warmup_steps": 5,
                             "device": "cpu", "num_threads": 1, **train}))
    path.write_text(json.dumps(to_dict(cfg)))
    return path


def run_train(cfg: Path, data: Path, ckpt: Path, crash_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LITOPS_PROGRESS": "lines"}
    env.pop("LITOPS_CRASH_AT", None)
    if crash_at is not None:
        env["LITOPS_CRASH_AT"] = f"after_step_{crash_at}"
    cmd = [sys.executable, "-m", "litops.train", "--config", str(cfg), "--dataset-dir", str(data),
           "--checkpoint-dir", str(ckpt)]
    # its own session: the fault kills the trainer's process group (it and its reader processes)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, start_new_session=True)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt / "model.pt", map_location="cpu", weights_only=False)["model"]


def test_three_sigkills_at_random_steps_then_resume_give_bit_identical_weights(tmp_path):
    data = sharded_dataset(tmp_path / "data")
    cfg = config_file(tmp_path / "cfg.json")
    whole = run_train(cfg, data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    kills = sorted(random.sample(range(3, STEPS - 1), 3))
    ckpt = tmp_path / "killed"
    for step in kills:
        out = run_train(cfg, data, ckpt, crash_at=step)
        assert out.returncode == -9, f"kill at {step}: {out.stderr[-2000:]}"
        assert f"SIGKILL at after_step_{step}" in out.stderr
    last = run_train(cfg, data, ckpt)
    assert last.returncode == 0, last.stderr[-3000:]
    assert parse_result(last.stdout.splitlines()).resumed_from == kills[-1] // 7 * 7
    assert "resuming from" in last.stderr

    a, b = weights(tmp_path / "whole"), weights(ckpt)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"killed at steps {kills}: {differing} differ"
