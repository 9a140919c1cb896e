"""Input validation and implementation selection shared by every loss implementation."""

from __future__ import annotations

import contextlib
import functools
import os

import torch

IMPLS = ("auto", "reference", "chunked", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_inputs(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Raise ValueError naming the shapes/dtypes when the inputs cannot form an N×N contrastive loss."""
    for name, t in (("img", img), ("txt", txt)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name} must be a floating tensor (fp16/bf16/fp32/fp64), got dtype {t.dtype}")
    if img.shape != txt.shape:
        raise ValueError(f"img and txt must have the same (N, D) shape, got img {tuple(img.shape)} and txt {tuple(txt.shape)}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"img/txt must be non-empty, got shape {tuple(img.shape)}")
    if img.dtype != txt.dtype:
        raise ValueError(f"img and txt must share a dtype, got img {img.dtype} and txt {txt.dtype}")
    if img.device != txt.device:
        raise ValueError(f"img and txt must be on the same device, got {img.device} and {txt.device}")
    for name, t in (("scale", scale), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a 0-d tensor, got {type(t).__name__}")
        if t.numel() != 1 or t.dim() > 1:
            raise ValueError(f"{name} must be a scalar (0-d or 1-element) tensor, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {t.dtype}")


def check_groups(groups: torch.Tensor | None, duplicates: str, img: torch.Tensor) -> None:
    """Raise ValueError for an unknown `duplicates` mode, or group ids that are not an int64 [N]
    tensor on img's device."""
    from litops.core.losses.groups import DUPLICATES

    if duplicates not in DUPLICATES:
        raise ValueError(f"unknown duplicates mode {duplicates!r}; expected one of {DUPLICATES}")
    if groups is None:
        return
    if not isinstance(groups, torch.Tensor):
        raise ValueError(f"groups must be a torch.Tensor of int64 group ids, got {type(groups).__name__}")
    if groups.dim() != 1 or groups.shape[0] != img.shape[0]:
        raise ValueError(f"groups must have shape ({img.shape[0]},) (one id per row), got shape {tuple(groups.shape)}")
    if groups.dtype != torch.int64:
        raise ValueError(f"groups must have dtype torch.int64, got dtype {groups.dtype}")
    if groups.device != img.device:
        raise ValueError(f"groups must be on the embeddings' device {img.device}, got device {groups.device}")


def interpret_mode() -> bool:
    """True when Triton kernels run on CPU tensors through the interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """Map `auto` to a concrete implementation (triton on CUDA for fp16/bf16/fp32, chunked
    elsewhere); validate explicit ones."""
    if impl not in IMPLS:
        raise ValueError(f"unknown loss impl {impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        use_triton = device.type == "cuda" and dtype != torch.float64 and triton_available()
        return "triton" if use_triton else "chunked"
    if impl == "triton":
        if not triton_available():
            raise ValueError("impl='triton' needs the `triton` package, which is not importable here")
        if device.type != "cuda" and not interpret_mode():
            raise ValueError(f"impl='triton' needs CUDA tensors (got device {device}); set TRITON_INTERPRET=1 to run it on CPU tensors")
    return impl


_TRITON_OK: bool | None = None


def triton_available() -> bool:
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _TRITON_OK = True
        except Exception:  # pragma: no cover - depends on the install
            _TRITON_OK = False
    return _TRITON_OK


def as_scalar(t: torch.Tensor) -> torch.Tensor:
    """View a 1-element tensor as 0-d."""
    return t.reshape(())


def no_autocast(fn):
    """Run an autograd.Function's forward/backward with autocast off on the tensors' device, so
    the fp32 accumulation contract holds inside torch.autocast regions (the inputs keep their dtype)."""

    @functools.wraps(fn)
    def wrapper(ctx, *args):
        dev = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        ctx_mgr = torch.autocast(device_type=dev, enabled=False) if dev in ("cuda", "cpu") else contextlib.nullcontext()
        with ctx_mgr:
            return fn(ctx, *args)

    return wrapper


def device_guard(t: torch.Tensor):
    """Make t's CUDA device current (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
