"""The training data stream: a rank's batches of pixels, or of a locked tower's cached features.

The order is the run's `SampleOrder` over the train split (seed = train.seed, window =
data.shuffle_buffer, partitions = data.partitions); the checkpoint stores the cursor (epoch,
position of the next sample), and a resumed run starts there, whatever the number of reader
processes and any number of ranks that divides the split's partitions. Shards on S3 are read
through the node-local cache (data.cache_dir, bounded by data.cache_limit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from litops.core.config import LitopsConfig, parse_bytes, resolve_workers
from litops.core.sample_order import SampleOrder
from litops.core.shard_index import StorageOptions
from litops.core.stream import CacheSpec, SplitStream, StepStream, StreamBatch, load, max_open_shards
from litops.core.workspace import resolve_home
from litops.train import feature_cache
from litops.train.feature_cache import shard_memo_path


@dataclass
class TrainStream:
    split: SplitStream
    order: SampleOrder
    cache: feature_cache.FeatureCache
    image_size: int
    global_batch: int
    workers: int
    pin: bool = False  # page-locked batches: a CUDA device copies them while it computes

    @property
    def uses_features(self) -> bool:
        return self.cache.feature_files is not None

    def cursor(self, step: int) -> dict[str, int]:
        return self.order.cursor(step)

    def batches(self, start: int, stop: int, rank: int = 0, world: int = 1) -> Iterator[StreamBatch]:
        parts_per_reader = -(-self.order.parts // (world * max(1, self.workers)))
        source = self.split.source(None if self.uses_features else self.image_size, self.cache.feature_files,
                                   max_open=max_open_shards(self.split.counts, self.order.window, parts_per_reader))
        stream = StepStream(source, self.order, start, stop, rank, world)
        return load(stream, self.workers, self.pin)


def storage_for(cfg: LitopsConfig, dataset: str) -> StorageOptions | None:
    """The config's endpoint and region, also for a local dataset folder: its manifest may name
    shards that stay in a bucket (`data add --in-place`)."""
    return StorageOptions.from_config(cfg)


SHARD_CACHE_ENV = "LITOPS_SHARD_CACHE_DIR"  # a Kubernetes pod's node-disk volume (flows/k8s_render.py)


def shard_cache_spec(cfg: LitopsConfig) -> CacheSpec:
    """data.cache_dir; else the pod's node-disk volume; else <home>/shard-cache."""
    folder = cfg.data.cache_dir or os.environ.get(SHARD_CACHE_ENV) or str(resolve_home(cfg.home) / "shard-cache")
    return CacheSpec(folder, parse_bytes(cfg.data.cache_limit, "data.cache_limit"))


def open_train_stream(cfg: LitopsConfig, model, dataset: str, device, ddp, data_version: str = "") -> TrainStream:
    """The train split's shards, the locked tower's feature cache when it applies, and the order."""
    split = SplitStream.open(dataset, "train", storage_for(cfg, dataset), shard_memo_path(cfg), shard_cache_spec(cfg))
    global_batch = min(cfg.train.batch_size, split.total)
    order = SampleOrder(split.counts, global_batch, cfg.data.partitions, seed=cfg.train.seed,
                        window=cfg.data.shuffle_buffer)
    order.check_world(ddp.world)  # before the feature cache: a bad world size fails in seconds
    cache = feature_cache.prepare(cfg, model, dataset, split, device, data_version, rank=ddp.rank, world=ddp.world,
                                  barrier=ddp.barrier)
    return TrainStream(split, order, cache, model.image_input_size, global_batch,
                       resolve_workers(cfg.data.workers, beside_compute=True), pin=torch.device(device).type == "cuda")


def check_cursor(stream: TrainStream, step: int, cursor: dict[str, Any] | None) -> None:
    """A checkpoint's cursor must point where its step says: same data, same batch size."""
    if cursor is None:
        return
    expected = stream.cursor(step)
    if cursor != expected:
        raise ValueError(f"the checkpoint's data cursor {cursor} does not match this run's data at step {step} "
                         f"({expected}): the train split or the batch size changed since it was written")
