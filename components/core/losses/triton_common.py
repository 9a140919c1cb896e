"""Shared Triton pieces for the fused losses: the logits tile and launch configuration.

Imported only when impl="triton" is used (triton is optional for the package).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from litops.core.losses._checks import interpret_mode


@triton.jit
def logits_tile(a_ptr, b_ptr, rows, cols, n_rows, n_cols, D, stride_am, stride_ak, stride_bn, stride_bk,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """S[rows, cols] = A[rows, :] @ B[cols, :]ᵀ with an fp32 accumulator (K loop over D)."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < D
        a = tl.load(a_ptr + rows[:, None] * stride_am + ks[None, :] * stride_ak, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + cols[:, None] * stride_bn + ks[None, :] * stride_bk, mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
    return acc


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


def scalar_f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(1).to(torch.float32).contiguous()
