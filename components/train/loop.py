"""The training loop. Depends on torch and litops.core only; reports through a MetricLogger."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from litops.core.checkpoint import atomic_save, export_model, latest_checkpoint, prune_checkpoints, step_path
from litops.core.config import LitopsConfig, to_dict
from litops.core.losses import contrastive_loss
from litops.core.model import LiTModel
from litops.core.progress import start as start_progress
from litops.core.shards import read_split
from litops.train.logger import MetricLogger
from litops.train import distributed  # DDP under torchrun (no-op in one process)
from litops.train import feature_cache, gradcache  # locked-tower feature cache, GradCache step

LOG_EVERY = 10
MODEL_FILE = "model.pt"


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


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Indices of a step's batch: a seeded permutation per epoch, so resuming needs no RNG state."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return torch.tensor(out)


def train(cfg: LitopsConfig, dataset_dir: Path, ckpt_dir: Path, logger: MetricLogger, mirror=None,
          data_version: str = "") -> TrainResult:
    """`mirror`: a litops.train.remote_checkpoints.S3CheckpointMirror (resume from / upload to S3), or None.
    `data_version`: the DVC version of `dataset_dir`, recorded beside a feature cache built from it."""
    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    ddp = distributed.from_env(tc.device)  # rank/world from torchrun; world 1 otherwise
    device = ddp.device if ddp.active else pick_device(tc.device)
    torch.manual_seed(tc.seed)

    model = LiTModel(cfg.model, cfg.data.image_size).to(device)  # built first (the cache keys on it)
    cached = feature_cache.train_split(cfg, model, dataset_dir, device, data_version, write=ddp.is_main)
    data, features = cached.data, cached.features  # features [N, D] of a locked image tower, or None
    bs = min(tc.batch_size, len(data))
    ddp.local_batch(bs)  # the global batch must split evenly over the ranks
    forward = ddp.wrap(model)  # DDP wrapper (the model itself in one process)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    if tc.compile:
        forward = torch.compile(forward)
    tokens = model.text_tower.tokenize(data.captions)
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(tc.warmup_steps, tc.steps))

    start, resumed_from = 0, None
    if mirror is not None:  # the newest checkpoint on the object store (a replacement pod)
        mirror.pull(ckpt_dir)
    last = latest_checkpoint(ckpt_dir) if ddp.is_main else None
    agreed = ddp.agree_step(distributed.checkpoint_step(last))  # every rank resumes rank 0's step
    last = step_path(ckpt_dir, agreed) if agreed is not None else None
    if last is not None:
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = resumed_from = state["step"]
        print(f"resuming from {last.name} (step {start}/{tc.steps})", file=sys.stderr, flush=True)
    else:
        logger.log_params({"n_train": len(data), "device": str(device), "feature_cache": cached.status,
                           "precision": "bf16" if bf16 else "fp32"})

    def state_at(step: int) -> dict[str, Any]:
        return {"config": to_dict(cfg), "image_size": cfg.data.image_size, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}

    model.train()
    loss_value, seen, t0 = float("nan"), 0, time.perf_counter()
    bar = start_progress("train", tc.steps, unit="step", initial=start, silent=not ddp.is_main)
    for step in range(start, tc.steps):
        idx = ddp.shard(batch_indices(step, bs, len(data), tc.seed))  # this rank's slice
        batch_tokens = {k: v[idx] for k, v in tokens.items()}
        width = int(batch_tokens["attention_mask"].sum(1).max().clamp_min(1))
        batch_tokens = {k: v[:, :width].to(device) for k, v in batch_tokens.items()}
        # cached features or (augmented) pixels; direct or GradCache forward+backward, bf16 on CUDA
        if features is not None:
            pixels, feats = None, features[idx].to(device)
        else:
            images = feature_cache.augment(data.images[idx], tc.augment, step, tc.seed)
            pixels, feats = model.image_tower.preprocess(images.to(device)), None
        if ddp.active:  # exact global loss over all ranks
            def loss_fn(img, txt, scale, bias):
                return ddp.loss(cfg.loss.name, img, txt, scale, bias)
        else:
            def loss_fn(img, txt, scale, bias):
                return contrastive_loss(cfg.loss.name, img, txt, scale, bias, impl=cfg.loss.impl)
        optimizer.zero_grad(set_to_none=True)
        loss = gradcache.train_step(forward, model, pixels, batch_tokens, feats, loss_fn, tc.micro_batch_size, bf16)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(100.0))
        loss_value, seen = loss.item(), seen + bs
        done = step + 1
        if ddp.is_main and (done % LOG_EVERY == 0 or done == tc.steps):  # rank 0 logs
            metrics = {"train/loss": loss_value, "train/lr": scheduler.get_last_lr()[0],
                       "train/logit_scale": model.logit_scale.detach().exp().item(),
                       "train/logit_bias": model.logit_bias.detach().item(),
                       "train/samples_per_s": seen / (time.perf_counter() - t0)}
            if grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            logger.log_metrics(metrics, step=done)
        if ddp.is_main and (done % tc.checkpoint_every == 0 or done == tc.steps):  # rank 0 writes
            atomic_save(state_at(done), step_path(ckpt_dir, done))
            prune_checkpoints(ckpt_dir)
            if mirror is not None:
                mirror.push(step_path(ckpt_dir, done))
        bar.update(1, loss=f"{loss_value:.3f}")
    bar.close()
    ddp.report_weights(model)  # every rank prints its weights' digest (they must agree)
    if not ddp.is_main:  # rank 0 alone exports and reports the result
        return TrainResult(str(ckpt_dir / MODEL_FILE), tc.steps, resumed_from, loss_value, 0.0)

    final = latest_checkpoint(ckpt_dir)
    if final is None:  # steps == 0: still export the initial weights
        atomic_save(state_at(start), step_path(ckpt_dir, start))
        final = step_path(ckpt_dir, start)
    state = torch.load(final, map_location="cpu", weights_only=False)
    export_model(state, ckpt_dir / MODEL_FILE)
    if mirror is not None:
        mirror.push(ckpt_dir / MODEL_FILE, keep=None)
    elapsed = time.perf_counter() - t0
    return TrainResult(str(ckpt_dir / MODEL_FILE), state["step"], resumed_from, loss_value, seen / elapsed if seen else 0.0)
