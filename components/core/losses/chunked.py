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

Duplicate-aware targets (groups, duplicates; semantics in reference.py): a strip compares
its rows' group ids with every column's id (one block×N bool mask, `SameGroup`), so still no
N×N tensor. sigmoid "positive" flips the sign of every same-group logit; "ignore" sets the
ignored logits to −inf, where both softplus and σ are exactly 0 (no contribution, no gradient).
softmax "ignore" also uses −inf (gone from both softmaxes); softmax "positive" has
  loss = ½ (Σ_i row_lse_i + Σ_j col_lse_j − 2 Σ_{same (i,j)} l_ij / |group(i)|) / N
(the row and the column target terms are the same sum, as same-group pairs share the group
size) and P = exp(l − row_lse) + exp(l − col_lse) − 2·same/|group(i)|. Group sizes are O(N)
(groups.inverse_group_sizes). groups=None or "negative" runs exactly the code without groups.

The strip-level helpers (`_sigmoid_strip_fwd`, ...) are reused by the distributed ring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from litops.core.losses._checks import no_autocast
from litops.core.losses.groups import inverse_group_sizes, uses_groups

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


@dataclass(frozen=True)
class SameGroup:
    """Group ids of a strip's rows and of the columns it is compared against.
    mode: "positive" or "ignore"; row_weights: 1/group size of each row (softmax "positive" only)."""
    mode: str
    rows: torch.Tensor
    cols: torch.Tensor
    row_weights: torch.Tensor | None = None

    def strip(self, i0: int, i1: int) -> "SameGroup":
        weights = None if self.row_weights is None else self.row_weights[i0:i1]
        return replace(self, rows=self.rows[i0:i1], row_weights=weights)

    def against(self, cols: torch.Tensor) -> "SameGroup":
        return replace(self, cols=cols)

    def mask(self) -> torch.Tensor:
        return self.rows[:, None] == self.cols[None, :]

    def ignored(self, diag_offset: int | None) -> torch.Tensor:
        """Same-group pairs other than the strip's diagonal (k, diag_offset + k)."""
        m = self.mask()
        if diag_offset is not None:
            m.diagonal(diag_offset).fill_(False)
        return m


def same_group(groups: torch.Tensor | None, duplicates: str, weight_dtype: torch.dtype | None = None,
               rows: slice = slice(None)) -> SameGroup | None:
    """The rule for the whole batch `groups` (None: today's diagonal-only targets), for its rows
    `rows` (the distributed ring: this rank's slice). weight_dtype: also the rows' 1/group size,
    counted over the whole batch (softmax "positive")."""
    if not uses_groups(groups, duplicates):
        return None
    weights = None
    if weight_dtype is not None and duplicates == "positive":
        weights = inverse_group_sizes(groups, weight_dtype)[rows]
    return SameGroup(duplicates, groups[rows], groups, weights)


# ----------------------------------------------------------------------------- sigmoid


def _sigmoid_signed(logits: torch.Tensor, diag_offset: int | None, pairs: SameGroup | None):
    """(−z∘logits, the z = +1 mask or None when only the diagonal is positive). In place except for
    "positive"; "ignore" sets ignored pairs to −inf (softplus and σ are 0 there)."""
    if pairs is not None and pairs.mode == "positive":
        same = pairs.mask()
        return torch.where(same, logits.neg(), logits, out=logits), same
    if diag_offset is not None:
        logits.diagonal(diag_offset).neg_()
    if pairs is not None:
        logits.masked_fill_(pairs.ignored(diag_offset), float("-inf"))
    return logits, None


def _sigmoid_strip_fwd(a_s: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, diag_offset: int | None,
                       pairs: SameGroup | None = None) -> torch.Tensor:
    """Σ softplus(−z∘logits) over one strip (rows a_s against all rows of b). z = +1 on the
    elements (k, diag_offset + k), −1 elsewhere; diag_offset=None means no positives.
    pairs (this strip's rows against b's rows) applies the duplicate mode."""
    acc = _acc_dtype(a_s.dtype)
    logits = _strip_logits(a_s, b, bias, acc)
    if pairs is None:
        if diag_offset is not None:
            logits.diagonal(diag_offset).neg_()
    else:
        logits, _ = _sigmoid_signed(logits, diag_offset, pairs)
    return F.softplus(logits).sum(dtype=torch.float64 if acc == torch.float64 else torch.float32)


