"""Exact sigmoid / softmax contrastive losses over torch.distributed ranks, by a ring.

Every rank holds a local (n × D) image block and text block; all ranks must hold the same
n and D. The global batch is the concatenation in rank order (rank 0's rows first), so
the positives are img_local[k] ↔ txt_local[k] on every rank, exactly as the single-process
reference on `torch.cat(all img blocks)`, `torch.cat(all txt blocks)`.

Ring: each rank keeps its image block and the text blocks travel (send to rank+1, receive
from rank−1) with batched isend/irecv, started before the compute on the current block so
communication overlaps compute. Per-block accumulators that belong to the text block's
owner (the softmax column log-sum-exp in forward, the text gradient Gᵀ@img in backward)
travel one step behind their text block and arrive back at the owner after W hops. No
rank ever holds more than two text blocks plus one (block × n) strip of logits: memory is
O(n·D + block·n) per rank.

Duplicate captions (groups, duplicates; semantics in reference.py): each rank passes the group
ids of its own rows. They are all-gathered once (O(N) int64), so a strip compares its rows' ids
with the ids of whichever text block it holds, and the softmax "positive" group sizes are
counted over the global batch. Same-group pairs on different ranks count like any other.

Normalisation (precise):
  * The returned value is the GLOBAL loss L on the concatenated batch (N = W·n rows),
    identical on every rank: sigmoid L = Σ_{all i,j} softplus(−z_ij·l_ij) / N,
    softmax L = ½ (CE_rows + CE_cols), each CE averaged over N.
  * Backward (every rank must call it, since it communicates) gives on rank r:
      d img_local = ∂L/∂img[r·n:(r+1)·n]  and  d txt_local = ∂L/∂txt[r·n:(r+1)·n]
      (slices of the reference gradient), and the FULL ∂L/∂scale, ∂L/∂bias (same on all ranks).
  * With DistributedDataParallel, which AVERAGES parameter gradients over W ranks, the
    encoder gradients would come out as ∇L / W while scale/bias stay exact. Pass
    `ddp=True` to multiply the local embedding gradients by W: then DDP's average is
    exactly ∇L for every parameter (encoders and scale/bias alike).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from litops.core.losses._checks import check_groups, check_inputs, no_autocast
from litops.core.losses.chunked import (
    SameGroup,
    _acc_dtype,
    _sigmoid_strip_bwd,
    _sigmoid_strip_fwd,
    _softmax_strip_bwd,
    _softmax_strip_lse,
    default_block,
    same_group,
)
from litops.core.losses.groups import DUPLICATES, uses_groups


class _Ring:
    def __init__(self, group):
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        nxt, prv = (self.rank + 1) % self.world, (self.rank - 1) % self.world
        if group is None:
            self.next, self.prev = nxt, prv
        else:
            self.next, self.prev = dist.get_global_rank(group, nxt), dist.get_global_rank(group, prv)

    def start(self, tensors):
        """Send `tensors` to the next rank and receive same-shaped ones from the previous rank."""
        if self.world == 1:
            return tensors, []
        send = [t.contiguous() for t in tensors]
        recv = [torch.empty_like(t) for t in send]
        ops = [dist.P2POp(dist.isend, t, self.next, self.group) for t in send]
        ops += [dist.P2POp(dist.irecv, t, self.prev, self.group) for t in recv]
        return recv, (dist.batch_isend_irecv(ops), send)

    @staticmethod
    def finish(handle):
        recv, pending = handle
        if pending:
            reqs, _send = pending
            for r in reqs:
                r.wait()
        return recv

    def loop(self, payload, compute, merge):
        """Visit every rank's `payload` (a list of tensors, starting with ours). compute(payload, step)
        returns this rank's partial accumulator for the block it holds (or None); partials are merged
        along the ring and the complete accumulator for OUR block is returned (or None)."""
        cur, pending_acc = payload, None
        for step in range(self.world):
            nxt = self.start(cur) if step < self.world - 1 else None
            part = compute(cur, step)
            if part is not None:
                if pending_acc is not None:
                    part = merge(part, self.finish(pending_acc)[0])
                pending_acc = self.start([part])
            if nxt is not None:
                cur = self.finish(nxt)
        return self.finish(pending_acc)[0] if pending_acc is not None else None

    def all_reduce(self, t):
        if self.world > 1:
            dist.all_reduce(t, group=self.group)
        return t


def _strips(n, block):
    for i0 in range(0, n, block):
        yield i0, min(n, i0 + block)


def _step_pairs(pairs: SameGroup | None, ring: _Ring, n: int, step: int) -> SameGroup | None:
    """Our rows against the text block held at ring step `step` (it left rank − step); pairs.cols
    holds the whole batch's ids."""
    if pairs is None:
        return None
    owner = (ring.rank - step) % ring.world
    return pairs.against(pairs.cols[owner * n:(owner + 1) * n])


