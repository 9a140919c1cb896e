"""One training step's forward and backward: direct, or exact large batch with GradCache.

GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup") makes a contrastive step over a batch of B samples that never holds more than
one micro-batch's activations:

1. embed every micro-batch without a graph (recording each one's RNG state);
2. compute the loss once on the full batch of embeddings (the fused loss) and its gradients
   with respect to the embeddings and to the logit scale and bias;
3. re-forward each micro-batch with its RNG state restored (same dropout masks) and
   back-propagate the cached embedding gradients through it.

The parameter gradients equal those of the direct full-batch step up to float rounding, for
towers whose samples do not interact inside a forward pass (transformers, locked or frozen
BatchNorm). A tower with train-mode BatchNorm normalises per micro-batch, exactly as under DDP
with per-rank BatchNorm. BatchNorm running statistics are updated once per step (by the
re-forward), not twice.

Under DDP (`forward` has `no_sync`), gradients are all-reduced only on the last micro-batch.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # img, txt, scale, bias


class RandState:
    """CPU (and CUDA, when used) RNG state, restorable: the re-forward draws the same dropout masks."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    @contextlib.contextmanager
    def restored(self):
        cpu, cuda = torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if self.cuda is not None else None)
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:  # leave the generator where the first pass left it
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)


def _slice(d: dict[str, torch.Tensor], s: slice) -> dict[str, torch.Tensor]:
    return {k: v[s] for k, v in d.items()}


def _bn_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, saved copy) for every BatchNorm running statistic that a train-mode forward would update."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            for b in (m.running_mean, m.running_var, m.num_batches_tracked):
                if b is not None:
                    out.append((b, b.detach().clone()))
    return out


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def direct_step(forward, model, pixels, tokens, image_features, loss_fn: LossFn, bf16: bool = False) -> torch.Tensor:
    """Forward the whole batch, loss, backward. Returns the (detached) loss."""
    device = model.logit_scale.device
    with autocast(device, bf16):
        img, txt = forward(pixels, tokens, image_features=image_features) if image_features is not None \
            else forward(pixels, tokens)
    loss = loss_fn(img.float(), txt.float(), model.logit_scale.exp(), model.logit_bias)
    loss.backward()
    return loss.detach()


def gradcache_step(forward, model, pixels, tokens, image_features, loss_fn: LossFn, micro_batch_size: int,
                   bf16: bool = False) -> torch.Tensor:
    """The GradCache step (see the module docstring). `forward` is the model or its DDP wrapper."""
    device = model.logit_scale.device
    n = len(image_features) if image_features is not None else len(pixels)
    chunks = [slice(i, min(i + micro_batch_size, n)) for i in range(0, n, micro_batch_size)]

    def run(s: slice):
        if image_features is not None:
            return forward(None, _slice(tokens, s), image_features=image_features[s])
        return forward(pixels[s], _slice(tokens, s))

    # 1. embeddings, no graph; each micro-batch's RNG state recorded
    saved_bn = _bn_buffers(model)
    states, imgs, txts = [], [], []
    with torch.no_grad():
        for s in chunks:
            states.append(RandState(device))
            with autocast(device, bf16):
                img, txt = run(s)
            imgs.append(img.float())
            txts.append(txt.float())
    for buf, copy in saved_bn:  # the re-forward below updates running statistics once
        buf.copy_(copy)

    # 2. full-batch loss and its gradients w.r.t. embeddings, scale and bias
    img_all = torch.cat(imgs).requires_grad_(True)
    txt_all = torch.cat(txts).requires_grad_(True)
    scale, bias = model.logit_scale, model.logit_bias
    loss = loss_fn(img_all, txt_all, scale.exp(), bias)
    g_img, g_txt, g_scale, g_bias = torch.autograd.grad(loss, [img_all, txt_all, scale, bias])

    # 3. re-forward each micro-batch with its RNG state, back-propagate the cached gradients
    no_sync = getattr(forward, "no_sync", None)
    for i, (s, state) in enumerate(zip(chunks, states)):
        last = i == len(chunks) - 1
        ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with ctx, state.restored():
            with autocast(device, bf16):
                img, txt = run(s)
            surrogate = (img.float() * g_img[s]).sum() + (txt.float() * g_txt[s]).sum()
            if last:  # scale and bias: their full-batch gradient, once (synced with the rest under DDP)
                surrogate = surrogate + (scale * g_scale).sum() + (bias * g_bias).sum()
            surrogate.backward()
    return loss.detach()


def train_step(forward, model, pixels, tokens, image_features, loss_fn: LossFn, micro_batch_size: int = 0,
               bf16: bool = False) -> torch.Tensor:
    """Forward + backward of one step (gradients accumulate into .grad; zero them before)."""
    n = len(image_features) if image_features is not None else len(pixels)
    if 0 < micro_batch_size < n:
        return gradcache_step(forward, model, pixels, tokens, image_features, loss_fn, micro_batch_size, bf16)
    return direct_step(forward, model, pixels, tokens, image_features, loss_fn, bf16)
