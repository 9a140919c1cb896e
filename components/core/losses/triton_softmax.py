"""Fused Triton softmax (CLIP) loss: forward keeps row and column log-sum-exp (O(N)).

Forward  : one kernel computes the online (flash-style) log-sum-exp of each row of
           scale·A@Bᵀ over column tiles, plus the diagonal (positive) logits; launched with (img, txt)
           for the row LSE and with (txt, img) for the column LSE.
Backward : with r, c the row/column LSE, 2N·∂loss/∂l = exp(l − r_i) + exp(l − c_j) − 2δ_ij =: P.
           One kernel computes P@B per (row block, D split), recomputing tiles; launched with
           (img, txt, r, c) for dImg and (txt, img, c, r) for dTxt (P of the swapped problem is Pᵀ).
           dscale = Σ img∘(P@txt) / 2N. For D > 256 on CUDA a "strip" backward writes P for a strip
           of rows from a fused kernel and uses cuBLAS for P@txt and Pᵀ@img (see triton_sigmoid.py).
Duplicate groups (GROUP_MODE, see triton_common):
  "ignore"   the off-diagonal same-group logits are −inf in both LSE passes and in P.
  "positive" the LSE kernel returns Σ_{same j} l_ij per row instead of the diagonal (weighted by
             1/group size on the host), and P's target term is 2·same/|group(i)|, with the
             per-row weights loaded by the tile (group sizes: groups.inverse_group_sizes, O(N)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from litops.core.losses._checks import device_guard, no_autocast
from litops.core.losses.groups import inverse_group_sizes
from litops.core.losses.triton_common import (
    GROUP_POSITIVE,
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
    same_group,
    precision_for,
    scalar_f32,
    strip_matmuls,
    strip_rows,
)


@triton.jit
def _row_lse_kernel(a_ptr, b_ptr, scale_ptr, groups_ptr, lse_ptr, diag_ptr, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, MODE: tl.constexpr,
                    GROUP_MODE: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    scale = tl.load(scale_ptr)
    m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    s_acc = tl.zeros([BLOCK_M], dtype=tl.float32)
    diag = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        s = logits_tile(a_ptr, b_ptr, rows, cols, N, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                        BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, MODE)
        logit = tl.where(cols[None, :] < N, s * scale, float("-inf"))
        if GROUP_MODE == 2:
            logit = tl.where(ignored_pairs(rows, cols, groups_ptr, N, N), float("-inf"), logit)
        m_new = tl.maximum(m, tl.max(logit, axis=1))  # finite: every tile has ≥ 1 valid column
        m_shift = m_new
        if GROUP_MODE == 2:  # not finite when every pair of a tile row so far is ignored
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s_acc = s_acc * tl.exp(m - m_shift) + tl.sum(tl.exp(logit - m_shift[:, None]), axis=1)
        m = m_new
        diag += tl.sum(tl.where(positive_pairs(rows, cols, groups_ptr, N, N, GROUP_MODE), logit, 0.0), axis=1)
    tl.store(lse_ptr + rows, m + tl.log(s_acc), mask=rows < N)
    tl.store(diag_ptr + rows, diag, mask=rows < N)


@triton.jit
def _p_tile(logit, r, c, rows, cols, groups_ptr, w_ptr, n_rows, n_cols, GROUP_MODE: tl.constexpr):
    """P = exp(l − r_i) + exp(l − c_j) − target term, for one tile (out-of-range entries unmasked)."""
    if GROUP_MODE == 2:
        logit = tl.where(ignored_pairs(rows, cols, groups_ptr, n_rows, n_cols), float("-inf"), logit)
    p = tl.exp(logit - r[:, None]) + tl.exp(logit - c[None, :])
    if GROUP_MODE == 1:
        w = tl.load(w_ptr + rows, mask=rows < n_rows, other=0.0)
        p = tl.where(same_group(rows, cols, groups_ptr, n_rows, n_cols), p - 2.0 * w[:, None], p)
    else:
        p = tl.where(rows[:, None] == cols[None, :], p - 2.0, p)
    return p


@triton.jit
def _softmax_bwd_kernel(a_ptr, b_ptr, scale_ptr, r_ptr, c_ptr, groups_ptr, w_ptr, ga_ptr, N, D,
                        stride_am, stride_ak, stride_bn, stride_bk, stride_gm, stride_gk,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                        PRECISION: tl.constexpr, MODE: tl.constexpr, GROUP_MODE: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    scale = tl.load(scale_ptr)
    r = tl.load(r_ptr + rows, mask=rows < N, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        c = tl.load(c_ptr + cols, mask=cols < N, other=0.0)
        s = logits_tile(a_ptr, b_ptr, rows, cols, N, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                        BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, MODE)
        p = _p_tile(s * scale, r, c, rows, cols, groups_ptr, w_ptr, N, N, GROUP_MODE)
        p = tl.where((rows[:, None] < N) & (cols[None, :] < N), p, 0.0)
        bt = tl.load(b_ptr + cols[:, None] * stride_bn + ds[None, :] * stride_bk,
                     mask=(cols[:, None] < N) & (ds[None, :] < D), other=0.0)
        acc = mm(p.to(bt.dtype), bt, acc, PRECISION, MODE)
    tl.store(ga_ptr + rows[:, None] * stride_gm + ds[None, :] * stride_gk, acc, mask=(rows[:, None] < N) & (ds[None, :] < D))


@triton.jit
def _softmax_gstrip_kernel(a_ptr, b_ptr, scale_ptr, r_ptr, c_ptr, groups_ptr, w_ptr, g_ptr, row0, R, N, D,
                           stride_am, stride_ak, stride_bn, stride_bk, stride_gm, stride_gn,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           PRECISION: tl.constexpr, MODE: tl.constexpr, GROUP_MODE: tl.constexpr):
    """P[row0 + i, j] for one tile of a strip of R rows, written in P's dtype."""
    lrows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = row0 + lrows
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    scale = tl.load(scale_ptr)
    r = tl.load(r_ptr + rows, mask=lrows < R, other=0.0)
    c = tl.load(c_ptr + cols, mask=cols < N, other=0.0)
    s = logits_tile(a_ptr, b_ptr, rows, cols, row0 + R, N, D, stride_am, stride_ak, stride_bn, stride_bk,
                    BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, MODE)
    p = _p_tile(s * scale, r, c, rows, cols, groups_ptr, w_ptr, row0 + R, N, GROUP_MODE)
    valid = (lrows[:, None] < R) & (cols[None, :] < N)
    tl.store(g_ptr + lrows[:, None] * stride_gm + cols[None, :] * stride_gn, p.to(g_ptr.dtype.element_ty), mask=valid)


