"""The training data stream: a rank's batches of pixels, or of a locked tower's cached features.

The order is the run's `SampleOrder` over the train split (seed = train.seed, window =
data.shuffle_buffer); the checkpoint stores the cursor (epoch, position of the next sample),
and a resumed run starts there, whatever the number of ranks or reader processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from litops.core.config import LitopsConfig, resolve_workers
from litops.core.sample_order import SampleOrder
from litops.core.shard_index import StorageOptions, is_s3
from litops.core.stream import SampleSource, SplitStream, StepStream, StreamBatch, load, max_open_shards
from litops.train import feature_cache
from litops.train.feature_cache import shard_memo_path

RECORD_KEYS_ENV = "LITOPS_RECORD_BATCH_KEYS"  # tests: a folder where each rank writes the keys it trains on


@dataclass
class TrainStream:
    split: SplitStream
    order: SampleOrder
    cache: feature_cache.FeatureCache
    image_size: int
    global_batch: int
    workers: int

    @property
    def uses_features(self) -> bool:
        return self.cache.feature_files is not None

    def cursor(self, step: int) -> dict[str, int]:
        return self.order.cursor(step * self.global_batch)

    def batches(self, start: int, stop: int, rank: int = 0, world: int = 1) -> Iterator[StreamBatch]:
        source = SampleSource(self.split.urls, None if self.uses_features else self.image_size,
                              self.cache.feature_files, self.split.storage,
                              max_open=max_open_shards(self.split.urls, self.split.counts, self.order.window))
        stream = StepStream(source, self.order, self.global_batch, start, stop, rank, world)
        return record_keys(load(stream, self.workers), rank)


def storage_for(cfg: LitopsConfig, dataset: str) -> StorageOptions | None:
    return StorageOptions.from_config(cfg) if is_s3(dataset) else None


def open_train_stream(cfg: LitopsConfig, model, dataset: str, device, ddp, data_version: str = "") -> TrainStream:
    """The train split's shards, the locked tower's feature cache when it applies, and the order."""
    split = SplitStream.open(dataset, "train", storage_for(cfg, dataset), shard_memo_path(cfg))
    cache = feature_cache.prepare(cfg, model, dataset, split, device, data_version, rank=ddp.rank, world=ddp.world,
                                  barrier=ddp.barrier)
    order = SampleOrder(split.counts, seed=cfg.train.seed, window=cfg.data.shuffle_buffer)
    global_batch = min(cfg.train.batch_size, split.total)
    return TrainStream(split, order, cache, model.image_input_size, global_batch, resolve_workers(cfg.data.workers, beside_compute=True))


def check_cursor(stream: TrainStream, step: int, cursor: dict[str, Any] | None) -> None:
    """A checkpoint's cursor must point where its step says: same data, same batch size."""
    if cursor is None:
        return
    expected = stream.cursor(step)
    if cursor != expected:
        raise ValueError(f"the checkpoint's data cursor {cursor} does not match this run's data at step {step} "
                         f"({expected}): the train split or the batch size changed since it was written")


def record_keys(batches: Iterator[StreamBatch], rank: int) -> Iterator[StreamBatch]:
    folder = os.environ.get(RECORD_KEYS_ENV)
    if not folder:
        yield from batches
        return
    path = Path(folder) / f"keys-rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    for batch in batches:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": batch.step, "rank": rank, "keys": batch.keys}) + "\n")
        yield batch
