"""Multi-node training path on the CPU: the trainer under torchrun with 2 local processes (gloo).

Stand-in: a Kubernetes Indexed Job runs `torchrun --nnodes=N --node-rank=$JOB_COMPLETION_INDEX`
in each pod; here one torchrun starts both ranks on 127.0.0.1, which exercises the same code
(process group from torchrun's env, DDP, batch sharding, the distributed loss, rank-0-only
checkpoints and result). No GPU/NCCL here: gloo.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from litops.core.config import LitopsConfig, to_dict


def make_tiny_dataset(root: Path, per_split: dict[str, int], size: int) -> Path:
    """tests/conftest.py's helper (loaded by path: each test folder has its own conftest module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("litops_tests_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_dataset(root, per_split, size)

pytestmark = pytest.mark.timeout(120)


def tiny_config(path: Path, steps: int = 4) -> Path:
    cfg = LitopsConfig()
    cfg.data.image_size = 32
    cfg.model.embed_dim, cfg.model.image_width, cfg.model.text_width, cfg.model.vocab_size = 32, 8, 32, 1024
    cfg.model.context_length = 16
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.checkpoint_every = steps, 16, 1, 2
    cfg.train.device, cfg.train.num_threads = "cpu", 1
    cfg.loss.impl = "reference"
    path.write_text(json.dumps(to_dict(cfg)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_finish_and_agree_on_the_weights(tmp_path):
    data = make_tiny_dataset(tmp_path / "tiny", {"train": 32}, size=32)
    cfg = tiny_config(tmp_path / "config.json")
    args = ["--config", str(cfg), "--dataset-dir", str(data)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--node-rank=0",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--max-restarts=0",
           "-m", "litops.train", *args, "--checkpoint-dir", str(tmp_path / "ddp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    digests = dict(re.findall(r"rank (\d)/2: weights sha256 ([0-9a-f]{16})", log))  # ranks may share a line
    assert set(digests) == {"0", "1"}, log[-2000:]
    assert digests["0"] == digests["1"]  # DDP kept both replicas identical
    results = [l for l in out.stdout.splitlines() if l.startswith("LITOPS_RESULT")]
    assert len(results) == 1  # rank 0 alone reports
    assert json.loads(results[0].split(" ", 1)[1])["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "ddp").glob("step-*.pt")) == ["step-00000002.pt", "step-00000004.pt"]

    # rank 0's exported model is the weights both ranks agreed on
    from litops.train.distributed import DistContext
    from litops.core.checkpoint import load_model

    model, _ = load_model(tmp_path / "ddp" / "model.pt")
    assert DistContext().report_weights(model) == digests["0"]
