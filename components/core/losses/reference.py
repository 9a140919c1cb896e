"""Reference contrastive losses. They build the N×N logits and, with group ids, the N×N target
or mask matrix explicitly: the ground truth, not the fast path.

duplicates (rows i, j are "same group" when groups[i] == groups[j]; the diagonal always is):
  "negative"  today's targets: only the diagonal is positive (groups ignored)
  "positive"  sigmoid: z_ij = +1 for every same-group pair; softmax: uniform target over the
              same-group columns of a row (and rows of a column)
  "ignore"    off-diagonal same-group pairs are left out: they add 0 to the sigmoid sum and are
              removed (−inf) from both softmaxes; the targets stay the diagonal
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from litops.core.losses.groups import uses_groups


def _same_group(groups: torch.Tensor) -> torch.Tensor:
    return groups[:, None] == groups[None, :]


def sigmoid_loss_reference(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                           groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """SigLIP: -sum w * log sigmoid(z * (scale * img @ txt.T + bias)) / N. Without groups z = +1 on the
    diagonal and -1 elsewhere, w = 1; see the module docstring for the duplicate modes."""
    logits = scale * img @ txt.t() + bias
    n = logits.shape[0]
    eye = torch.eye(n, device=logits.device, dtype=torch.bool)
    if not uses_groups(groups, duplicates):
        z = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
        return -F.logsigmoid(z * logits).sum() / n
    same = _same_group(groups)
    positive = same if duplicates == "positive" else eye
    z = torch.where(positive, 1.0, -1.0).to(logits.dtype)
    weight = torch.ones_like(logits) if duplicates == "positive" else (~(same & ~eye)).to(logits.dtype)
    return -(weight * F.logsigmoid(z * logits)).sum() / n


def softmax_loss_reference(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
                           groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """CLIP: mean of the image->text and text->image cross-entropies (targets per the module docstring)."""
    logits = scale * img @ txt.t()
    n = logits.shape[0]
    labels = torch.arange(n, device=logits.device)
    if not uses_groups(groups, duplicates):
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    same = _same_group(groups)
    if duplicates == "ignore":
        eye = torch.eye(n, device=logits.device, dtype=torch.bool)
        masked = logits.masked_fill(same & ~eye, float("-inf"))
        return 0.5 * (F.cross_entropy(masked, labels) + F.cross_entropy(masked.t(), labels))
    target = same.to(logits.dtype)
    row_target = target / target.sum(1, keepdim=True)  # uniform over each row's group
    col_target = target / target.sum(0, keepdim=True)
    ce_rows = -(row_target * F.log_softmax(logits, 1)).sum(1).mean()
    ce_cols = -(col_target * F.log_softmax(logits, 0)).sum(0).mean()
    return 0.5 * (ce_rows + ce_cols)
