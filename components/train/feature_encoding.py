"""Encoding whole shards with a locked image tower, for the feature cache (litops.train.feature_cache).

DataLoader worker k of K reads and decodes shards k, k+K, ... of the ones to encode, one shard at
a time, and hands back chunks of uint8 images already at the tower's input size; this process
runs the tower on them and passes each shard's features on as soon as its last chunk is in.
Memory: the features of the shards being read (at most one per worker) and the chunks in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from litops.core.progress import Progress
from litops.core.shard_index import index_members, read_member
from litops.core.shards import decode_image
from litops.core.stream import SplitStream, reader_loader

PREFETCH_CHUNKS = 2  # per worker


@dataclass
class ShardChunk:
    shard: int  # index into the split's shard URLs
    keys: list[str]
    images: torch.Tensor  # uint8 [n, 3, S, S]
    last: bool  # the shard's final chunk (an empty shard has one, empty)


class ShardImages(IterableDataset):
    """The decoded images of the shards `shards` (indices into `urls`), in chunks of `chunk`."""

    def __init__(self, split: SplitStream, shards: list[int], image_size: int, chunk: int):
        super().__init__()
        self.source, self.shards, self.image_size = split.source(None), list(shards), image_size
        self.chunk = max(1, chunk)

    def __iter__(self) -> Iterator[ShardChunk]:
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for j in self.shards[k::n]:
            yield from self.shard_chunks(j)

    def shard_chunks(self, j: int) -> Iterator[ShardChunk]:
        ref = self.source.shards[j]  # an S3 shard comes through the node-local cache, never whole into memory
        with open(self.source.local_path(ref.url, ref.size, ref.etag, ref.version_id), "rb") as f:
            samples = index_members(f)
            if not samples:
                yield ShardChunk(j, [], torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8), True)
                return
            excluded = set(ref.excluded)
            for start in range(0, len(samples), self.chunk):
                part = samples[start : start + self.chunk]
                # an excluded sample keeps its feature row (rows follow the tar) but is never read or
                # decoded: its image may be exactly what got it excluded
                images = [self._blank() if start + i in excluded
                          else decode_image(read_member(f, s.members[s.image_ext]), self.image_size)
                          for i, s in enumerate(part)]
                yield ShardChunk(j, [s.key for s in part], torch.stack(images), start + self.chunk >= len(samples))


    def _blank(self) -> torch.Tensor:
        return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)


def shard_chunks(images: ShardImages, workers: int) -> Iterator[ShardChunk]:
    """Chunks of every shard, read by `workers` processes (0: in this process)."""
    workers = min(workers, len(images.shards))
    if workers <= 0:
        return iter(images)
    return reader_loader(images, workers, PREFETCH_CHUNKS)


def tower_features(tower, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images -> the tower's float32 outputs on the CPU (call under no_grad, tower in eval mode)."""
    return tower(tower.preprocess(images.to(device))).float().cpu()


def encode_shards(tower, images: ShardImages, device: torch.device, workers: int, bar: Progress,
                  done: Callable[[int, list[str], torch.Tensor], None]) -> None:
    """Run `tower` over every shard of `images`; `done(shard, keys, features)` once per shard."""
    pending: dict[int, tuple[list[str], list[torch.Tensor]]] = {}
    finished, seen, t0 = 0, 0, time.perf_counter()
    was_training = tower.training
    tower.eval()
    try:
        with torch.no_grad():
            for chunk in shard_chunks(images, workers):
                keys, parts = pending.setdefault(chunk.shard, ([], []))
                keys += chunk.keys
                if chunk.keys:
                    parts.append(tower_features(tower, chunk.images, device))
                if chunk.last:
                    del pending[chunk.shard]
                    done(chunk.shard, keys, torch.cat(parts) if parts else torch.empty(0, tower.output_dim))
                    finished += 1
                seen += len(chunk.keys)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(len(chunk.keys), shards=f"{finished}/{len(images.shards)}", **{"samples/s": f"{rate:.0f}"})
    finally:
        tower.train(was_training)
