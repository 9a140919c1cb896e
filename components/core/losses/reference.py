"""Reference contrastive losses. They build the N×N logits: the ground truth, not the fast path."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_loss_reference(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SigLIP: -sum log sigmoid(z * (scale * img @ txt.T + bias)) / N, z = +1 on the diagonal, -1 elsewhere."""
    logits = scale * img @ txt.t() + bias
    n = logits.shape[0]
    z = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(z * logits).sum() / n


def softmax_loss_reference(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP: mean of the image->text and text->image cross-entropies."""
    logits = scale * img @ txt.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
