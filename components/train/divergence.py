"""A non-finite loss stops training: the first step whose loss or gradient norm is NaN or infinite
(a finite loss can still give a non-finite update).

Reading a CUDA tensor on the host makes the host wait for the GPU, so the watch keeps the first bad
step, its loss and its gradient norm in tensors on the loss's device (a few tiny kernels a step) and
they are read only at a boundary: before a log line, before a checkpoint is written, and at the last
step. A checkpoint therefore never holds a diverged state, and the error still names the exact step.
On the CPU a read costs nothing, so every step is checked and training stops at the bad step itself.
"""

from __future__ import annotations

import math

import torch

from litops.core.component_cli import UserError


class TrainingDiverged(UserError):
    """Deterministic given the checkpoint, data and config: a retry diverges the same way."""

    kind = "diverged"


class DivergenceWatch:
    def __init__(self, device: torch.device, every_step: bool | None = None):
        self.every_step = device.type == "cpu" if every_step is None else every_step
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self.bad_grad_norm = torch.zeros((), device=device)

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Note `step` if it is the first non-finite one; no host read."""
        first = ~(torch.isfinite(loss) & torch.isfinite(grad_norm)) & (self.first_bad < 0)
        self.first_bad.masked_fill_(first, step)
        self.bad_loss.copy_(torch.where(first, loss.float(), self.bad_loss))
        self.bad_grad_norm.copy_(torch.where(first, grad_norm.float(), self.bad_grad_norm))

    def check(self, boundary: bool) -> None:
        """Raise TrainingDiverged if a recorded step was non-finite; reads the device only at a boundary
        (every step on the CPU). Every rank sees the same global loss and the same averaged gradients, so
        all ranks stop together."""
        if not (boundary or self.every_step):
            return
        step = int(self.first_bad)
        if step < 0:
            return
        loss = float(self.bad_loss)
        why = f"loss is {loss:.6g}"
        if math.isfinite(loss):  # the loss was fine; the update was not
            why += f", gradient norm is {float(self.bad_grad_norm):.6g}"
        raise TrainingDiverged(f"training diverged at step {step}: {why}")
