"""One streaming reader for training and evaluation: batches of samples read from shards by position.

`StepStream` yields the batches of steps `start..stop` of one rank. Batch `s` holds the samples
at global positions `[s*B + rank*b, s*B + (rank+1)*b)` of a `SampleOrder` (B the global batch,
b = B / world), so the global batch at a step is the same set of keys whatever the number of
ranks and DataLoader workers. Worker k of K reads steps k, k+K, ...; the DataLoader hands the
workers' outputs back round-robin, i.e. in step order.

A worker reads a sample by seeking to its members' byte ranges (`shard_index.index_members`);
members of skipped samples are never read, let alone decoded, so a resume at any position costs
the index of the shards it touches. Images are decoded in the worker straight to `image_size`
(the tower's input size); with `feature_files` (a locked tower's per-shard feature cache) no
image is read at all. Memory per worker: the open shards' indexes (and, on S3, their bytes), a
window permutation and the batches in flight; never the dataset.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from litops.core.sample_order import SampleOrder, batch_positions
from litops.core.shard_index import (SampleMembers, ShardMemo, StorageOptions, count_samples, index_members,
                                     open_shard, read_member, split_urls)
from litops.core.shards import decode_image, preload_jpeg_decoder


@dataclass
class StreamBatch:
    step: int
    keys: list[str]
    captions: list[str]
    images: torch.Tensor | None = None  # uint8 [b, 3, S, S]
    features: torch.Tensor | None = None  # float32 [b, D]: cached outputs of a locked image tower
    metas: list[dict] = field(default_factory=list)  # key.json, when asked for

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _OpenShard:
    file: Any
    samples: list[SampleMembers]
    features: torch.Tensor | None = None


class SampleSource:
    """Reads samples by (shard, index) through a small LRU of open shards."""

    def __init__(self, urls: list[str], image_size: int | None, feature_files: list[str] | None = None,
                 storage: StorageOptions | None = None, with_metas: bool = False, max_open: int = 16):
        self.urls, self.image_size, self.feature_files = list(urls), image_size, feature_files
        self.storage, self.with_metas, self.max_open = storage, with_metas, max(1, max_open)
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()

    def __getstate__(self) -> dict:  # a worker opens its own files
        return {**self.__dict__, "_open": OrderedDict()}

    def _shard(self, j: int) -> _OpenShard:
        if j in self._open:
            self._open.move_to_end(j)
            return self._open[j]
        f = open_shard(self.urls[j], self.storage)
        shard = _OpenShard(f, index_members(f))
        if self.feature_files is not None:
            # mmap: file-backed pages, only the rows a batch reads are touched
            blob = torch.load(self.feature_files[j], map_location="cpu", weights_only=True, mmap=True)
            if blob["keys"] != [s.key for s in shard.samples]:
                raise ValueError(f"{self.feature_files[j]} does not match the samples of {self.urls[j]}")
            shard.features = blob["features"]
        self._open[j] = shard
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].file.close()
        return shard

    def batch(self, step: int, located: list[tuple[int, int]]) -> StreamBatch:
        keys, captions, images, features, metas = [], [], [], [], []
        for j, i in located:
            shard = self._shard(j)
            sample = shard.samples[i]
            keys.append(sample.key)
            captions.append(read_member(shard.file, sample.members["txt"]).decode("utf-8"))
            if shard.features is not None:
                features.append(shard.features[i])
            elif self.image_size:
                images.append(decode_image(read_member(shard.file, sample.members[sample.image_ext]), self.image_size))
            if self.with_metas:
                raw = read_member(shard.file, sample.members["json"]) if "json" in sample.members else b""
                metas.append(json.loads(raw) if raw else {})
        return StreamBatch(step, keys, captions, torch.stack(images) if images else None,
                           torch.stack(features) if features else None, metas)


class StepStream(IterableDataset):
    """The batches of steps `start..stop` for one rank (see the module docstring)."""

    def __init__(self, source: SampleSource, order: SampleOrder, global_batch: int, start: int, stop: int,
                 rank: int = 0, world: int = 1, end: int | None = None):
        super().__init__()
        self.source, self.order, self.global_batch = source, order, global_batch
        self.start, self.stop, self.rank, self.world, self.end = start, stop, rank, world, end

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[StreamBatch]:
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.start + k, self.stop, n):
            positions = batch_positions(step, self.global_batch, self.rank, self.world)
            if self.end is not None:  # one pass (evaluation): the last batch is short
                positions = range(positions.start, min(positions.stop, self.end))
            yield self.source.batch(step, [self.order.locate(p) for p in positions])


def load(stream: StepStream, workers: int) -> Iterator[StreamBatch]:
    """The stream's batches in step order, read by `workers` DataLoader processes (0: in this process)."""
    workers = min(workers, len(stream))
    if workers <= 0:
        return iter(stream)
    return reader_loader(stream, workers)


