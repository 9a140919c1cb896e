"""One streaming reader for training and evaluation: batches of samples read from shards by position.

`StepStream` yields the batches of steps `start..stop` of one rank: the rank's contiguous slots of
each global batch of a `SampleOrder` (litops.core.sample_order), so the global batch at a step is
the same list of keys whatever the number of ranks and reader processes. Reader k of K reads only
the slots whose (partition, window) belongs to it (`sample_order.reader_of`), so a shard is read by
one reader of one rank per epoch; each reader yields one piece per step, and `load` merges the K
pieces of a step back into slot order.

A reader opens a shard once: a local file in place, or an `s3://` shard through the node-local
cache (`litops.core.shard_cache`: fetched once per node, shared by its ranks and readers, the next
shards prefetched). It reads a sample by its byte range from the manifest's offset index
(`litops.core.manifest`), or from the tar headers when there is none; members of skipped samples
are never read, let alone decoded. With `feature_files` (a locked tower's per-shard feature cache)
no image is read at all. Memory per reader: its open shards' offsets (8 bytes a sample), the window
permutations and the batches in flight; never a whole shard, never the dataset.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from litops.core.sample_order import SampleOrder, Slot, rank_slots, reader_of
from litops.core.shard_index import (IMAGE_EXTS, SampleMembers, ShardMemo, StorageOptions, count_samples, index_members, is_s3,
                                     read_member, sample_at, split_urls)
from litops.core.process_start import reader_context
from litops.core.shards import decode_image, preload_jpeg_decoder


@dataclass
class StreamBatch:
    step: int
    keys: list[str]
    captions: list[str]
    images: torch.Tensor | None = None  # uint8 [b, 3, S, S]
    features: torch.Tensor | None = None  # float32 [b, D]: cached outputs of a locked image tower
    metas: list[dict] = field(default_factory=list)  # key.json, when asked for
    slots: list[int] = field(default_factory=list)  # the samples' slots in the global batch (pieces only)

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> "StreamBatch":
        """Page-locked copies of the tensors: their copy to a GPU can overlap compute (non_blocking)."""
        pinned = {k: getattr(self, k).pin_memory() for k in ("images", "features") if getattr(self, k) is not None}
        return dataclasses.replace(self, **pinned)


@dataclass(frozen=True)
class ShardRef:
    """What a reader needs to open one shard: where, how big, its identity, its offsets and exclusions."""

    url: str
    size: int = 0  # 0: unknown (no manifest)
    etag: str = ""
    version_id: str = ""
    index_url: str = ""  # the manifest's offset index; empty: read the tar headers
    samples: int = 0  # complete samples in the tar (rows of its offset index and feature file)
    excluded: tuple[int, ...] = ()  # complete samples readers never yield
    sha256: str = ""  # the shard's content digest when the manifest has it


@dataclass(frozen=True)
class CacheSpec:
    """The node-local shard cache: a folder shared by a node's ranks and readers, and its bound."""

    folder: str
    limit_bytes: int = 0


class _OpenShard:
    """One open shard: its file, and how to find sample i (offsets or tar headers) skipping exclusions."""

    def __init__(self, file: Any, ref: ShardRef, offsets: np.ndarray | None):
        self.file, self.offsets, self.excluded = file, offsets, sorted(ref.excluded)
        self.members = index_members(file) if offsets is None else None
        self.features: torch.Tensor | None = None

    def row(self, i: int) -> int:
        """Usable sample i -> its index among the tar's complete samples."""
        for e in self.excluded:
            if e <= i:
                i += 1
        return i

    def read(self, i: int, exts: tuple[str, ...]) -> tuple[str, dict[str, bytes]]:
        """(key, {ext: bytes}) of usable sample i; `exts` lists what is wanted ("img" for the image)."""
        r = self.row(i)
        if self.offsets is not None:
            key, members = sample_at(self.file, int(self.offsets[r]), int(self.offsets[r + 1]))
            image_ext = next((e for e in IMAGE_EXTS if e in members), "")
            return key, {e: members.get(image_ext if e == "img" else e, b"") for e in exts}
        sample: SampleMembers = self.members[r]
        out = {}
        for e in exts:
            ext = sample.image_ext if e == "img" else e
            out[e] = read_member(self.file, sample.members[ext]) if ext in sample.members else b""
        return sample.key, out


