"""The training loop: build the model, stream the data, step, checkpoint. Depends on torch and
litops.core only; reports through a MetricLogger."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from litops.core import faults
from litops.core.config import LitopsConfig
from litops.core.model import LiTModel
from litops.core.progress import start as start_progress
from litops.train import distributed  # DDP under torchrun (no-op in one process)
from litops.train.checkpointing import Checkpointer
from litops.train.data_stream import check_cursor, open_train_stream
from litops.train.divergence import DivergenceWatch
from litops.train.logger import MetricLogger
from litops.train.step import Stepper



@dataclass
class TrainResult:
    model_path: str
    steps: int
    resumed_from: int | None
    final_loss: float
    samples_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, and the logit scale and bias."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in ("logit_scale", "logit_bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel: on the 2-core CPU a step over MiniLM's 22.7M parameters
    takes 57 ms with the per-tensor loop, 9.4 ms fused (tests/benchmarks/optimizer_step.py)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                             fused=device.type in FUSED_ADAMW_DEVICES)


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def step_metrics(loss: torch.Tensor, grad_norm: torch.Tensor, model: LiTModel, scheduler, samples_per_s: float) -> dict:
    return {"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0],
            "train/logit_scale": model.logit_scale.detach().exp().item(),
            "train/logit_bias": model.logit_bias.detach().item(), "train/samples_per_s": samples_per_s,
            "train/grad_norm": grad_norm.item()}


class StepTimer:
    """Seconds spent waiting for the loader (`train/data_time_s`) and in the step (`train/step_time_s`),
    averaged since the last log: which of the two is the bottleneck. On CUDA the step time is the
    time to queue its kernels, until a log step reads the device and waits for them."""

    def __init__(self):
        self.data = self.step = 0.0
        self.count, self.mark = 0, time.perf_counter()

    def batches(self, batches):
        for batch in batches:
            now = time.perf_counter()
            self.data += now - self.mark
            self.mark = now
            yield batch
            self.mark = time.perf_counter()

    def stepped(self) -> None:
        now = time.perf_counter()
        self.step, self.count, self.mark = self.step + now - self.mark, self.count + 1, now

    def averages(self) -> dict[str, float]:
        n = max(1, self.count)
        out = {"train/data_time_s": self.data / n, "train/step_time_s": self.step / n}
        self.data = self.step = 0.0
        self.count = 0
        return out


def train(cfg: LitopsConfig, dataset_dir: str | Path, ckpt_dir: Path, logger: MetricLogger, mirror=None,
          data_version: str = "") -> TrainResult:
    """`dataset_dir`: a folder or s3:// URL holding train/*.tar. `mirror`: an S3CheckpointMirror or None.
    `data_version`: the DVC version of the data, recorded beside a feature cache built from it."""
    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    ddp = distributed.from_env(tc.device)  # rank/world from torchrun; world 1 otherwise
    device = ddp.device if ddp.active else pick_device(tc.device)
    torch.manual_seed(tc.seed)

    model = LiTModel(cfg.model, cfg.data.image_size)  # built first: the feature cache keys on it
    model.lock()  # model.lock: freeze the L towers before the optimizer and the feature cache see them
    model.to(device)
    data = open_train_stream(cfg, model, str(dataset_dir), device, ddp, data_version)
    ddp.local_batch(data.global_batch)  # the global batch must split evenly over the ranks
    forward = torch.compile(ddp.wrap(model)) if tc.compile else ddp.wrap(model)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(tc.warmup_steps, tc.steps))
    checkpoints = Checkpointer(cfg, ckpt_dir, ddp, mirror)
    resumed = checkpoints.resume(model, optimizer, scheduler, device)
    start = resumed[0] if resumed else 0
    if resumed:
        check_cursor(data, *resumed)
    else:
        logger.log_params({"n_train": data.split.total, "device": str(device), "feature_cache": data.cache.status,
                           "precision": "bf16" if bf16 else "fp32"})
    step = Stepper(cfg, model, forward, optimizer, scheduler, ddp, device, bf16)

    model.train()
    loss, seen, t0 = torch.tensor(float("nan")), 0, time.perf_counter()
    watch = DivergenceWatch(device)
    timer = StepTimer()
    with start_progress("train", tc.steps, unit="step", initial=start, silent=not ddp.is_main) as bar:
        batches = timer.batches(data.batches(start, tc.steps, ddp.rank, ddp.world))
        for batch in faults.training_steps(batches, ddp.rank, nan_target=model.logit_scale):
            loss, grad_norm = step(batch)
            timer.stepped()
            seen, done = seen + data.global_batch, batch.step + 1
            watch.record(done, loss, grad_norm)
            logs, shown = done % tc.log_every == 0 or done == tc.steps, {}
            watch.check(boundary=logs or done % tc.checkpoint_every == 0)  # the same steps on every rank
            if ddp.is_main and logs:  # rank 0 logs; the device's scalars are read here only
                metrics = step_metrics(loss, grad_norm, model, scheduler, seen / (time.perf_counter() - t0))
                logger.log_metrics({**metrics, **timer.averages()}, done)
                shown = {"loss": f"{metrics['train/loss']:.3f}"}
            if checkpoints.due(done):
                checkpoints.save(done, model, optimizer, scheduler, data.cursor(done))
            bar.update(1, **shown)
    ddp.report_weights(model)  # every rank prints its weights' digest (they must agree)
    resumed_from = resumed[0] if resumed else None
    if not ddp.is_main:  # rank 0 alone exports and reports the result
        return TrainResult(str(ckpt_dir / "model.pt"), tc.steps, resumed_from, loss.item(), 0.0)
    if tc.steps == 0 and not resumed:  # nothing trained: still export the initial weights
        checkpoints.save(0, model, optimizer, scheduler, data.cursor(0))
    model_path, steps = checkpoints.export()
    elapsed = time.perf_counter() - t0
    return TrainResult(str(model_path), steps, resumed_from, loss.item(), seen / elapsed if seen else 0.0)