def reader_loader(dataset: IterableDataset, workers: int, prefetch: int = 4) -> Iterator:
    """A DataLoader whose `workers` processes each yield whole items (batches or chunks) of `dataset`."""
    preload_jpeg_decoder()  # once here, not once per forked reader
    return iter(DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=prefetch,
                           multiprocessing_context=reader_context(), worker_init_fn=forget_parent_exit_hooks))


def forget_parent_exit_hooks(worker_id: int) -> None:
    """A forked reader inherits the parent's thread-exit hooks (Prefect registers some for its
    service threads); run at the reader's exit, they fail for threads it never had, and the
    reader dies with code 1 and no message. The reader has no threads of its own to stop."""
    import threading

    hooks = getattr(threading, "_threading_atexits", None)
    if isinstance(hooks, list):
        hooks.clear()


FORK_HAZARDS: list[str] = []  # why readers must not fork from this process


def avoid_forking_readers(reason: str) -> None:
    """Readers start from a forkserver from now on: a reader forked after boto3 had run here
    hung a resumed training pod (tests/storage/test_preemption_resume.py)."""
    FORK_HAZARDS.append(reason)


def reader_context():
    """fork when this process runs no other thread: a component started by the flow's forkserver
    inherits "forkserver" as its default, which would start each reader as a fresh interpreter
    (seconds of imports per pass). With other threads alive (MLflow's async logging, boto3's
    transfer pool) a fork can copy a lock mid-use and hang the reader: then a forkserver, started
    once per process with the reader's imports preloaded."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and not FORK_HAZARDS:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "litops.core.stream", "torchvision.io"])
        short_socket_folder()
        return context
    return None


def short_socket_folder() -> None:
    """The forkserver's socket lives in multiprocessing's temp folder; under a long TMPDIR its path
    exceeds the 107 bytes an AF_UNIX address allows, so use a folder under /tmp then."""
    import multiprocessing.process
    import multiprocessing.util
    import tempfile

    config = multiprocessing.process.current_process()._config
    if config.get("tempdir") is None and len(tempfile.gettempdir()) > 60 and Path("/tmp").is_dir():
        config["tempdir"] = tempfile.mkdtemp(prefix="pymp-", dir="/tmp")
        multiprocessing.util.Finalize(None, __import__("shutil").rmtree, args=[config["tempdir"]], exitpriority=-100)


def shard_counts(urls: list[str], storage: StorageOptions | None = None, memo_path: Path | None = None) -> list[int]:
    """Complete samples per shard (tar headers read once; remembered in `memo_path` when given)."""
    memo = ShardMemo(memo_path, storage)
    counts = [memo.get(u, "samples", lambda url: count_samples(url, storage)) for u in urls]
    memo.save()
    return counts


def max_open_shards(urls: list[str], counts: list[int], window: int) -> int:
    """Shards a reader keeps open: those one shuffle window spans, plus two. Each costs its member
    index (and its features, or on S3 its bytes); this bound keeps that flat in the dataset's size."""
    smallest = min((c for c in counts if c), default=1)
    return min(len(urls), math.ceil(window / smallest) + 2)


@dataclass
class SplitStream:
    """A split's shards and sample counts, ready to stream in any order."""

    urls: list[str]
    counts: list[int]
    storage: StorageOptions | None = None

    @classmethod
    def open(cls, dataset, split: str, storage: StorageOptions | None = None,
             memo_path: Path | None = None) -> "SplitStream":
        """`memo_path`: a JSON file remembering each shard's sample count (litops.core.shard_index.ShardMemo)."""
        urls = split_urls(dataset, split, storage)
        if not urls:
            raise FileNotFoundError(f"no shards in {str(dataset).rstrip('/')}/{split}")
        return cls(urls, shard_counts(urls, storage, memo_path), storage)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def one_pass(self, batch_size: int, image_size: int | None, workers: int = 0,
                 with_metas: bool = False) -> Iterator[StreamBatch]:
        """Every sample once, in shard order (evaluation)."""
        order = SampleOrder(self.counts, shuffle=False)
        source = SampleSource(self.urls, image_size, storage=self.storage, with_metas=with_metas, max_open=2)
        steps = math.ceil(self.total / batch_size)
        return load(StepStream(source, order, batch_size, 0, steps, end=self.total), workers)