class SampleSource:
    """Reads samples by (shard, index) through a small LRU of open shards."""

    def __init__(self, shards: list[ShardRef], image_size: int | None, feature_files: list[ShardRef] | None = None,
                 storage: StorageOptions | None = None, with_metas: bool = False, max_open: int = 16,
                 cache: CacheSpec | None = None):
        self.shards, self.image_size, self.feature_files = list(shards), image_size, feature_files
        self.storage, self.with_metas, self.max_open, self.cache = storage, with_metas, max(1, max_open), cache
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()
        self._cache = None

    def __getstate__(self) -> dict:  # a reader opens its own files and its own cache client
        return {**self.__dict__, "_open": OrderedDict(), "_cache": None}

    def shard_cache(self):
        if self._cache is None:
            from litops.core.shard_cache import ShardCache

            spec = self.cache or CacheSpec(str(Path.home() / ".cache" / "litops" / "shards"))
            self._cache = ShardCache(Path(spec.folder), spec.limit_bytes, self.storage)
        return self._cache

    def local_path(self, url: str, size: int, etag: str = "", version_id: str = "") -> str:
        if not is_s3(url):
            return url
        return str(self.shard_cache().local_path(url, size, etag, version_id))

    def prefetch(self, shards: list[int]) -> None:
        """Start fetching these shards (and their feature files) into the node cache (S3 only) before a
        reader needs them."""
        refs = [r for j in shards for r in (self.shards[j], *self._features_of(j)) if is_s3(r.url) and r.size]
        if refs:
            self.shard_cache().prefetch([(r.url, r.size, r.etag, r.version_id) for r in refs])

    def _features_of(self, j: int) -> tuple[ShardRef, ...]:
        return () if self.feature_files is None else (self.feature_files[j],)

    def _offsets(self, ref: ShardRef) -> np.ndarray | None:
        if not ref.index_url:
            return None
        path = self.local_path(ref.index_url, 8 * (ref.samples + 1))
        return np.fromfile(path, dtype="<u8")

    def _shard(self, j: int) -> _OpenShard:
        if j in self._open:
            self._open.move_to_end(j)
            return self._open[j]
        ref = self.shards[j]
        shard = _OpenShard(open(self.local_path(ref.url, ref.size, ref.etag, ref.version_id), "rb"), ref,
                           self._offsets(ref))
        if self.feature_files is not None:
            # mmap: file-backed pages, only the rows a batch reads are touched
            features = self.feature_files[j]
            blob = torch.load(self.local_path(features.url, features.size, features.etag), map_location="cpu",
                              weights_only=True, mmap=True)
            rows = len(blob["keys"])
            expected = ref.samples or (len(shard.members) if shard.members is not None else rows)
            if rows != expected:
                raise ValueError(f"{features.url} holds {rows} rows, {ref.url} has {expected} samples")
            shard.features = blob["features"]
        self._open[j] = shard
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].file.close()
        return shard

    def batch(self, step: int, located: list[tuple[int, int]], slots: list[int] | None = None) -> StreamBatch:
        exts = ("txt",) + (("img",) if self.image_size and self.feature_files is None else ()) + \
            (("json",) if self.with_metas else ())
        keys, captions, images, features, metas = [], [], [], [], []
        for j, i in located:
            shard = self._shard(j)
            key, members = shard.read(i, exts)
            keys.append(key)
            captions.append(members["txt"].decode("utf-8"))
            if shard.features is not None:
                features.append(shard.features[shard.row(i)])
            elif "img" in members:
                images.append(decode_image(members["img"], self.image_size))
            if self.with_metas:
                metas.append(json.loads(members["json"]) if members["json"] else {})
        return StreamBatch(step, keys, captions, torch.stack(images) if images else None,
                           torch.stack(features) if features else None, metas, list(slots or []))


