"""Fused Triton sigmoid (SigLIP) loss: forward keeps O(N) statistics, backward recomputes tiles.

Forward  : one program per row block loops over column tiles, computes the logits tile in
           fp32 (tl.dot, fp32 accumulator), applies softplus(−z·l) and keeps one partial sum per row.
Backward : G = ∂(Σ softplus(−z·l))/∂l = σ(l) off the diagonal, −σ(−l) on it. One kernel
           computes G@B per (row block, D split) by recomputing tiles; it is launched twice,
           with (img, txt) for dImg and with (txt, img) for dTxt, since the loss is symmetric
           under swapping img and txt (G of the swapped problem is Gᵀ). dscale = Σ img∘(G@txt)
           and dbias = ΣG are O(N·D) / O(N) reductions of the kernel outputs.
For wide embeddings on CUDA (D > 256) the backward instead runs in "strip" mode: a kernel
writes G for a strip of rows (logits GEMM + fused epilogue, in the input dtype, per-row ΣG by
atomics) and cuBLAS computes G@txt and Gᵀ@img, so logits are recomputed once regardless of D
(see triton_common.backward_mode). No N×N tensor is allocated; extra memory is O(N·D) fp32
for the gradients, plus one (rows × N) strip in strip mode.
Duplicate groups (GROUP_MODE, see triton_common): "positive" makes z = +1 on every same-group
pair of a tile, "ignore" drops the off-diagonal same-group pairs from the sum and from G.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from litops.core.losses._checks import device_guard, no_autocast
from litops.core.losses.triton_common import (
    backward_mode,
    check_triton_inputs,
    config,
    group_mode,
    groups_arg,
    ignored_pairs,
    kernel_mode,
    logits_tile,
    mm,
    positive_pairs,
    precision_for,
    scalar_f32,
    strip_matmuls,
    strip_rows,
)


@triton.jit
def _log1p(t):
    # accurate log(1 + t) for t ≥ 0 from log alone (Goldberg): log(u)·t/(u − 1), u = fl(1 + t)
    u = 1.0 + t
    return tl.where(u == 1.0, t, tl.log(u) * (t / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log1p(e^{−|x|}); finite and relatively accurate for any x
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _sigmoid_fwd_kernel(a_ptr, b_ptr, scale_ptr, bias_ptr, groups_ptr, row_out_ptr, N, D,
                        stride_am, stride_ak, stride_bn, stride_bk,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, MODE: tl.constexpr,
                        GROUP_MODE: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    scale = tl.load(scale_ptr)
    bias = tl.load(bias_ptr)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        s = logits_tile(a_ptr, b_ptr, rows, cols, N, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                        BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, MODE)
        logit = s * scale + bias
        x = tl.where(positive_pairs(rows, cols, groups_ptr, N, N, GROUP_MODE), -logit, logit)  # softplus(−z·l)
        valid = (rows[:, None] < N) & (cols[None, :] < N)
        if GROUP_MODE == 2:
            valid = valid & ~ignored_pairs(rows, cols, groups_ptr, N, N)
        row_sum += tl.sum(tl.where(valid, _softplus(x), 0.0), axis=1)
    tl.store(row_out_ptr + rows, row_sum, mask=rows < N)


@triton.jit
def _sigmoid_bwd_kernel(a_ptr, b_ptr, scale_ptr, bias_ptr, groups_ptr, ga_ptr, gsum_ptr, N, D,
                        stride_am, stride_ak, stride_bn, stride_bk, stride_gm, stride_gk,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                        PRECISION: tl.constexpr, MODE: tl.constexpr, GROUP_MODE: tl.constexpr):
    """ga[rows, dsplit] = G[rows, :] @ B[:, dsplit] (fp32); gsum[rows] = Σ_j G[rows, j] (D split 0 only)."""
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    scale = tl.load(scale_ptr)
    bias = tl.load(bias_ptr)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    gsum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        s = logits_tile(a_ptr, b_ptr, rows, cols, N, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                        BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, MODE)
        logit = s * scale + bias
        positive = positive_pairs(rows, cols, groups_ptr, N, N, GROUP_MODE)
        p = tl.sigmoid(tl.where(positive, -logit, logit))
        p = tl.where(positive, -p, p)
        valid = (rows[:, None] < N) & (cols[None, :] < N)
        if GROUP_MODE == 2:
            valid = valid & ~ignored_pairs(rows, cols, groups_ptr, N, N)
        p = tl.where(valid, p, 0.0)
        gsum += tl.sum(p, axis=1)
        bt = tl.load(b_ptr + cols[:, None] * stride_bn + ds[None, :] * stride_bk,
                     mask=(cols[:, None] < N) & (ds[None, :] < D), other=0.0)
        acc = mm(p.to(bt.dtype), bt, acc, PRECISION, MODE)
    tl.store(ga_ptr + rows[:, None] * stride_gm + ds[None, :] * stride_gk, acc, mask=(rows[:, None] < N) & (ds[None, :] < D))
    if pid_d == 0:
        tl.store(gsum_ptr + rows, gsum, mask=rows < N)


@triton.jit
def _sigmoid_gstrip_kernel(a_ptr, b_ptr, scale_ptr, bias_ptr, groups_ptr, g_ptr, gsum_ptr, row0, R, N, D,
                           stride_am, stride_ak, stride_bn, stride_bk, stride_gm, stride_gn,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           PRECISION: tl.constexpr, MODE: tl.constexpr, GROUP_MODE: tl.constexpr):
    """G[row0 + i, j] for one (BLOCK_M × BLOCK_N) tile of a strip of R rows, written in G's dtype;
    per-row ΣG accumulated with atomics into gsum."""
    lrows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = row0 + lrows
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    scale = tl.load(scale_ptr)
    bias = tl.load(bias_ptr)
    s = logits_tile(a_ptr, b_ptr, rows, cols, row0 + R, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                    BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, MODE)
    logit = s * scale + bias
    positive = positive_pairs(rows, cols, groups_ptr, row0 + R, N, GROUP_MODE)
    p = tl.sigmoid(tl.where(positive, -logit, logit))
    p = tl.where(positive, -p, p)
    in_range = (lrows[:, None] < R) & (cols[None, :] < N)
    valid = in_range
    if GROUP_MODE == 2:  # ignored pairs are stored as 0
        valid = valid & ~ignored_pairs(rows, cols, groups_ptr, row0 + R, N)
    p = tl.where(valid, p, 0.0)
    tl.store(g_ptr + lrows[:, None] * stride_gm + cols[None, :] * stride_gn, p.to(g_ptr.dtype.element_ty), mask=in_range)
    tl.atomic_add(gsum_ptr + rows, tl.sum(p, axis=1), mask=lrows < R)


def _fwd(img, txt, scale32, bias32, groups, mode):
    n, d = img.shape
    cfg = config(n, d, img.device)
    row = torch.empty(n, dtype=torch.float32, device=img.device)
    grid = (triton.cdiv(n, cfg["BLOCK_M"]),)
    _sigmoid_fwd_kernel[grid](img, txt, scale32, bias32, groups, row, n, d, img.stride(0), img.stride(1), txt.stride(0), txt.stride(1),
                              BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                              PRECISION=precision_for(img.dtype), MODE=kernel_mode(img.device), GROUP_MODE=mode,
                              num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return row


def _g_times(a, b, scale32, bias32, groups, mode):
    """(G@b in fp32 [N, D], per-row ΣG [N]) for the problem (a, b); G is symmetric in its
    duplicate pattern, so (b, a) uses the same groups."""
    n, d = a.shape
    cfg = config(n, d, a.device)
    ga = torch.empty((n, d), dtype=torch.float32, device=a.device)
    gsum = torch.empty(n, dtype=torch.float32, device=a.device)
    grid = (triton.cdiv(n, cfg["BLOCK_M"]), triton.cdiv(d, cfg["BLOCK_D"]))
    _sigmoid_bwd_kernel[grid](a, b, scale32, bias32, groups, ga, gsum, n, d, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                              ga.stride(0), ga.stride(1), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
                              BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"], PRECISION=precision_for(a.dtype), MODE=kernel_mode(a.device),
                              GROUP_MODE=mode, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return ga, gsum


def _strip_backward(img, txt, scale32, bias32, groups, mode, need_txt):
    """(G@txt, Gᵀ@img or None, per-row ΣG) through G strips and cuBLAS."""
    n, d = img.shape
    cfg = config(n, d, img.device)
    rows = strip_rows(n, img.device)
    gi = torch.empty((n, d), dtype=torch.float32, device=img.device)
    gt = torch.zeros((n, d), dtype=torch.float32, device=img.device) if need_txt else torch.empty(0)
    gsum = torch.zeros(n, dtype=torch.float32, device=img.device)
    g = torch.empty((min(rows, n), n), dtype=img.dtype, device=img.device)
    for r0 in range(0, n, rows):
        r = min(rows, n - r0)
        grid = (triton.cdiv(r, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))
        _sigmoid_gstrip_kernel[grid](img, txt, scale32, bias32, groups, g, gsum, r0, r, n, d, img.stride(0), img.stride(1),
                                     txt.stride(0), txt.stride(1), g.stride(0), g.stride(1),
                                     BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                                     PRECISION=precision_for(img.dtype), MODE=kernel_mode(img.device), GROUP_MODE=mode,
                                     num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        if need_txt:
            strip_matmuls(g[:r], txt, img[r0:r0 + r], gi[r0:r0 + r], gt)
        else:
            gi[r0:r0 + r] = (g[:r] @ txt).float()
    return gi, (gt if need_txt else None), gsum


class TritonSigmoidLoss(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, bias, groups, mode):
        row = _fwd(img, txt, scalar_f32(scale), scalar_f32(bias), groups, mode)
        ctx.save_for_backward(img, txt, scale, bias, groups)
        ctx.mode = mode
        return (row.sum(dtype=torch.float64) / img.shape[0]).to(img.dtype)

    @staticmethod
    @no_autocast
    def backward(ctx, grad_out):
        img, txt, scale, bias, groups = ctx.saved_tensors
        need_img, need_txt, need_scale, need_bias = ctx.needs_input_grad[:4]
        s32, b32 = scalar_f32(scale), scalar_f32(bias)
        grouping = (groups, ctx.mode)
        g = grad_out.to(torch.float32) / img.shape[0]
        sc = s32[0]
        d_img = d_txt = d_scale = d_bias = None
        if backward_mode(img.shape[1], img.device) == "strip":
            gi, gt, gsum = _strip_backward(img, txt, s32, b32, *grouping, need_txt)
            d_img = (gi * (g * sc)).to(img.dtype) if need_img else None
            d_txt = (gt * (g * sc)).to(txt.dtype) if need_txt else None
            d_scale = ((img.to(torch.float32) * gi).sum() * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
            d_bias = (gsum.sum() * g).to(bias.dtype).reshape(bias.shape) if need_bias else None
            return d_img, d_txt, d_scale, d_bias, None, None
        if need_img or need_scale or need_bias:
            gi, gsum = _g_times(img, txt, s32, b32, *grouping)
            if need_img:
                d_img = (gi * (g * sc)).to(img.dtype)
            if need_scale:
                d_scale = ((img.to(torch.float32) * gi).sum() * g).to(scale.dtype).reshape(scale.shape)
            if need_bias:
                d_bias = (gsum.sum() * g).to(bias.dtype).reshape(bias.shape)
        if need_txt:
            gt, _ = _g_times(txt, img, s32, b32, *grouping)
            d_txt = (gt * (g * sc)).to(txt.dtype)
        return d_img, d_txt, d_scale, d_bias, None, None


def sigmoid_loss_triton(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                        groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    check_triton_inputs(img)
    mode = group_mode(groups, duplicates)
    with device_guard(img):
        return TritonSigmoidLoss.apply(img, txt, scale, bias, groups_arg(groups if mode else None, img), mode)
