"""The global sample sequence: a pure function of (seed, epoch, the ordered shard list, partitions).

Epoch e lays the shards out in a seeded permutation and cuts the concatenated samples into
`parts` partitions, contiguous spans of `part_len` samples each (the last sample of a span is
dropped when the split does not divide evenly; a different one each epoch). Every global batch
takes `per_part = global_batch / parts` consecutive samples from each partition, partition 0
first, so slot j of the batch at step s is sample `s * per_part + j % per_part` of partition
`j // per_part`. Inside a partition, samples are shuffled in windows of `window` (the bounded
shuffle buffer), each window with its own seeded permutation.

Why this shape:
- Locality. Rank r of R owns the contiguous partitions [r*parts/R, (r+1)*parts/R): it reads its
  own span of the epoch's shards, so a shard is read by one rank per epoch, except the R-1
  shards cut at a rank boundary. Inside a rank, each (partition, epoch, window) belongs to one
  reader process, so a shard is also read by one reader, plus those cut at a window boundary.
- Elastic. The global batch's keys, in order, are the same for any world size that divides
  `parts` and any number of readers: ranks take contiguous slots, readers only split the work.
- Exact resume. Position -> (shard, sample) is arithmetic; nothing is read to find a sample.

`parts` is the largest divisor of gcd(data.partitions, global batch) that is at most the split's
shard count (or 8, so a one-shard split still runs on up to 8 ranks) and at most its samples.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DEFAULT_PARTITIONS = 46_080  # 2^10 * 3^2 * 5: every world of 1-6, 8-10, 12, 15, 16 ... 1024 GPUs divides it
MIN_PARTITIONS = 8


def effective_partitions(configured: int, global_batch: int, shards: int, samples: int) -> int:
    """The partitions one split is cut into (see the module docstring)."""
    if configured < 1:
        raise ValueError(f"data.partitions must be >= 1, got {configured}")
    limit = min(max(shards, MIN_PARTITIONS), samples)
    base = math.gcd(configured, global_batch)
    return max(d for d in range(1, min(base, limit) + 1) if base % d == 0)


@dataclass(frozen=True)
class Slot:
    """Where one sample of a global batch comes from."""

    shard: int  # index in the ordered shard list
    sample: int  # index among the shard's usable samples
    partition: int
    epoch: int
    window: int


class SampleOrder:
    def __init__(self, counts: list[int], global_batch: int, partitions: int = DEFAULT_PARTITIONS, seed: int = 0,
                 window: int = 10_000):
        if not counts or sum(counts) == 0:
            raise ValueError("no samples: every shard is empty")
        if window < 1:
            raise ValueError(f"shuffle window must be >= 1 sample, got {window}")
        if global_batch < 1:
            raise ValueError(f"global batch must be >= 1, got {global_batch}")
        self.counts, self.total = list(counts), sum(counts)
        self.global_batch, self.seed, self.window = global_batch, seed, window
        self.configured_partitions = partitions
        self.parts = effective_partitions(partitions, global_batch, sum(1 for c in counts if c), self.total)
        self.per_part = global_batch // self.parts
        self.part_len = self.total // self.parts
        self.samples_per_epoch = self.parts * self.part_len
        self._caches()

    def _caches(self) -> None:
        self._layout = lru_cache(maxsize=2)(self._epoch_layout)
        self._perm = lru_cache(maxsize=256)(self._window_perm)

    def __getstate__(self) -> dict:  # reader processes get a copy without the caches
        return {k: v for k, v in self.__dict__.items() if k not in ("_layout", "_perm")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._caches()

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, *stream])))

    def _epoch_layout(self, epoch: int) -> tuple[list[int], list[int]]:
        """(shard visit order, start position of each visited shard within the epoch)."""
        order = self._rng(epoch, 0).permutation(len(self.counts)).tolist()
        starts, at = [], 0
        for j in order:
            starts.append(at)
            at += self.counts[j]
        return order, starts

    def _window_perm(self, epoch: int, part: int, w: int) -> np.ndarray:
        size = min(self.window, self.part_len - w * self.window)
        return self._rng(epoch, 1, part, w).permutation(size)

    def part_start(self, part: int) -> int:
        return part * self.total // self.parts

    def check_world(self, world: int) -> None:
        if self.parts % world or self.global_batch % world:
            raise ValueError(
                f"{world} ranks do not divide this split's {self.parts} partitions (the largest divisor of "
                f"gcd(data.partitions={self.configured_partitions}, batch {self.global_batch}) up to its shard "
                f"count): use a world size that divides {self.parts}, or set data.partitions and the batch size "
                f"to multiples of {world}")

    def slot(self, step: int, j: int) -> Slot:
        """Where slot j (0 <= j < global_batch) of the global batch at `step` comes from."""
        part, k = divmod(j, self.per_part)
        epoch, i = divmod(step * self.per_part + k, self.part_len)
        w, offset = divmod(i, self.window)
        i = w * self.window + int(self._perm(epoch, part, w)[offset])
        order, starts = self._layout(epoch)
        p = self.part_start(part) + i
        n = bisect.bisect_right(starts, p) - 1  # the last shard starting at or before p: never an empty one
        return Slot(order[n], p - starts[n], part, epoch, w)

    def locate(self, step: int, j: int) -> tuple[int, int]:
        s = self.slot(step, j)
        return s.shard, s.sample

    def batch(self, step: int) -> list[tuple[int, int]]:
        return [self.locate(step, j) for j in range(self.global_batch)]

    def shards_after(self, epoch: int, part: int, shard: int, n: int = 2) -> list[int]:
        """The next `n` shards partition `part` reads after `shard` in `epoch`: what to prefetch."""
        shards = self.part_shards(epoch, part)
        return shards[shards.index(shard) + 1:][:n] if shard in shards else []

    def part_shards(self, epoch: int, part: int) -> list[int]:
        """The shards partition `part` reads in `epoch`, in layout order (the data plan's unit)."""
        order, starts = self._layout(epoch)
        lo, hi = self.part_start(part), self.part_start(part) + self.part_len
        first, last = bisect.bisect_right(starts, lo) - 1, bisect.bisect_left(starts, hi)
        return [order[n] for n in range(first, last) if self.counts[order[n]] and starts[n] + self.counts[order[n]] > lo]

    def cursor(self, step: int) -> dict[str, int]:
        """The data cursor stored in a checkpoint: the next sample to read."""
        epoch, p = divmod(step * self.global_batch, self.samples_per_epoch)
        return {"epoch": epoch, "position": p, "samples_per_epoch": self.samples_per_epoch}


def rank_slots(global_batch: int, rank: int = 0, world: int = 1) -> range:
    """Slots of one rank's contiguous slice of the global batch (rank 0 first)."""
    local = global_batch // world
    return range(rank * local, (rank + 1) * local)


def reader_of(slot: Slot, rank_first_part: int, readers: int) -> int:
    """The reader process of a rank that reads `slot`: one per (partition, window), rotating so a
    rank with fewer partitions than readers still spreads consecutive windows over all of them."""
    return (slot.partition - rank_first_part + slot.window + slot.epoch) % readers
