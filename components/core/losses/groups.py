"""Group ids for duplicate-aware targets, and the O(N) per-row statistics built from them.

A group id marks rows whose captions are the same text: rows i and j are "same group" when
groups[i] == groups[j] (the diagonal always is). `caption_groups` hashes the caption itself,
so the ids agree across processes without any communication (64-bit blake2b: a collision
between two different captions is astronomically unlikely, and would only merge two groups).
"""

from __future__ import annotations

import hashlib

import torch

DUPLICATES = ("negative", "positive", "ignore")


def caption_groups(captions: list[str]) -> torch.Tensor:
    """int64 [len(captions)]: the first 8 bytes of blake2b(UTF-8 caption) as a signed integer,
    equal for equal text in every process."""
    ids = [int.from_bytes(hashlib.blake2b(c.encode("utf-8"), digest_size=8).digest(), "little", signed=True) for c in captions]
    return torch.tensor(ids, dtype=torch.int64)


def uses_groups(groups: torch.Tensor | None, duplicates: str) -> bool:
    """False when the loss is today's diagonal-only one (no groups, or duplicates="negative")."""
    return groups is not None and duplicates != "negative"


def inverse_group_sizes(groups: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1 / |{j : groups[j] == groups[i]}| for every row i, in O(N log N) without an N×N tensor
    (the uniform target weight of the "positive" softmax)."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return counts.to(dtype).reciprocal()[inverse]