class StepStream(IterableDataset):
    """The batches of steps `start..stop` for one rank (see the module docstring)."""

    def __init__(self, source: SampleSource, order: SampleOrder, start: int, stop: int, rank: int = 0,
                 world: int = 1):
        super().__init__()
        order.check_world(world)
        self.source, self.order, self.start, self.stop, self.rank, self.world = source, order, start, stop, rank, world
        self.readers = 1

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.readers

    def pieces(self, reader: int, readers: int) -> Iterator[StreamBatch]:
        """Reader `reader` of `readers`: one piece (maybe empty) per step, its slots of this rank's batch."""
        first_part = self.rank * self.order.parts // self.world
        opened: set[tuple[int, int]] = set()
        for step in range(self.start, self.stop):
            mine = [(j, s) for j in rank_slots(self.order.global_batch, self.rank, self.world)
                    for s in (self.order.slot(step, j),) if reader_of(s, first_part, readers) == reader]
            self._prefetch_next(mine, opened)
            yield self.source.batch(step, [(s.shard, s.sample) for _, s in mine], [j for j, _ in mine])

    def _prefetch_next(self, mine: list[tuple[int, Slot]], opened: set[tuple[int, int]]) -> None:
        for _, s in mine:
            if (s.epoch, s.shard) not in opened:
                opened.add((s.epoch, s.shard))
                self.source.prefetch(self.order.shards_after(s.epoch, s.partition, s.shard))

    def __iter__(self) -> Iterator[StreamBatch]:
        info = get_worker_info()
        return self.pieces(0, 1) if info is None else self.pieces(info.id, info.num_workers)


def merge_pieces(pieces: list[StreamBatch]) -> StreamBatch:
    """The readers' pieces of one step, back in slot order."""
    if len(pieces) == 1:
        return pieces[0]  # one reader's piece is already in slot order
    slots = [slot for piece in pieces for slot in piece.slots]
    order = sorted(range(len(slots)), key=slots.__getitem__)
    where = torch.empty(len(slots), dtype=torch.long)
    where[torch.tensor(order, dtype=torch.long)] = torch.arange(len(slots))

    def placed(attr: str) -> torch.Tensor | None:
        # One output tensor filled piece by piece: copying row views into a stack grows the
        # main process's memory by a batch per step (measured), assigning into it does not.
        if getattr(pieces[0], attr) is None:
            return None
        out, at = None, 0
        for piece in pieces:
            part = getattr(piece, attr)
            if out is None:
                out = part.new_empty((len(slots),) + tuple(part.shape[1:]))
            out[where[at:at + len(part)]] = part
            at += len(part)
        return out

    def listed(attr: str) -> list:
        flat = [x for piece in pieces for x in getattr(piece, attr)]
        return [flat[i] for i in order]

    metas = listed("metas") if any(piece.metas for piece in pieces) else []
    return StreamBatch(pieces[0].step, listed("keys"), listed("captions"), placed("images"), placed("features"), metas)


def load_steps(stream: StepStream, workers: int, pin: bool = False) -> Iterator[StreamBatch]:
    """The rank's batches in step order, read by `workers` reader processes (0: in this process);
    `pin`: in page-locked memory (a CUDA device)."""
    if workers <= 0 or len(stream) == 0:
        yield from (batch.pin_memory() if pin else batch for batch in stream)
        return
    stream.readers = workers
    pieces = reader_loader(stream, workers)
    while True:
        step = [piece for _, piece in zip(range(workers), pieces)]
        if not step:
            return
        batch = merge_pieces(step)
        yield batch.pin_memory() if pin else batch


class PassStream(IterableDataset):
    """Every sample once, in shard order, in batches (evaluation); reader k reads batches k, k+K, ..."""

    def __init__(self, source: SampleSource, counts: list[int], batch_size: int):
        super().__init__()
        self.source, self.batch_size = source, batch_size
        self.starts, self.total = list(accumulate([0] + list(counts[:-1]))), sum(counts)
        self.counts = list(counts)

    def __len__(self) -> int:
        return math.ceil(self.total / self.batch_size)

    def locate(self, p: int) -> tuple[int, int]:
        j = bisect.bisect_right(self.starts, p) - 1
        return j, p - self.starts[j]

    def __iter__(self) -> Iterator[StreamBatch]:
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in range(k, len(self), n):
            positions = range(b * self.batch_size, min((b + 1) * self.batch_size, self.total))
            yield self.source.batch(b, [self.locate(p) for p in positions])


def load(stream: IterableDataset, workers: int, pin: bool = False) -> Iterator[StreamBatch]:
    """A stream's batches in step order, read by `workers` reader processes (0: in this process)."""
    if isinstance(stream, StepStream):
        return load_steps(stream, workers, pin)
    workers = min(workers, len(stream))
    if workers <= 0:
        return iter(stream)
    return reader_loader(stream, workers)


