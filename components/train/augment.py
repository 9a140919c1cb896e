"""Training-time image augmentation (an augmented run cannot use the feature cache: litops.train.feature_cache)."""

from __future__ import annotations

import torch


def augment(images: torch.Tensor, kind: str, step: int, seed: int, pad: int = 4) -> torch.Tensor:
    """`crop`: each image shifted by up to `pad` pixels (reflect padding, random crop); seeded by step."""
    if kind == "none":
        return images
    if kind != "crop":
        raise ValueError(f"unknown train.augment {kind!r}")
    g = torch.Generator().manual_seed(seed * 7_919 + step)
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect").to(images.dtype)
    dx, dy = torch.randint(0, 2 * pad + 1, (n,), generator=g), torch.randint(0, 2 * pad + 1, (n,), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
