"""Shared Triton pieces for the fused losses: the logits tile, the duplicate-group masks of a
tile and launch configuration.

Duplicate groups (semantics in reference.py): kernels take GROUP_MODE as a constexpr, so the
kernels without groups (GROUP_NONE) compile exactly as before; with groups a tile loads its
rows' and columns' int64 ids and compares them in registers.

Imported only when impl="triton" is used (triton is optional for the package).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from litops.core.losses._checks import interpret_mode


@triton.jit
def mm(a, b, acc, PRECISION: tl.constexpr, MODE: tl.constexpr):
    """acc + a @ b with an fp32 accumulator. MODE 0: native tl.dot (GPU). MODE ≥ 1 (interpreter):
    operands upcast to fp32 first, because the Triton 3.8 interpreter's bf16 tl.dot returns garbage;
    bf16·bf16 products are exact in fp32, as on tensor cores."""
    if MODE == 0:
        return tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")


@triton.jit
def logits_tile(a_ptr, b_ptr, rows, cols, n_rows, n_cols, D, stride_am, stride_ak, stride_bn, stride_bk,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                MODE: tl.constexpr):
    """S[rows, cols] = A[rows, :] @ B[cols, :]ᵀ with an fp32 accumulator (K loop over D).

    Every kernel obtains logit (i, j) from this function, either as A=img, B=txt or transposed
    (A=txt, B=img). The softmax gradient exp(l − lse) is only exact when l and its lse see the
    same rounding, so both orientations must give the same bits. On the GPU the fp32 "ieee" dot
    is an in-order FMA chain over k (symmetric), and bf16 products are exact. The interpreter's
    numpy matmul is not symmetric, so MODE 1 uses a broadcast-multiply-sum there (symmetric);
    MODE 2 uses tl.dot under the interpreter (checked on non-extreme inputs)."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < D
        a = tl.load(a_ptr + rows[:, None] * stride_am + ks[None, :] * stride_ak, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + cols[:, None] * stride_bn + ks[None, :] * stride_bk, mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if MODE == 1:
            acc += tl.sum(a.to(tl.float32)[:, None, :] * b.to(tl.float32)[None, :, :], axis=2)
        else:
            acc = mm(a, tl.trans(b), acc, PRECISION, MODE)
    return acc


GROUP_NONE, GROUP_POSITIVE, GROUP_IGNORE = 0, 1, 2


def group_mode(groups: torch.Tensor | None, duplicates: str) -> int:
    if groups is None or duplicates == "negative":
        return GROUP_NONE
    return GROUP_POSITIVE if duplicates == "positive" else GROUP_IGNORE


def groups_arg(groups: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The ids for the kernels' groups pointer, or `like` as a placeholder never read (GROUP_NONE)."""
    return like if groups is None else groups.contiguous()


@triton.jit
def same_group(rows, cols, groups_ptr, n_rows, n_cols):
    """groups[rows] == groups[cols] for a tile, False outside the (n_rows × n_cols) range."""
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    gr = tl.load(groups_ptr + rows, mask=row_ok, other=0)
    gc = tl.load(groups_ptr + cols, mask=col_ok, other=0)
    return (gr[:, None] == gc[None, :]) & row_ok[:, None] & col_ok[None, :]


@triton.jit
def positive_pairs(rows, cols, groups_ptr, n_rows, n_cols, GROUP_MODE: tl.constexpr):
    """The tile's positives: the diagonal, or every same-group pair (GROUP_POSITIVE)."""
    positive = rows[:, None] == cols[None, :]
    if GROUP_MODE == 1:
        positive = same_group(rows, cols, groups_ptr, n_rows, n_cols)
    return positive


@triton.jit
def ignored_pairs(rows, cols, groups_ptr, n_rows, n_cols):
    """Same-group pairs off the diagonal (left out under GROUP_IGNORE)."""
    return same_group(rows, cols, groups_ptr, n_rows, n_cols) & (rows[:, None] != cols[None, :])


def precision_for(dtype: torch.dtype) -> str:
    """fp32 inputs use IEEE fp32 products (the 1e-5 contract); fp16/bf16 use tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


def check_triton_inputs(img: torch.Tensor) -> None:
    if img.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"impl='triton' supports fp16/bf16/fp32 inputs, got dtype {img.dtype}")
    if img.device.type != "cuda" and not interpret_mode():
        raise ValueError(f"impl='triton' needs CUDA tensors (got {img.device}); set TRITON_INTERPRET=1 for CPU tensors")


def config(n: int, d: int, device: torch.device) -> dict:
    """Tile sizes. Under the interpreter (CPU tensors) small tiles keep CI fast; on a GPU these are
    starting points (not autotuned yet: no GPU was available when this was written).
    BLOCK_D is the width of the gradient accumulator; the backward grid is split over
    cdiv(D, BLOCK_D) so the logits tile is recomputed once per D split."""
    if device.type != "cuda":
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, BLOCK_D=32, num_warps=1, num_stages=1)
    block_d = min(256, max(16, triton.next_power_of_2(d)))
    return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, BLOCK_D=block_d, num_warps=8 if block_d >= 128 else 4, num_stages=2)


def backward_mode(d: int, device: torch.device) -> str:
    """"fused": one kernel keeps a (BLOCK_M × BLOCK_D) gradient accumulator in registers and
    recomputes the logits tile once per D split (best for D ≤ 256). "strip": a kernel writes
    G for a strip of rows (GEMM + fused epilogue, input dtype) and cuBLAS does G@txt and Gᵀ@img,
    so the logits are recomputed once whatever D is (wide embeddings, e.g. D=768).
    LITOPS_TRITON_BWD=fused|strip overrides (the tests run both under the interpreter)."""
    forced = os.environ.get("LITOPS_TRITON_BWD", "")
    if forced in ("fused", "strip"):
        return forced
    return "strip" if device.type == "cuda" and d > 256 else "fused"


def strip_rows(n: int, device: torch.device) -> int:
    """Rows per G strip: ≤ 2^25 elements (64 MiB in bf16) on CUDA, at least 128 rows so the cuBLAS
    GEMMs stay efficient (so 256 MiB at N = 2^20); tiny under the interpreter."""
    if device.type != "cuda":
        return 16
    return max(128, min(triton.cdiv(n, 128) * 128, ((1 << 25) // max(n, 1)) // 128 * 128))


def strip_matmuls(g: torch.Tensor, b: torch.Tensor, a_strip: torch.Tensor, gb_out: torch.Tensor, gta_acc: torch.Tensor) -> None:
    """gb_out = g @ b and gta_acc += gᵀ @ a_strip (fp32 outputs; cuBLAS on CUDA)."""
    if g.dtype == torch.float32:
        torch.mm(g, b, out=gb_out)
        gta_acc.addmm_(g.t(), a_strip)
    else:
        gb_out.copy_(g @ b)
        gta_acc.add_(g.t() @ a_strip)


def kernel_mode(device: torch.device) -> int:
    """0 on CUDA; 1 under the interpreter (2 if LITOPS_TRITON_INTERPRET_DOT=1, see logits_tile)."""
    if device.type == "cuda":
        return 0
    return 2 if os.environ.get("LITOPS_TRITON_INTERPRET_DOT") == "1" else 1


def scalar_f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(1).to(torch.float32).contiguous()
