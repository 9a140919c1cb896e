"""A non-finite loss stops training: one line naming the step and the loss, the last good checkpoint
kept, nothing exported.

The divergence is injected (LITOPS_FAULT=nan_loss_at_step_<k>: the fault hook fills the logit scale
with NaN before step k, so that step's loss, gradients and update all turn NaN for real); the
trainer, its reader processes and its checkpoints are real.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from litops.core.checkpoint import latest_checkpoint, step_path
from litops.core.component_cli import EXIT_BAD_INPUT, RESULT_PREFIX
from litops.train.checkpointing import MODEL_FILE
from litops.train.divergence import DivergenceWatch, TrainingDiverged
from tests.train.test_exact_resume import config_file, sharded_dataset

BAD_STEP = 5


def test_nan_at_step_k_fails_with_one_line_and_keeps_the_checkpoint_of_step_k_minus_1(tmp_path):
    data = sharded_dataset(tmp_path / "data", shards=2)
    cfg = config_file(tmp_path / "cfg.json", steps=8, checkpoint_every=2)
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LITOPS_PROGRESS": "lines",
           "LITOPS_FAULT": f"nan_loss_at_step_{BAD_STEP}"}
    env.pop("LITOPS_CRASH_AT", None)
    out = subprocess.run([sys.executable, "-m", "litops.train", "--config", str(cfg), "--dataset-dir", str(data),
                          "--checkpoint-dir", str(ckpt)], capture_output=True, text=True, env=env, timeout=180)

    assert out.returncode == EXIT_BAD_INPUT, out.stderr[-3000:]  # a user error: the flow does not retry it
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line == f"litops train: error: training diverged at step {BAD_STEP}: loss is nan"
    assert "Traceback" not in out.stderr
    assert RESULT_PREFIX not in out.stdout  # no result: the flow has no model to register
    assert not (ckpt / MODEL_FILE).exists()
    assert latest_checkpoint(ckpt) == step_path(ckpt, BAD_STEP - 1)
    state = torch.load(step_path(ckpt, BAD_STEP - 1), map_location="cpu", weights_only=False)
    assert state["step"] == BAD_STEP - 1
    assert all(torch.isfinite(w).all() for w in state["model"].values())


def test_read_at_boundaries_only_it_still_names_the_first_bad_step():
    """The CUDA policy (read only at a boundary), run with CPU tensors as a stand-in for the GPU."""
    watch = DivergenceWatch(torch.device("cpu"), every_step=False)
    for step, loss in enumerate([2.0, 1.9, math.inf, math.nan, 1.5], start=1):
        watch.record(step, torch.tensor(loss), torch.tensor(0.5))
        watch.check(boundary=False)  # no read between boundaries
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 3: loss is inf$"):
        watch.check(boundary=True)


def test_a_finite_loss_with_a_non_finite_gradient_norm_is_a_divergence():
    watch = DivergenceWatch(torch.device("cpu"))
    watch.record(1, torch.tensor(0.7), torch.tensor(0.2))
    watch.check(boundary=False)
    watch.record(2, torch.tensor(0.7), torch.tensor(math.inf))
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 2: loss is 0.7, gradient norm is inf$"):
        watch.check(boundary=False)
