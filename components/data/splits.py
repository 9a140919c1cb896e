"""Which split an ingested key lands in: its hash decides; small sets still get a val split."""

from __future__ import annotations

import hashlib
import math

# Small user sets still get a val split: at least this many samples (or val_fraction, if less).
MIN_VAL_SAMPLES = 50


def val_quota(n_good: int, val_fraction: float) -> int:
    """The fewest samples of one ingest routed to val: min(MIN_VAL_SAMPLES, val_fraction of
    the good samples, rounded up), at least 1, leaving at least 1 for train when there are 2+."""
    want = max(1, min(MIN_VAL_SAMPLES, math.ceil(val_fraction * n_good)))
    return min(want, n_good - 1) if n_good >= 2 else n_good


def assign_splits(keys: list[str], val_fraction: float) -> dict[str, str]:
    """key -> split. The key's hash decides; when too few land in val, the train keys whose
    hash lies nearest the val threshold move there, so the choice is still per key and stable."""
    split = {k: route_split(k, val_fraction) for k in keys}
    missing = val_quota(len(keys), val_fraction) - sum(v == "val" for v in split.values())
    if missing > 0:
        for k in sorted((k for k in keys if split[k] == "train"), key=key_hash)[:missing]:
            split[k] = "val"
    return split


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def route_split(key: str, val_fraction: float) -> str:
    return "val" if key_hash(key) / 2**64 < val_fraction else "train"


# --------------------------------------------------------------------------- ingest
