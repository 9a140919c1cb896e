"""Shared cases and comparison helpers for the loss tests (also used by the Triton subprocess check).

Tolerances (stated here, asserted by the tests), errors measured against the float64
reference evaluated on the very same (already rounded) inputs:
  fp32: |loss − ref| ≤ 1e-5·|ref|,  max|grad − ref| ≤ 1e-5·max|ref| for each of the 4 gradients
  bf16: |loss − ref| ≤ 2e-2·|ref|,  max|grad − ref| ≤ 5e-2·max|ref|  (the bf16 reference itself is
        off by ~5e-3 typically and up to ~4e-2 at extreme logits: logits and gradients carry 8 mantissa bits)
"""

from __future__ import annotations

import torch

from litops.core.losses import sigmoid_loss, softmax_loss
from litops.core.losses.reference import sigmoid_loss_reference, softmax_loss_reference

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 5e-2)}
NAMES = ("loss", "img", "txt", "scale", "bias")


def make_case(name: str, dtype=torch.float32):
    """(img, txt, scale, bias) leaf tensors (grads not yet enabled) for a named case."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)

    def rn(n, d, spread=1.0):
        return torch.randn(n, d, generator=g, dtype=torch.float64) * spread / d**0.5

    if name == "n1":
        img, txt = rn(1, 3), rn(1, 3)
    elif name == "ragged":  # N not a multiple of any tile, D not a power of two
        img, txt = rn(37, 20), rn(37, 20)
    elif name == "d_odd":
        img, txt = rn(33, 33), rn(33, 33)
    elif name == "noncontig":
        img, txt = rn(24, 17), rn(24, 34)  # made non-contiguous below, after the dtype cast
    elif name == "extreme":  # |logits| above 80 (up to a few hundred)
        img, txt = rn(20, 8, 8.0), rn(20, 8, 8.0)
        scale = torch.tensor(3.0)
    elif name == "duplicates":
        img, txt = rn(24, 16), rn(24, 16)
        img[3] = img[5]
        txt[3] = txt[5]
        txt[7] = txt[2]
        img[9] = img[10]
        txt[9] = txt[10]
    else:
        raise KeyError(name)
    img, txt = img.to(dtype), txt.to(dtype)
    if name == "noncontig":
        img = img.t().contiguous().t()  # column-major storage
        txt = txt[:, ::2]  # strided columns
        assert not img.is_contiguous() and not txt.is_contiguous()
    if name == "extreme":
        assert (scale * img.double() @ txt.double().t()).abs().max() > 80
    return img, txt, scale, bias


CASES = ("n1", "ragged", "d_odd", "noncontig", "extreme", "duplicates")


def run(loss: str, impl: str, img, txt, scale, bias, *, grads=(True, True, True, True), block=None):
    """Value and gradients (None where not required) of one implementation on copies of the inputs."""
    leaves = [t.detach().requires_grad_(r) for t, r in zip((img, txt, scale, bias), grads)]
    if impl == "ref64":
        i, t, s, b = (x.detach().double().requires_grad_(x.requires_grad) for x in leaves)
        leaves = [i, t, s, b]
        out = sigmoid_loss_reference(i, t, s, b) if loss == "sigmoid" else softmax_loss_reference(i, t, s)
    elif loss == "sigmoid":
        out = sigmoid_loss(*leaves, impl=impl, block=block)
    else:
        out = softmax_loss(*leaves[:3], impl=impl, block=block) if impl == "chunked" else softmax_loss(*leaves[:3], impl=impl)
    if out.requires_grad:
        out.backward()
    return [out.detach()] + [x.grad for x in leaves]


def errors(got, want) -> dict:
    """Relative errors: |loss − ref|/|ref| and max|g − ref|/max|ref| per gradient (None if absent)."""
    res = {}
    for name, a, b in zip(NAMES, got, want):
        if b is None:
            res[name] = None if a is None else float("nan")
            continue
        if a is None or not torch.isfinite(a).all():
            res[name] = float("inf")
            continue
        res[name] = (a.double() - b).abs().max().item() / max(b.abs().max().item(), 1e-30)
    return res


def check(errs: dict, dtype, loss: str, what: str) -> None:
    lt, gt = TOL[dtype]
    for name in NAMES:
        e = errs[name]
        if loss == "softmax" and name == "bias":
            assert e is None, f"{what}: softmax must not produce a bias gradient"
            continue
        assert e is not None, f"{what}: missing {name}"
        assert e <= (lt if name == "loss" else gt), f"{what}: {name} relative error {e:.3g} > tolerance"
