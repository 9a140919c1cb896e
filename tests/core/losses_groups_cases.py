"""Shared cases and helpers for the duplicate-aware loss tests (also used by the Triton subprocess
check, losses_groups_triton_check.py).

Tolerances, errors relative to the float64 reference on the same (already rounded) inputs:
  float64: 1e-10 (loss and each gradient, relative to max|ref|)
  float32: 1e-4  ("loose": with same-group positives there is no diagonal to pair each LSE with
                  exactly, so at |logits| of a few hundred the fp32 logit rounding shows at ~2e-5)
"""

from __future__ import annotations

import torch

from litops.core.losses import caption_groups, sigmoid_loss, softmax_loss
from litops.core.losses.reference import sigmoid_loss_reference, softmax_loss_reference

MODES = ("positive", "ignore", "negative")
GROUP_CASES = ("mixed", "extreme", "distinct", "same", "n1", "noncontig")
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
NAMES = ("loss", "img", "txt", "scale", "bias")


def _mixed_captions(n: int) -> list[str]:
    """Captions with groups of 2, 3 and 4 identical texts, the rest unique."""
    caps = [f"a photo of thing {i}" for i in range(n)]
    for i in (3, 9):
        caps[i] = caps[1]  # group of 3
    caps[7] = caps[0]  # group of 2
    for i in (12, 15, n - 1):
        caps[i] = caps[4]  # group of 4, reaching the last row
    return caps


def make_group_case(name: str, dtype=torch.float64, identical_texts: bool = False):
    """(img, txt, scale, bias, groups) for a named case. Rows of one group get nearby text
    embeddings (identical with identical_texts, as a deterministic text tower gives; then softmax
    "positive" has the same value as "negative", see test_losses_groups.py)."""
    g = torch.Generator().manual_seed(1000 + sum(map(ord, name)))
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    n, d, spread = {"mixed": (23, 10, 1.0), "extreme": (20, 8, 8.0), "distinct": (17, 6, 1.0), "same": (13, 5, 1.0),
                    "n1": (1, 3, 1.0), "noncontig": (24, 17, 1.0)}[name]
    img = torch.randn(n, d, generator=g, dtype=torch.float64) * spread / d**0.5
    txt = torch.randn(n, 2 * d if name == "noncontig" else d, generator=g, dtype=torch.float64) * spread / d**0.5
    if name == "distinct":
        groups = torch.randperm(n, generator=g) * 1000 - 500
    elif name in ("same", "n1"):
        groups = torch.full((n,), -7, dtype=torch.int64)
    else:
        groups = caption_groups(_mixed_captions(n))
    if name == "extreme":
        scale = torch.tensor(3.0)
    first = {}
    for i, gid in enumerate(groups.tolist()):  # equal captions, (nearly) equal text embeddings
        if first.setdefault(gid, i) != i:
            jitter = 0.0 if identical_texts else 0.2 * spread / d**0.5
            txt[i] = txt[first[gid]] + jitter * torch.randn(txt.shape[1], generator=g, dtype=torch.float64)
    img, txt = img.to(dtype), txt.to(dtype)
    if name == "noncontig":
        img = img.t().contiguous().t()
        txt = txt[:, ::2]
        assert not img.is_contiguous() and not txt.is_contiguous()
    if name == "extreme":
        assert (scale * img.double() @ txt.double().t()).abs().max() > 80
    return img, txt, scale.to(dtype), bias.to(dtype), groups


def run(loss: str, impl: str, img, txt, scale, bias, groups, duplicates, *, block=None, grads=(True,) * 4):
    """[value, d img, d txt, d scale, d bias] (None where not required) of one implementation;
    impl "ref64" is the reference in float64."""
    leaves = [t.detach().requires_grad_(r) for t, r in zip((img, txt, scale, bias), grads)]
    if impl == "ref64":
        leaves = [x.detach().double().requires_grad_(x.requires_grad) for x in leaves]
        i, t, s, b = leaves
        out = sigmoid_loss_reference(i, t, s, b, groups, duplicates) if loss == "sigmoid" else \
            softmax_loss_reference(i, t, s, groups, duplicates)
    elif loss == "sigmoid":
        out = sigmoid_loss(*leaves, impl=impl, block=block, groups=groups, duplicates=duplicates)
    else:
        out = softmax_loss(*leaves[:3], impl=impl, block=block, groups=groups, duplicates=duplicates)
    if out.requires_grad:
        out.backward()
    return [out.detach()] + [x.grad for x in leaves]


def errors(got, want) -> dict:
    """max|got − want| / max(max|want|, 1e-2) per output (None where the reference has none). The
    floor: an exactly 0 reference (softmax "ignore" with one group) is met to rounding only."""
    res = {}
    for name, a, b in zip(NAMES, got, want):
        if b is None:
            res[name] = None if a is None else float("nan")
        elif a is None or not torch.isfinite(a).all():
            res[name] = float("inf")
        else:
            res[name] = (a.double() - b).abs().max().item() / max(b.abs().max().item(), 1e-2)
    return res


def check(errs: dict, dtype, loss: str, what: str) -> None:
    tol = TOL[dtype]
    for name in NAMES:
        e = errs[name]
        if loss == "softmax" and name == "bias":
            assert e is None, f"{what}: softmax must not produce a bias gradient"
            continue
        assert e is not None, f"{what}: missing {name}"
        assert e <= tol, f"{what}: {name} relative error {e:.3g} > {tol:g}"
