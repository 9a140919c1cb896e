"""Where a split's shards are, and which samples each holds, without decoding anything.

A dataset is a folder or an `s3://bucket/prefix` holding `<split>/*.tar` in the img2dataset
layout (`key.jpg` + `key.txt` [+ `key.json`]). Shards are listed in name order; that order,
with the seed and epoch, defines the global sample sequence (litops.core.sample_order).

A shard's member index (sample key -> byte ranges of its members) comes from reading the tar
headers with `tarfile`; data bytes are seeked over, never read. On S3 the index is built from
the shard's bytes held in memory (one shard at a time).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from webdataset.tariterators import base_plus_ext

from litops.core.s3_retries import S3Retries, naming

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
S3_SCHEME = "s3://"


@dataclass(frozen=True)
class StorageOptions:
    """How to reach `s3://` URLs: the configured endpoint, region and retries (litops.core.s3_retries);
    credentials come from the environment."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    retries: S3Retries = S3Retries()

    @classmethod
    def from_config(cls, cfg) -> "StorageOptions":
        from litops.core.storage import s3_endpoint

        return cls(s3_endpoint(cfg), cfg.storage.region, S3Retries.from_config(cfg))

    def filesystem(self):
        return self.retries.filesystem(self.endpoint_url, self.region)

    def client(self):
        """A boto3 S3 client with the same endpoint, region and retries."""
        return self.retries.client(self.endpoint_url, self.region)


@dataclass(frozen=True)
class SampleMembers:
    key: str
    members: dict[str, tuple[int, int]]  # extension -> (data offset, size) in the tar

    @property
    def image_ext(self) -> str:
        return next(e for e in IMAGE_EXTS if e in self.members)


def is_s3(url: str) -> bool:
    return str(url).startswith(S3_SCHEME)


def split_urls(dataset: str | Path, split: str, storage: StorageOptions | None = None) -> list[str]:
    """The split's shard URLs in name order (empty when the split has none)."""
    dataset = str(dataset)
    if is_s3(dataset):
        fs = (storage or StorageOptions()).filesystem()
        root = dataset[len(S3_SCHEME):].rstrip("/")
        return [S3_SCHEME + p for p in sorted(fs.glob(f"{root}/{split}/*.tar"))]
    return [str(p) for p in sorted((Path(dataset) / split).glob("*.tar"))]


def keyed_members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """(member, sample key, extension) of each file member that names a sample, in tar order: the one
    place that decides what a member of a sample is, for every tar reader."""
    for info in tar:
        if not info.isfile():
            continue
        base, ext = base_plus_ext(info.name)
        if base is not None:
            yield info, base, ext


def index_members(fileobj: BinaryIO) -> list[SampleMembers]:
    """Complete samples (an image and a caption) of a tar, in member order. Stray or partial
    samples are skipped: ingestion quarantines them, and readers must not fail on them."""
    samples: list[SampleMembers] = []
    key, members = None, {}

    def flush() -> None:
        if key is not None and "txt" in members and any(e in members for e in IMAGE_EXTS):
            samples.append(SampleMembers(key, members))

    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for info, base, ext in keyed_members(tar):
            if base != key:
                flush()
                key, members = base, {}
            members[ext.lower()] = (info.offset_data, info.size)
        flush()
    return samples


def open_shard(url: str, storage: StorageOptions | None = None) -> BinaryIO:
    """A seekable binary file: the local file, or an S3 shard's bytes held in memory."""
    if is_s3(url):
        fs = (storage or StorageOptions()).filesystem()
        with naming(url):
            return io.BytesIO(fs.cat_file(url[len(S3_SCHEME):]))
    return open(url, "rb")


def count_samples(url: str, storage: StorageOptions | None = None) -> int:
    with open_shard(url, storage) as f:
        return len(index_members(f))


def shard_identity(url: str, storage: StorageOptions | None = None) -> str:
    """What changes whenever a shard's bytes do: size and mtime locally, size and ETag on S3."""
    if is_s3(url):
        info = (storage or StorageOptions()).filesystem().info(url[len(S3_SCHEME):])
        return f"{info['size']}:{info.get('ETag', '')}"
    st = os.stat(url)
    return f"{st.st_size}:{st.st_mtime_ns}"


class ShardMemo:
    """Facts about shards (sample count, digest) remembered by URL and identity in one JSON file,
    so a rerun neither re-reads tar headers nor re-hashes shards that did not change. Machine-local
    (it lives under the workspace home); an unreadable file is ignored and rewritten."""

    def __init__(self, path: Path | None, storage: StorageOptions | None = None):
        self.path, self.storage = path, storage
        self.entries: dict[str, dict] = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                self.entries = {}

    def get(self, url: str, fact: str, compute) -> Any:
        identity = shard_identity(url, self.storage) if self.path is not None else ""
        entry = self.entries.get(url, {})
        if entry.get("identity") != identity:
            entry = {"identity": identity}
        if fact not in entry:
            entry[fact] = compute(url)
        self.entries[url] = entry
        return entry[fact]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.entries, f)
        os.replace(tmp, self.path)


def shard_size(url: str, storage: StorageOptions | None = None) -> int:
    if is_s3(url):
        return int((storage or StorageOptions()).filesystem().size(url[len(S3_SCHEME):]))
    return os.path.getsize(url)


def read_member(f: BinaryIO, span: tuple[int, int]) -> bytes:
    offset, size = span
    f.seek(offset)
    return f.read(size)

