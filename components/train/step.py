"""One optimisation step: the batch onto the device, forward and backward (direct or GradCache), update."""

from __future__ import annotations

import functools
import math

import torch

from litops.core.losses import caption_groups, contrastive_loss
from litops.core.stream import StreamBatch
from litops.train import gradcache
from litops.train.augment import augment


class Stepper:
    def __init__(self, cfg, model, forward, optimizer, scheduler, ddp, device: torch.device, bf16: bool):
        self.cfg, self.model, self.forward = cfg, model, forward
        self.optimizer, self.scheduler, self.ddp, self.device, self.bf16 = optimizer, scheduler, ddp, device, bf16

    def loss_fn(self, img, txt, scale, bias, groups=None):
        lc = self.cfg.loss
        if self.ddp.active:  # the exact global loss over every rank's embeddings
            return self.ddp.loss(lc.name, img, txt, scale, bias, groups=groups, duplicates=lc.duplicates)
        return contrastive_loss(lc.name, img, txt, scale, bias, impl=lc.impl, groups=groups, duplicates=lc.duplicates)

    def caption_groups(self, batch: StreamBatch) -> torch.Tensor | None:
        """Rows with word-for-word equal captions share a group id (equal on every rank)."""
        if self.cfg.loss.duplicates == "negative":
            return None
        return caption_groups(batch.captions).to(self.device, non_blocking=True)

    def inputs(self, batch: StreamBatch):
        tokens = self.model.text_tower.tokenize(batch.captions)
        width = int(tokens["attention_mask"].sum(1).max().clamp_min(1))  # drop all-padding columns
        tokens = {k: v[:, :width].to(self.device, non_blocking=True) for k, v in tokens.items()}
        if batch.features is not None:
            return None, tokens, batch.features.to(self.device, non_blocking=True)
        tc = self.cfg.train
        images = augment(batch.images, tc.augment, batch.step, tc.seed)
        return self.model.image_tower.preprocess(images.to(self.device, non_blocking=True)), tokens, None

    def __call__(self, batch: StreamBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, gradient norm before clipping) of one step on this rank's batch, left on the device:
        reading them would make the host wait for the GPU every step."""
        tc = self.cfg.train
        pixels, tokens, features = self.inputs(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss_fn = functools.partial(self.loss_fn, groups=self.caption_groups(batch))
        loss = gradcache.train_step(self.forward, self.model, pixels, tokens, features, loss_fn,
                                    tc.micro_batch_size, self.bf16)
        if tc.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        else:  # still measured: a finite loss can give a non-finite update, which must not be checkpointed
            grad_norm = torch.nn.utils.get_total_norm(p.grad for p in self.model.parameters() if p.grad is not None)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(max=math.log(100.0))
        return loss, grad_norm