def reader_loader(dataset: IterableDataset, workers: int, prefetch: int = 4) -> Iterator:
    """A DataLoader whose `workers` processes each yield whole items (batches or chunks) of `dataset`."""
    preload_jpeg_decoder()  # once here, not once per forked reader
    return iter(DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=prefetch,
                           multiprocessing_context=reader_context()))


def shard_counts(urls: list[str], storage: StorageOptions | None = None, memo_path: Path | None = None) -> list[int]:
    """Complete samples per shard (tar headers read once; remembered in `memo_path` when given)."""
    memo = ShardMemo(memo_path, storage)
    counts = [memo.get(u, "samples", lambda url: count_samples(url, storage)) for u in urls]
    memo.save()
    return counts


def max_open_shards(counts: list[int], window: int, partitions: int = 1) -> int:
    """Shards a reader keeps open: those one shuffle window spans, plus two, for each partition it
    reads. Each costs its offsets (and its features); this bound keeps that flat in the dataset's size."""
    smallest = min((c for c in counts if c), default=1)
    return min(len(counts), max(1, partitions) * (math.ceil(window / smallest) + 2))


def refs_from_manifest(dataset: str, split: str, storage: StorageOptions | None) -> tuple[str, list[ShardRef]] | None:
    """(the root the shards live under, the split's shards) as the dataset's manifest lists them;
    None without a manifest (or split)."""
    from litops.core.manifest import read_manifest

    manifest = read_manifest(dataset, storage)
    if manifest is None or split not in manifest.splits:
        return None
    return manifest.root, [ShardRef(manifest.url(e), e.bytes, e.etag, e.version_id, manifest.url(e) + ".idx",
                                    e.samples, tuple(e.excluded), e.sha256) for e in manifest.splits[split]]


def counted_refs(dataset: str, split: str, storage: StorageOptions | None, memo_path: Path | None) -> list[ShardRef]:
    urls = split_urls(dataset, split, storage)
    if not urls:
        return []
    print(f"litops: no manifest at {dataset.rstrip('/')}: counting the samples of {len(urls)} {split} shard(s) "
          f"(`litops data index {dataset}` writes one)", file=sys.stderr)
    counts = shard_counts(urls, storage, memo_path)
    if not is_s3(dataset):
        return [ShardRef(u, samples=n) for u, n in zip(urls, counts)]
    listed = (storage or StorageOptions()).filesystem().glob(f"{dataset[len('s3://'):].rstrip('/')}/{split}/*.tar",
                                                             detail=True)  # one LIST: sizes and ETags for the cache
    info = {"s3://" + k: v for k, v in listed.items()}
    return [ShardRef(u, int(info[u]["size"]), str(info[u].get("ETag", "")).strip('"'), samples=n)
            for u, n in zip(urls, counts)]


@dataclass
class SplitStream:
    """A split's shards and usable sample counts, ready to stream in any order."""

    shards: list[ShardRef]
    storage: StorageOptions | None = None
    cache: CacheSpec | None = None
    root: str = ""  # where the shards live: the manifest's root (a bucket for data indexed in place)

    @classmethod
    def open(cls, dataset, split: str, storage: StorageOptions | None = None, memo_path: Path | None = None,
             cache: CacheSpec | None = None) -> "SplitStream":
        """Reads the dataset's manifest only; without one, counts the shards' samples (tar headers,
        remembered in `memo_path`: litops.core.shard_index.ShardMemo)."""
        dataset = str(dataset)
        listed = refs_from_manifest(dataset, split, storage)
        root, refs = listed if listed is not None else (dataset, counted_refs(dataset, split, storage, memo_path))
        if not refs:
            raise FileNotFoundError(f"no shards in {dataset.rstrip('/')}/{split}")
        return cls(refs, storage, cache, root)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.shards]

    @property
    def counts(self) -> list[int]:
        return [r.samples - len(r.excluded) for r in self.shards]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def source(self, image_size: int | None, feature_files: list[ShardRef] | None = None, with_metas: bool = False,
               max_open: int = 16) -> SampleSource:
        return SampleSource(self.shards, image_size, feature_files, self.storage, with_metas, max_open, self.cache)

    def one_pass(self, batch_size: int, image_size: int | None, workers: int = 0,
                 with_metas: bool = False) -> Iterator[StreamBatch]:
        """Every sample once, in shard order (evaluation)."""
        return load(PassStream(self.source(image_size, with_metas=with_metas, max_open=2), self.counts, batch_size),
                    workers)