def _strip_backward(img, txt, scale32, row_lse, col_lse, groups, weights, mode, need_txt):
    n, d = img.shape
    cfg = config(n, d, img.device)
    rows = strip_rows(n, img.device)
    gi = torch.empty((n, d), dtype=torch.float32, device=img.device)
    gt = torch.zeros((n, d), dtype=torch.float32, device=img.device) if need_txt else None
    g = torch.empty((min(rows, n), n), dtype=img.dtype, device=img.device)
    for r0 in range(0, n, rows):
        r = min(rows, n - r0)
        grid = (triton.cdiv(r, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))
        _softmax_gstrip_kernel[grid](img, txt, scale32, row_lse, col_lse, groups, weights, g, r0, r, n, d, img.stride(0), img.stride(1),
                                     txt.stride(0), txt.stride(1), g.stride(0), g.stride(1),
                                     BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                                     PRECISION=precision_for(img.dtype), MODE=kernel_mode(img.device), GROUP_MODE=mode,
                                     num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        if need_txt:
            strip_matmuls(g[:r], txt, img[r0:r0 + r], gi[r0:r0 + r], gt)
        else:
            gi[r0:r0 + r] = (g[:r] @ txt).float()
    return gi, gt


def _lse(a, b, scale32, groups, mode):
    """(row LSE of scale·a@bᵀ, the rows' positive logits: the diagonal, or Σ same-group logits)."""
    n, d = a.shape
    cfg = config(n, d, a.device)
    out = torch.empty(n, dtype=torch.float32, device=a.device)
    diag = torch.empty(n, dtype=torch.float32, device=a.device)
    _row_lse_kernel[(triton.cdiv(n, cfg["BLOCK_M"]),)](
        a, b, scale32, groups, out, diag, n, d, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], PRECISION=precision_for(a.dtype), MODE=kernel_mode(a.device),
        GROUP_MODE=mode, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out, diag


def _p_times(a, b, scale32, r, c, groups, weights, mode):
    n, d = a.shape
    cfg = config(n, d, a.device)
    ga = torch.empty((n, d), dtype=torch.float32, device=a.device)
    grid = (triton.cdiv(n, cfg["BLOCK_M"]), triton.cdiv(d, cfg["BLOCK_D"]))
    _softmax_bwd_kernel[grid](a, b, scale32, r, c, groups, weights, ga, n, d, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                              ga.stride(0), ga.stride(1), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
                              BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"], PRECISION=precision_for(a.dtype), MODE=kernel_mode(a.device),
                              GROUP_MODE=mode, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return ga


class TritonSoftmaxLoss(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, groups, weights, mode):
        s32 = scalar_f32(scale)
        row_lse, diag = _lse(img, txt, s32, groups, mode)  # the positives' logits come from the same tiles
        col_lse, diag_t = _lse(txt, img, s32, groups, mode)
        if mode == GROUP_POSITIVE:
            diag, diag_t = diag * weights, diag_t * weights
        n = img.shape[0]
        loss = 0.5 * ((row_lse - diag).sum(dtype=torch.float64) + (col_lse - diag_t).sum(dtype=torch.float64)) / n
        ctx.save_for_backward(img, txt, scale, row_lse, col_lse, groups, weights)
        ctx.mode = mode
        return loss.to(img.dtype)

    @staticmethod
    @no_autocast
    def backward(ctx, grad_out):
        img, txt, scale, row_lse, col_lse, groups, weights = ctx.saved_tensors
        need_img, need_txt, need_scale = ctx.needs_input_grad[:3]
        grouping = (groups, weights, ctx.mode)
        s32 = scalar_f32(scale)
        g = grad_out.to(torch.float32) / (2 * img.shape[0])
        d_img = d_txt = d_scale = None
        if backward_mode(img.shape[1], img.device) == "strip":
            gi, gt = _strip_backward(img, txt, s32, row_lse, col_lse, *grouping, need_txt)
            d_img = (gi * (g * s32[0])).to(img.dtype) if need_img else None
            d_txt = (gt * (g * s32[0])).to(txt.dtype) if need_txt else None
            d_scale = ((img.to(torch.float32) * gi).sum() * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
            return d_img, d_txt, d_scale, None, None, None
        if need_img or need_scale:
            gi = _p_times(img, txt, s32, row_lse, col_lse, *grouping)
            if need_img:
                d_img = (gi * (g * s32[0])).to(img.dtype)
            if need_scale:
                d_scale = ((img.to(torch.float32) * gi).sum() * g).to(scale.dtype).reshape(scale.shape)
        if need_txt:
            d_txt = (_p_times(txt, img, s32, col_lse, row_lse, *grouping) * (g * s32[0])).to(txt.dtype)
        return d_img, d_txt, d_scale, None, None, None


def softmax_loss_triton(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor | None = None,
                        duplicates: str = "negative") -> torch.Tensor:
    check_triton_inputs(img)
    mode = group_mode(groups, duplicates)
    ids = groups_arg(groups if mode else None, img)
    # 1/group size per row, read by the positive kernels only (a placeholder otherwise)
    weights = inverse_group_sizes(groups, torch.float32) if mode == GROUP_POSITIVE else img
    with device_guard(img):
        return TritonSoftmaxLoss.apply(img, txt, scale, ids, weights, mode)