def _strip_pairs(pairs: SameGroup | None, i0: int, i1: int) -> SameGroup | None:
    return None if pairs is None else pairs.strip(i0, i1)


class _RingSigmoid(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, bias, ring, block, ddp, pairs):
        n = img.shape[0]
        big_n = n * ring.world
        bias0 = bias.reshape(())
        img_s = img * scale.reshape(()).to(img.dtype)
        total = torch.zeros((), dtype=torch.float64, device=img.device)

        def compute(cur, step):
            nonlocal total
            step_pairs = _step_pairs(pairs, ring, n, step)
            for i0, i1 in _strips(n, block):
                total += _sigmoid_strip_fwd(img_s[i0:i1], cur[0], bias0, i0 if step == 0 else None,
                                            _strip_pairs(step_pairs, i0, i1))
            return None

        ring.loop([txt], compute, None)
        ring.all_reduce(total)
        ctx.save_for_backward(img, txt, scale, bias)
        ctx.ring, ctx.block, ctx.ddp, ctx.pairs = ring, block, ddp, pairs
        return (total / big_n).to(img.dtype)

    @staticmethod
    @no_autocast
    def backward(ctx, grad_out):
        img, txt, scale, bias = ctx.saved_tensors
        ring, block = ctx.ring, ctx.block
        n = img.shape[0]
        acc = _acc_dtype(img.dtype)
        need_img, need_txt, need_scale, need_bias = ctx.needs_input_grad[:4]
        scale0, bias0 = scale.reshape(()), bias.reshape(())
        img_s = img * scale0.to(img.dtype)
        gi = torch.zeros(img.shape, dtype=acc, device=img.device)
        gsum = torch.zeros((), dtype=acc, device=img.device)

        def compute(cur, step):
            nonlocal gsum
            part = torch.zeros(cur[0].shape, dtype=acc, device=img.device) if need_txt else None
            step_pairs = _step_pairs(ctx.pairs, ring, n, step)
            for i0, i1 in _strips(n, block):
                ga, s = _sigmoid_strip_bwd(img[i0:i1], img_s[i0:i1], cur[0], bias0, i0 if step == 0 else None, part,
                                           _strip_pairs(step_pairs, i0, i1))
                gi[i0:i1] += ga
                gsum = gsum + s
            return part

        gt = ring.loop([txt], compute, torch.add)
        stats = ring.all_reduce(torch.stack([(img.to(acc) * gi).sum(), gsum]))
        g = grad_out.to(acc) / (n * ring.world)
        emb = g * scale0.to(acc) * (ring.world if ctx.ddp else 1)
        d_img = (gi * emb).to(img.dtype) if need_img else None
        d_txt = (gt * emb).to(txt.dtype) if need_txt else None
        d_scale = (stats[0] * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
        d_bias = (stats[1] * g).to(bias.dtype).reshape(bias.shape) if need_bias else None
        return d_img, d_txt, d_scale, d_bias, None, None, None, None


class _RingSoftmax(torch.autograd.Function):
    @staticmethod
    @no_autocast
    def forward(ctx, img, txt, scale, ring, block, ddp, pairs):
        n = img.shape[0]
        big_n = n * ring.world
        acc = _acc_dtype(img.dtype)
        img_s = img * scale.reshape(()).to(img.dtype)
        row_lse = torch.full((n,), float("-inf"), dtype=acc, device=img.device)
        summed = pairs is not None and pairs.mode == "positive"  # same-group logits found at every step
        diag = torch.zeros(n, dtype=acc, device=img.device) if summed else torch.empty(n, dtype=acc, device=img.device)

        def compute(cur, step):
            col = torch.full((cur[0].shape[0],), float("-inf"), dtype=acc, device=img.device)
            step_pairs = _step_pairs(pairs, ring, n, step)
            for i0, i1 in _strips(n, block):
                r, c, d = _softmax_strip_lse(img_s[i0:i1], cur[0], i0 if step == 0 else None, _strip_pairs(step_pairs, i0, i1))
                if summed:
                    diag[i0:i1] += d
                elif d is not None:
                    diag[i0:i1] = d
                torch.logaddexp(row_lse[i0:i1], r, out=row_lse[i0:i1])
                torch.logaddexp(col, c, out=col)
            return col

        col_lse = ring.loop([txt], compute, torch.logaddexp)
        if summed:
            diag *= pairs.row_weights
        total = ring.all_reduce(((row_lse - diag).sum() + (col_lse - diag).sum()).reshape(1))
        ctx.save_for_backward(img, txt, scale, row_lse, col_lse)
        ctx.ring, ctx.block, ctx.ddp, ctx.pairs = ring, block, ddp, pairs
        return (0.5 * total[0] / big_n).to(img.dtype)

    @staticmethod
    @no_autocast
    def backward(ctx, grad_out):
        img, txt, scale, row_lse, col_lse = ctx.saved_tensors
        ring, block = ctx.ring, ctx.block
        n = img.shape[0]
        acc = _acc_dtype(img.dtype)
        need_img, need_txt, need_scale = ctx.needs_input_grad[:3]
        scale0 = scale.reshape(())
        img_s = img * scale0.to(img.dtype)
        gi = torch.zeros(img.shape, dtype=acc, device=img.device)

        def compute(cur, step):
            part = torch.zeros(cur[0].shape, dtype=acc, device=img.device) if need_txt else None
            step_pairs = _step_pairs(ctx.pairs, ring, n, step)
            for i0, i1 in _strips(n, block):
                gi[i0:i1] += _softmax_strip_bwd(img[i0:i1], img_s[i0:i1], cur[0], row_lse[i0:i1], cur[1],
                                                i0 if step == 0 else None, part, _strip_pairs(step_pairs, i0, i1))
            return part

        gt = ring.loop([txt, col_lse], compute, torch.add)
        dscale = ring.all_reduce((img.to(acc) * gi).sum().reshape(1))
        g = grad_out.to(acc) / (2 * n * ring.world)
        emb = g * scale0.to(acc) * (ring.world if ctx.ddp else 1)
        d_img = (gi * emb).to(img.dtype) if need_img else None
        d_txt = (gt * emb).to(txt.dtype) if need_txt else None
        d_scale = (dscale[0] * g).to(scale.dtype).reshape(scale.shape) if need_scale else None
        return d_img, d_txt, d_scale, None, None, None, None


def _setup(img, txt, group, block, groups=None, duplicates="negative"):
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("the distributed losses need an initialised torch.distributed process group")
    ring = _Ring(group)
    grouped = uses_groups(groups, duplicates)
    if ring.world > 1:  # every rank must hold the same (n, D): the ring's receive buffers assume it
        mode = DUPLICATES.index(duplicates) if grouped else -1
        shape = torch.tensor([img.shape[0], img.shape[1], mode], dtype=torch.int64, device=img.device)
        lo, hi = shape.clone(), shape.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
        if not torch.equal(lo[:2], hi[:2]):
            raise ValueError(f"every rank must hold the same (n, D) block; rank {ring.rank} has {tuple(img.shape)}, "
                             f"ranks range from {tuple(lo[:2].tolist())} to {tuple(hi[:2].tolist())}")
        if lo[2] != hi[2]:
            raise ValueError(f"every rank must pass groups (or none) with the same duplicates mode; rank {ring.rank} "
                             f"has groups={'given' if groups is not None else None}, duplicates={duplicates!r}")
    return ring, int(block or default_block(img.shape[0], txt.shape[0], img.device))


def _ring_pairs(groups, duplicates, ring: _Ring, weight_dtype) -> SameGroup | None:
    """The duplicate rule for our rows against the all-gathered group ids (None: diagonal only)."""
    if not uses_groups(groups, duplicates):
        return None
    all_groups = groups.contiguous()
    if ring.world > 1:
        parts = [torch.empty_like(all_groups) for _ in range(ring.world)]
        dist.all_gather(parts, all_groups, group=ring.group)
        all_groups = torch.cat(parts)
    n = groups.shape[0]
    return same_group(all_groups, duplicates, weight_dtype, slice(ring.rank * n, (ring.rank + 1) * n))


def sigmoid_loss_distributed(img_local: torch.Tensor, txt_local: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                             group=None, *, block: int | None = None, ddp: bool = False,
                             groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """Global SigLIP loss over all ranks of `group` (see the module docstring for the exact
    normalisation and the `ddp` flag). `groups`: this rank's rows' group ids. Collective: every
    rank must call it, and backward."""
    check_inputs(img_local, txt_local, scale, bias)
    check_groups(groups, duplicates, img_local)
    ring, block = _setup(img_local, txt_local, group, block, groups, duplicates)
    pairs = _ring_pairs(groups, duplicates, ring, None)
    return _RingSigmoid.apply(img_local, txt_local, scale, bias, ring, block, ddp, pairs)


def softmax_loss_distributed(img_local: torch.Tensor, txt_local: torch.Tensor, scale: torch.Tensor,
                             group=None, *, block: int | None = None, ddp: bool = False,
                             groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
    """Global CLIP loss over all ranks of `group`, with log-sum-exp merged online along the ring
    (see the module docstring). `groups`: this rank's rows' group ids. Collective: every rank
    must call it, and backward."""
    check_inputs(img_local, txt_local, scale)
    check_groups(groups, duplicates, img_local)
    ring, block = _setup(img_local, txt_local, group, block, groups, duplicates)
    pairs = _ring_pairs(groups, duplicates, ring, _acc_dtype(img_local.dtype))
    return _RingSoftmax.apply(img_local, txt_local, scale, ring, block, ddp, pairs)
