"""The global sample sequence: a pure function of (seed, epoch, the ordered shard list).

Epoch e visits the shards in a seeded permutation; the concatenated samples are cut into
windows of `window` samples (the bounded shuffle buffer), and each window is permuted with its
own seeded generator. Position p of the endless sequence (epoch = p // total) therefore maps
to (shard, sample) by arithmetic alone: any rank or worker finds the sample at any position
without reading the others, which is what makes the order elastic and a resume exact.

`window >= total` shuffles whole epochs; `shuffle=False` keeps the shards' own order (eval).
Memory: one window's permutation (`window` integers) per cached window.
"""

from __future__ import annotations

import bisect
from functools import lru_cache

import numpy as np


class SampleOrder:
    def __init__(self, counts: list[int], seed: int = 0, window: int = 10_000, shuffle: bool = True):
        if not counts or sum(counts) == 0:
            raise ValueError("no samples: every shard is empty")
        if window < 1:
            raise ValueError(f"shuffle window must be >= 1 sample, got {window}")
        self.counts = list(counts)
        self.total = sum(self.counts)
        self.seed, self.window, self.shuffle = seed, window, shuffle
        self._caches()

    def _caches(self) -> None:
        self._layout = lru_cache(maxsize=2)(self._epoch_layout)
        self._perm = lru_cache(maxsize=4)(self._window_perm)

    def __getstate__(self) -> dict:  # DataLoader workers get a copy without the caches
        return {k: v for k, v in self.__dict__.items() if k not in ("_layout", "_perm")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._caches()

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, *stream])))

    def _epoch_layout(self, epoch: int) -> tuple[list[int], list[int]]:
        """(shard visit order, start position of each visited shard within the epoch)."""
        n = len(self.counts)
        order = self._rng(epoch, 0).permutation(n).tolist() if self.shuffle else list(range(n))
        starts, at = [], 0
        for j in order:
            starts.append(at)
            at += self.counts[j]
        return order, starts

    def _window_perm(self, epoch: int, w: int) -> np.ndarray:
        size = min(self.window, self.total - w * self.window)
        return self._rng(epoch, 1, w).permutation(size)

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index in the ordered list, sample index within the shard) at a global position."""
        epoch, p = divmod(position, self.total)
        order, starts = self._layout(epoch)
        if self.shuffle:
            w, offset = divmod(p, self.window)
            p = w * self.window + int(self._perm(epoch, w)[offset])
        j = bisect.bisect_right(starts, p) - 1
        return order[j], p - starts[j]

    def cursor(self, position: int) -> dict[str, int]:
        """The data cursor stored in a checkpoint: the next sample to read."""
        epoch, p = divmod(position, self.total)
        return {"epoch": epoch, "position": p, "samples_per_epoch": self.total}


def batch_positions(step: int, global_batch: int, rank: int = 0, world: int = 1, offset: int = 0) -> range:
    """Global positions of one rank's contiguous slice of the global batch at `step` (rank 0 first)."""
    local = global_batch // world
    start = offset + step * global_batch + rank * local
    return range(start, start + local)
