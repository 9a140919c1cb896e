"""Contrastive losses behind stable names; the implementation is picked by `impl`.

impl:
  "reference"  materialises the N×N logits (ground truth; reference.py)
  "chunked"    pure PyTorch, row strips, recompute in backward, O(block·N + N·D) memory (chunked.py)
  "triton"     fused tile kernels, O(N) forward statistics (triton_sigmoid.py / triton_softmax.py);
               CUDA tensors, or CPU tensors when TRITON_INTERPRET=1
  "auto"       triton on CUDA (when triton imports), chunked elsewhere

Duplicate captions: every loss takes `groups` (int64 [N] ids, e.g. from `caption_groups`; rows i
and j are "same group" when the ids are equal) and `duplicates`:
  "negative"  today's loss (only the diagonal is positive; groups unused)
  "positive"  same-group pairs are positives (sigmoid z = +1; softmax: uniform target over the group)
  "ignore"    off-diagonal same-group pairs are left out (0 in the sigmoid sum, −inf in both softmaxes)
Exact definitions in reference.py. groups=None or "negative" runs exactly the code without groups.

Multi-process versions (torch.distributed ring): `sigmoid_loss_distributed`,
`softmax_loss_distributed` in distributed.py. Triton is imported lazily, so this package
imports where triton is absent.
"""

from __future__ import annotations

import torch

from litops.core.losses._checks import check_groups, check_inputs, resolve_impl
from litops.core.losses.chunked import sigmoid_loss_chunked, softmax_loss_chunked
from litops.core.losses.distributed import sigmoid_loss_distributed, softmax_loss_distributed
from litops.core.losses.groups import DUPLICATES, caption_groups
from litops.core.losses.reference import sigmoid_loss_reference, softmax_loss_reference

__all__ = [
    "sigmoid_loss",
    "softmax_loss",
    "contrastive_loss",
    "sigmoid_loss_distributed",
    "softmax_loss_distributed",
    "sigmoid_loss_reference",
    "softmax_loss_reference",
    "caption_groups",
    "DUPLICATES",
]


def sigmoid_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *, impl: str = "auto",
                 block: int | None = None, groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """SigLIP loss: logits = scale·img@txtᵀ + bias, z = +1 on the diagonal and −1 elsewhere,
    loss = −Σ log σ(z∘logits) / N (open_clip's convention). Differentiable in all four inputs.
    `block` is the row-strip height for impl="chunked" (None: tuned default). `groups` /
    `duplicates`: targets for same-caption pairs (module docstring)."""
    check_inputs(img, txt, scale, bias)
    check_groups(groups, duplicates, img)
    impl = resolve_impl(impl, img.device, img.dtype)
    if impl == "reference":
        return sigmoid_loss_reference(img, txt, scale.reshape(()), bias.reshape(()), groups, duplicates)
    if impl == "chunked":
        return sigmoid_loss_chunked(img, txt, scale, bias, block, groups, duplicates)
    from litops.core.losses.triton_sigmoid import sigmoid_loss_triton

    return sigmoid_loss_triton(img, txt, scale, bias, groups, duplicates)


def softmax_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, *, impl: str = "auto", block: int | None = None,
                 groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """CLIP loss: logits = scale·img@txtᵀ, loss = ½ (CE over rows + CE over columns), each CE
    averaged over N (open_clip's ClipLoss). Differentiable in img, txt and scale. `groups` /
    `duplicates`: targets for same-caption pairs (module docstring)."""
    check_inputs(img, txt, scale)
    check_groups(groups, duplicates, img)
    impl = resolve_impl(impl, img.device, img.dtype)
    if impl == "reference":
        return softmax_loss_reference(img, txt, scale.reshape(()), groups, duplicates)
    if impl == "chunked":
        return softmax_loss_chunked(img, txt, scale, block, groups, duplicates)
    from litops.core.losses.triton_softmax import softmax_loss_triton

    return softmax_loss_triton(img, txt, scale, groups, duplicates)


def contrastive_loss(name: str, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *,
                     impl: str = "auto", groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """The loss a config names: `sigmoid` or `softmax` (softmax ignores bias)."""
    if name == "sigmoid":
        return sigmoid_loss(img, txt, scale, bias, impl=impl, groups=groups, duplicates=duplicates)
    if name == "softmax":
        return softmax_loss(img, txt, scale, impl=impl, groups=groups, duplicates=duplicates)
    raise ValueError(f"unknown loss {name!r}; expected 'sigmoid' or 'softmax'")
