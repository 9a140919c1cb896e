"""Chunked contrastive losses in pure PyTorch (any device): row blocks, recompute in backward.

No N×N tensor is ever alive: forward keeps O(N) statistics (softmax: row and column
log-sum-exp), backward recomputes one (block × N) strip of logits at a time and turns it
into gradients with in-place elementwise ops and three GEMMs per strip. Memory is
O(block·N + N·D).

Conventions (open_clip):
  sigmoid: logits = scale·img@txtᵀ + bias, z = 2I − 1, loss = Σ softplus(−z∘logits) / N
  softmax: logits = scale·img@txtᵀ, loss = ½ (CE(logits, I) + CE(logitsᵀ, I)), CE averaged over N

Useful identities (G = ∂loss/∂logits, S = img@txtᵀ):
  dImg = scale·G@txt, dTxt = scale·Gᵀ@img, dscale = Σ G∘S = Σ_i img_i·(G@txt)_i  (an O(N·D) dot),
  dbias = Σ G. So dscale never needs the unscaled logits.
The diagonal is handled in place on the strip's diagonal view, so no cancellation
(Σ softplus(l) − Σ l_ii) loses precision at extreme logits.

The strip-level helpers (`_sigmoid_strip_fwd`, ...) are reused by the distributed ring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from litops.core.losses._checks import no_autocast

# Target elements of one fp32 (block × N) strip (16 MiB on CPU). Tuned on a 2-core CPU (see
# tests/benchmarks/losses.py): much smaller strips make the skinny GEMMs and the
# per-strip Gᵀ@img accumulation (N×D read+write per strip) dominate. GPUs prefer bigger strips.
_CPU_STRIP_ELEMS = 1 << 22
_GPU_STRIP_ELEMS = 1 << 26


def default_block(n_rows: int, n_cols: int, device: torch.device) -> int:
    target = _GPU_STRIP_ELEMS if device.type == "cuda" else _CPU_STRIP_ELEMS
    return max(1, min(n_rows, target // max(1, n_cols)))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _strip_logits(a_s: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor:
    """(scale·a) @ bᵀ (+ bias) for one strip, returned in the accumulation dtype (a fresh tensor)."""
    if bias is None:
        out = a_s @ b.t()
        return out if out.dtype == acc else out.to(acc)
    if a_s.dtype == acc:
        return torch.addmm(bias.to(acc), a_s, b.t())
    return (a_s @ b.t()).to(acc).add_(bias.to(acc))


# ----------------------------------------------------------------------------- sigmoid


def _sigmoid_strip_fwd(a_s: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, diag_offset: int | None) -> torch.Tensor:
    """Σ softplus(−z∘logits) over one strip (rows a_s against all rows of b). z = +1 on the
    elements (k, diag_offset + k), −1 elsewhere; diag_offset=None means no positives."""
    acc = _acc_dtype(a_s.dtype)
    logits = _strip_logits(a_s, b, bias, acc)
    if diag_offset is not None:
        logits.diagonal(diag_offset).neg_()
    return F.softplus(logits).sum(dtype=torch.float64 if acc == torch.float64 else torch.float32)


def _sigmoid_strip_bwd(a: torch.Tensor, a_s: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, diag_offset: int | None,
                       db_acc: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """G = ∂/∂logits of Σ softplus(−z∘logits) on one strip (σ(l) off the diagonal, −σ(−l) on it).
    Returns (G@b [rows×D, acc dtype], ΣG); adds Gᵀ@a into db_acc (N_b×D, acc dtype) if given."""
    acc = _acc_dtype(a_s.dtype)
    p = _strip_logits(a_s, b, bias, acc)
    if diag_offset is not None:
        p.diagonal(diag_offset).neg_()
    torch.sigmoid(p, out=p)
    if diag_offset is not None:
        p.diagonal(diag_offset).neg_()  # ∂softplus(−l)/∂l = −σ(−l)
    gsum = p.sum()
    pm = p if p.dtype == b.dtype else p.to(b.dtype)
    ga = (pm @ b).to(acc)
    if db_acc is not None:
        db_acc.addmm_(pm.t(), a) if db_acc.dtype == a.dtype else db_acc.add_((pm.t() @ a).to(acc))
    return ga, gsum


class ChunkedSigmoidLoss(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, bias, block):
        n = img.shape[0]
        scale0, bias0 = scale.reshape(()), bias.reshape(())
        img_s = img * scale0.to(img.dtype)
        total = torch.zeros((), dtype=torch.float64, device=img.device)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            total += _sigmoid_strip_fwd(img_s[i0:i1], txt, bias0, i0)
        ctx.save_for_backward(img, txt, scale, bias)
        ctx.block = block
        return (total / n).to(img.dtype)

    @staticmethod
    @no_autocast
    def backward(ctx, grad_out):
        img, txt, scale, bias = ctx.saved_tensors
        n, block = img.shape[0], ctx.block
        need_img, need_txt, need_scale, need_bias = ctx.needs_input_grad[:4]
        scale0, bias0 = scale.reshape(()), bias.reshape(())
        acc = _acc_dtype(img.dtype)
        img_s = img * scale0.to(img.dtype)
        gi = torch.empty(img.shape, dtype=acc, device=img.device)  # G@txt (unscaled)
        gt = torch.zeros(txt.shape, dtype=acc, device=img.device) if need_txt else None  # Gᵀ@img
        gsum = torch.zeros((), dtype=acc, device=img.device)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            ga, s = _sigmoid_strip_bwd(img[i0:i1], img_s[i0:i1], txt, bias0, i0, gt)
            gi[i0:i1] = ga
            gsum += s
        g = grad_out.to(acc) / n
        sc = scale0.to(acc)
        d_img = (gi * (g * sc)).to(img.dtype) if need_img else None
        d_txt = (gt * (g * sc)).to(txt.dtype) if need_txt else None
        d_scale = ((img.to(acc) * gi).sum() * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
        d_bias = (gsum * g).to(bias.dtype).reshape(bias.shape) if need_bias else None
        return d_img, d_txt, d_scale, d_bias, None


def sigmoid_loss_chunked(img, txt, scale, bias, block: int | None = None) -> torch.Tensor:
    block = block or default_block(img.shape[0], txt.shape[0], img.device)
    return ChunkedSigmoidLoss.apply(img, txt, scale, bias, int(block))


# ----------------------------------------------------------------------------- softmax


def _softmax_strip_lse(a_s: torch.Tensor, b: torch.Tensor, diag_offset: int | None):
    """(row LSE of the strip [rows], column LSE of the strip [N_b], the positives' logits
    (k, diag_offset + k) or None) in the acc dtype. Taking the positives from the same GEMM
    output keeps LSE − positive exact (0 at N=1) even for bf16 inputs.

    One exp pass serves both directions: E = exp(l − m_i) with m_i the row max gives the row
    sums, and the column sums are wᵀE with w_i = exp(m_i − M), M = max_i m_i (a GEMV). That is
    exact unless a column's terms all underflow relative to M (|logit| spreads > ~40 nats);
    such columns are recomputed with a direct logsumexp."""
    logits = _strip_logits(a_s, b, None, _acc_dtype(a_s.dtype))
    diag = logits.diagonal(diag_offset).clone() if diag_offset is not None else None
    m = logits.amax(1)
    big_m = m.max()
    w = torch.exp(m - big_m)
    e = logits.sub_(m[:, None]).exp_()  # logits are consumed from here on
    row = m + torch.log(e.sum(1))
    colsum = w @ e
    col = big_m + torch.log(colsum)
    bad = colsum < 1e-20
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        col[idx] = torch.logsumexp(_strip_logits(a_s, b[idx], None, logits.dtype), 0)
    return row, col, diag


def _softmax_strip_bwd(a: torch.Tensor, a_s: torch.Tensor, b: torch.Tensor, row_lse: torch.Tensor, col_lse: torch.Tensor,
                       diag_offset: int | None, db_acc: torch.Tensor | None) -> torch.Tensor:
    """P = exp(l − row_lse) + exp(l − col_lse) − 2·[diag]  (= 2N·∂loss/∂logits on the strip).
    Returns P@b (rows×D, acc dtype); adds Pᵀ@a into db_acc if given."""
    acc = _acc_dtype(a_s.dtype)
    logits = _strip_logits(a_s, b, None, acc)
    p = torch.sub(logits, row_lse[:, None]).exp_()
    logits.sub_(col_lse[None, :]).exp_()
    p.add_(logits)
    del logits
    if diag_offset is not None:
        p.diagonal(diag_offset).sub_(2.0)
    pm = p if p.dtype == b.dtype else p.to(b.dtype)
    ga = (pm @ b).to(acc)
    if db_acc is not None:
        db_acc.addmm_(pm.t(), a) if db_acc.dtype == a.dtype else db_acc.add_((pm.t() @ a).to(acc))
    return ga


class ChunkedSoftmaxLoss(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, block):
        n = img.shape[0]
        scale0 = scale.reshape(())
        acc = _acc_dtype(img.dtype)
        img_s = img * scale0.to(img.dtype)
        row_lse = torch.empty(n, dtype=acc, device=img.device)
        col_lse = torch.full((n,), float("-inf"), dtype=acc, device=img.device)
        diag = torch.empty(n, dtype=acc, device=img.device)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            row_lse[i0:i1], c, diag[i0:i1] = _softmax_strip_lse(img_s[i0:i1], txt, i0)
            torch.logaddexp(col_lse, c, out=col_lse)
        loss = 0.5 * ((row_lse - diag).sum() + (col_lse - diag).sum()) / n
        ctx.save_for_backward(img, txt, scale, row_lse, col_lse)
        ctx.block = block
        return loss.to(img.dtype)

    @staticmethod
    @no_autocast
    def backward(ctx, grad_out):
        img, txt, scale, row_lse, col_lse = ctx.saved_tensors
        n, block = img.shape[0], ctx.block
        need_img, need_txt, need_scale = ctx.needs_input_grad[:3]
        scale0 = scale.reshape(())
        acc = _acc_dtype(img.dtype)
        img_s = img * scale0.to(img.dtype)
        gi = torch.empty(img.shape, dtype=acc, device=img.device)
        gt = torch.zeros(txt.shape, dtype=acc, device=img.device) if need_txt else None
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            gi[i0:i1] = _softmax_strip_bwd(img[i0:i1], img_s[i0:i1], txt, row_lse[i0:i1], col_lse, i0, gt)
        g = grad_out.to(acc) / (2 * n)
        sc = scale0.to(acc)
        d_img = (gi * (g * sc)).to(img.dtype) if need_img else None
        d_txt = (gt * (g * sc)).to(txt.dtype) if need_txt else None
        d_scale = ((img.to(acc) * gi).sum() * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
        return d_img, d_txt, d_scale, None


def softmax_loss_chunked(img, txt, scale, block: int | None = None) -> torch.Tensor:
    block = block or default_block(img.shape[0], txt.shape[0], img.device)
    return ChunkedSoftmaxLoss.apply(img, txt, scale, int(block))