def _sigmoid_strip_bwd(a: torch.Tensor, a_s: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, diag_offset: int | None,
                       db_acc: torch.Tensor | None, pairs: SameGroup | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """G = ∂/∂logits of Σ softplus(−z∘logits) on one strip (σ(l) where z = −1, −σ(−l) where z = +1,
    0 on ignored pairs). Returns (G@b [rows×D, acc dtype], ΣG); adds Gᵀ@a into db_acc (N_b×D, acc dtype) if given."""
    acc = _acc_dtype(a_s.dtype)
    p = _strip_logits(a_s, b, bias, acc)
    if pairs is None:
        if diag_offset is not None:
            p.diagonal(diag_offset).neg_()
        torch.sigmoid(p, out=p)
        if diag_offset is not None:
            p.diagonal(diag_offset).neg_()  # ∂softplus(−l)/∂l = −σ(−l)
    else:
        p, same = _sigmoid_signed(p, diag_offset, pairs)
        torch.sigmoid(p, out=p)
        if same is not None:
            torch.where(same, p.neg(), p, out=p)
        elif diag_offset is not None:
            p.diagonal(diag_offset).neg_()
    gsum = p.sum()
    pm = p if p.dtype == b.dtype else p.to(b.dtype)
    ga = (pm @ b).to(acc)
    if db_acc is not None:
        db_acc.addmm_(pm.t(), a) if db_acc.dtype == a.dtype else db_acc.add_((pm.t() @ a).to(acc))
    return ga, gsum


class ChunkedSigmoidLoss(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, bias, block, pairs):
        n = img.shape[0]
        scale0, bias0 = scale.reshape(()), bias.reshape(())
        img_s = img * scale0.to(img.dtype)
        total = torch.zeros((), dtype=torch.float64, device=img.device)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            if pairs is None:
                total += _sigmoid_strip_fwd(img_s[i0:i1], txt, bias0, i0)
            else:
                total += _sigmoid_strip_fwd(img_s[i0:i1], txt, bias0, i0, pairs.strip(i0, i1))
        ctx.save_for_backward(img, txt, scale, bias)
        ctx.block, ctx.pairs = block, pairs
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
            pairs = None if ctx.pairs is None else ctx.pairs.strip(i0, i1)
            ga, s = _sigmoid_strip_bwd(img[i0:i1], img_s[i0:i1], txt, bias0, i0, gt, pairs)
            gi[i0:i1] = ga
            gsum += s
        g = grad_out.to(acc) / n
        sc = scale0.to(acc)
        d_img = (gi * (g * sc)).to(img.dtype) if need_img else None
        d_txt = (gt * (g * sc)).to(txt.dtype) if need_txt else None
        d_scale = ((img.to(acc) * gi).sum() * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
        d_bias = (gsum * g).to(bias.dtype).reshape(bias.shape) if need_bias else None
        return d_img, d_txt, d_scale, d_bias, None, None


def sigmoid_loss_chunked(img, txt, scale, bias, block: int | None = None, groups: torch.Tensor | None = None,
                         duplicates: str = "negative") -> torch.Tensor:
    block = block or default_block(img.shape[0], txt.shape[0], img.device)
    return ChunkedSigmoidLoss.apply(img, txt, scale, bias, int(block), same_group(groups, duplicates))


# ----------------------------------------------------------------------------- softmax


def _softmax_strip_lse(a_s: torch.Tensor, b: torch.Tensor, diag_offset: int | None, pairs: SameGroup | None = None):
    """(row LSE of the strip [rows], column LSE of the strip [N_b], the positives' logits) in the acc
    dtype. Positives: (k, diag_offset + k) or None; with pairs in "positive" mode the per-row sum of
    same-group logits (the caller weights it by 1/group size). "ignore" pairs are −inf in both LSEs.
    Taking the positives from the same GEMM output keeps LSE − positive exact (0 at N=1) even for
    bf16 inputs."""
    logits = _strip_logits(a_s, b, None, _acc_dtype(a_s.dtype))
    ignored = None
    if pairs is not None and pairs.mode == "positive":
        positive = torch.where(pairs.mask(), logits, 0.0).sum(1)
    else:
        positive = logits.diagonal(diag_offset).clone() if diag_offset is not None else None
        if pairs is not None:
            ignored = pairs.ignored(diag_offset)
            logits.masked_fill_(ignored, float("-inf"))
    row, col = _row_col_lse(logits, a_s, b, ignored)
    return row, col, positive


def _row_col_lse(logits: torch.Tensor, a_s: torch.Tensor, b: torch.Tensor, ignored: torch.Tensor | None):
    """Row and column LSE of a strip's logits (consumed), −inf entries where `ignored`.

    One exp pass serves both directions: E = exp(l − m_i) with m_i the row max gives the row
    sums, and the column sums are wᵀE with w_i = exp(m_i − M), M = max_i m_i (a GEMV). That is
    exact unless a column's terms all underflow relative to M (|logit| spreads > ~40 nats);
    such columns are recomputed with a direct logsumexp. A row or column with every pair
    ignored in this strip (possible in the ring, or for columns outside the strip) gets −inf."""
    m = logits.amax(1)
    if ignored is not None:  # keep fully ignored rows out of exp(−inf − (−inf))
        top = m.max()
        m = torch.where(m == float("-inf"), torch.where(torch.isfinite(top), top, torch.zeros_like(top)), m)
    big_m = m.max()
    w = torch.exp(m - big_m)
    e = logits.sub_(m[:, None]).exp_()  # logits are consumed from here on
    row = m + torch.log(e.sum(1))
    colsum = w @ e
    col = big_m + torch.log(colsum)
    bad = colsum < 1e-20
    if ignored is not None:
        bad &= ~ignored.all(0)  # all ignored: −inf is the right answer
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        redo = _strip_logits(a_s, b[idx], None, logits.dtype)
        if ignored is not None:
            redo.masked_fill_(ignored[:, idx], float("-inf"))
        col[idx] = torch.logsumexp(redo, 0)
    return row, col


def _softmax_strip_bwd(a: torch.Tensor, a_s: torch.Tensor, b: torch.Tensor, row_lse: torch.Tensor, col_lse: torch.Tensor,
                       diag_offset: int | None, db_acc: torch.Tensor | None, pairs: SameGroup | None = None) -> torch.Tensor:
    """P = exp(l − row_lse) + exp(l − col_lse) − 2·[diag]  (= 2N·∂loss/∂logits on the strip); with
    "positive" pairs the target term is 2·same/|group(i)|, with "ignore" pairs P is 0 on them.
    Returns P@b (rows×D, acc dtype); adds Pᵀ@a into db_acc if given."""
    acc = _acc_dtype(a_s.dtype)
    logits = _strip_logits(a_s, b, None, acc)
    if pairs is not None and pairs.mode == "ignore":
        logits.masked_fill_(pairs.ignored(diag_offset), float("-inf"))
    p = torch.sub(logits, row_lse[:, None]).exp_()
    logits.sub_(col_lse[None, :]).exp_()
    p.add_(logits)
    del logits
    if pairs is not None and pairs.mode == "positive":
        p.sub_(pairs.mask().to(p.dtype).mul_(2 * pairs.row_weights[:, None]))
    elif diag_offset is not None:
        p.diagonal(diag_offset).sub_(2.0)
    pm = p if p.dtype == b.dtype else p.to(b.dtype)
    ga = (pm @ b).to(acc)
    if db_acc is not None:
        db_acc.addmm_(pm.t(), a) if db_acc.dtype == a.dtype else db_acc.add_((pm.t() @ a).to(acc))
    return ga


class ChunkedSoftmaxLoss(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, block, pairs):
        n = img.shape[0]
        scale0 = scale.reshape(())
        acc = _acc_dtype(img.dtype)
        img_s = img * scale0.to(img.dtype)
        row_lse = torch.empty(n, dtype=acc, device=img.device)
        col_lse = torch.full((n,), float("-inf"), dtype=acc, device=img.device)
        diag = torch.empty(n, dtype=acc, device=img.device)  # the positives' (weighted) logits
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            strip_pairs = None if pairs is None else pairs.strip(i0, i1)
            row_lse[i0:i1], c, diag[i0:i1] = _softmax_strip_lse(img_s[i0:i1], txt, i0, strip_pairs)
            torch.logaddexp(col_lse, c, out=col_lse)
        if pairs is not None and pairs.row_weights is not None:
            diag *= pairs.row_weights
        loss = 0.5 * ((row_lse - diag).sum() + (col_lse - diag).sum()) / n
        ctx.save_for_backward(img, txt, scale, row_lse, col_lse)
        ctx.block, ctx.pairs = block, pairs
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
            pairs = None if ctx.pairs is None else ctx.pairs.strip(i0, i1)
            gi[i0:i1] = _softmax_strip_bwd(img[i0:i1], img_s[i0:i1], txt, row_lse[i0:i1], col_lse, i0, gt, pairs)
        g = grad_out.to(acc) / (2 * n)
        sc = scale0.to(acc)
        d_img = (gi * (g * sc)).to(img.dtype) if need_img else None
        d_txt = (gt * (g * sc)).to(txt.dtype) if need_txt else None
        d_scale = ((img.to(acc) * gi).sum() * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
        return d_img, d_txt, d_scale, None, None


def softmax_loss_chunked(img, txt, scale, block: int | None = None, groups: torch.Tensor | None = None,
                         duplicates: str = "negative") -> torch.Tensor:
    block = block or default_block(img.shape[0], txt.shape[0], img.device)
    pairs = same_group(groups, duplicates, _acc_dtype(img.dtype))
    return ChunkedSoftmaxLoss.apply(img, txt, scale, int(block), pairs)
