"""Where a split's shards are, and which samples each holds, without decoding anything.

A dataset is a folder or an `s3://bucket/prefix` holding `<split>/*.tar` in the img2dataset
layout (`key.jpg` + `key.txt` [+ `key.json`]). Shards are listed in name order; that order,
with the seed and epoch, defines the global sample sequence (litops.core.sample_order).

This is also the one tar reader, for ingestion, training and evaluation alike: `open_tar` opens a
file or a stream, `tar_members` walks its members, `sample_runs` groups them into samples as
webdataset does (`keyed_members`: its `base_plus_ext`), `index_members` locates the complete samples
(data bytes seeked over, never read) and `sample_at` reads one sample back from a byte range. On S3
the index is built from the shard's bytes held in memory (one shard at a time).
"""

from __future__ import annotations

import functools
import io
import json
import operator
import os
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from litops.core.s3_retries import S3Retries, naming
from litops.core.shard_offsets import ManifestError

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
    def has_image(self) -> bool:
        return any(e in self.members for e in IMAGE_EXTS)

    @property
    def complete(self) -> bool:
        """An image and a caption: what training reads; anything less is skipped (ingestion quarantines it)."""
        return "txt" in self.members and self.has_image

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


def index_members(fileobj: BinaryIO) -> list[SampleMembers]:
    """Complete samples (an image and a caption) of a tar, in member order. Stray or partial
    samples are skipped: ingestion quarantines them, and readers must not fail on them."""
    with open_tar(fileobj) as tar:
        return [SampleMembers(run.key, run.members) for run in sample_runs(tar_members(tar)) if run.complete]


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


# --------------------------------------------------------------------------- reading a tar

# What a damaged or foreign tar raises while it is read (zlib and OSError: a broken .tar.gz).
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)
STREAM_READ_SIZE = 1 << 20
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


@functools.cache
def _base_plus_ext() -> Callable[[str], tuple[str | None, str | None]]:
    """webdataset's split of a member name into (key, extensions), imported when first needed:
    webdataset imports torch, seconds a data command need not wait."""
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext


def open_tar(source: str | Path | BinaryIO, stream: bool = False, compressed: bool = False) -> tarfile.TarFile:
    """A tar opened for reading, from a path or a binary file: read anywhere (members' offsets are
    offsets in the file), or with `stream` front to back only, as the bytes arrive. `compressed`
    also takes a gzip, bz2 or xz tar (offsets then count uncompressed bytes)."""
    mode = ("r|" if stream else "r:") + ("*" if compressed else "")
    if isinstance(source, (str, Path)):
        return tarfile.open(source, mode=mode, bufsize=STREAM_READ_SIZE)
    return tarfile.open(fileobj=source, mode=mode, bufsize=STREAM_READ_SIZE)


@dataclass(frozen=True)
class TarMember:
    """A member's header, and its bytes when asked (from a stream: only until the next member)."""

    info: tarfile.TarInfo
    read: Callable[[], bytes]


def _member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    return f.read() if f is not None else b""


def tar_members(tar: tarfile.TarFile) -> Iterator[TarMember]:
    """Every member of an open tar in stored order, links and folders included. A cut or a garbage
    header between members ends it silently (tarfile's rule: `ends_cleanly` tells); damage inside a
    member raises one of TAR_ERRORS."""
    for info in tar:
        yield TarMember(info, functools.partial(_member_bytes, tar, info))


def ends_cleanly(tar: tarfile.TarFile) -> bool:
    """True when a tar opened from a seekable file holds the end-of-archive block where its members
    ended: tarfile stops silently at a cut or a garbage header, which would hide a damaged tar."""
    try:
        tar.fileobj.seek(tar.offset)
        block = tar.fileobj.read(tarfile.BLOCKSIZE)
    except TAR_ERRORS:
        return False
    return len(block) == tarfile.BLOCKSIZE and block.count(0) == tarfile.BLOCKSIZE


def keyed_members(members: Iterable[TarMember]) -> Iterator[tuple[TarMember, str, str]]:
    """(member, sample key, lower-case extension) of each file member that names a sample, in tar
    order: the one place that decides what a member of a sample is, for every tar reader."""
    base_plus_ext = _base_plus_ext()
    for member in members:
        if member.info.isfile():
            key, ext = base_plus_ext(member.info.name)
            if key is not None:
                yield member, key, ext.lower()


@dataclass(frozen=True)
class SampleRun(SampleMembers):
    """A run of consecutive file members sharing a key: a sample as webdataset groups a tar. An
    extension seen twice keeps its last member's span; `data` holds every member read, in order."""

    start: int = 0  # offset of the first member's header
    end: int = 0  # offset just past the last member's data blocks
    data: tuple[tuple[str, bytes], ...] = ()  # (extension, bytes) of the members read


def read_every(ext: str) -> bool:
    return True


def _block_end(info: tarfile.TarInfo) -> int:
    return info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def sample_runs(members: Iterable[TarMember], read: Callable[[str], bool] | None = None) -> Iterator[SampleRun]:
    """Every run of `members` (see SampleRun), complete or not, in tar order. The bytes of the members
    whose extension `read` accepts (none without it) are read as they pass, so a stream is read once; only one run's
    bytes are held at a time."""
    key, start, end, spans, data = None, 0, 0, {}, []
    for member, base, ext in keyed_members(members):
        if base != key:
            if key is not None:
                yield SampleRun(key, spans, start, end, tuple(data))
            key, start, spans, data = base, member.info.offset, {}, []
        spans[ext] = (member.info.offset_data, member.info.size)
        if read is not None and read(ext):
            data.append((ext, member.read()))
        end = _block_end(member.info)
    if key is not None:
        yield SampleRun(key, spans, start, end, tuple(data))


def tar_samples(source: str | Path | BinaryIO, compressed: bool = False) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of every run of a tar read front to back, from a path or a stream
    (webdataset's `tar_file_iterator` + `group_by_keys`, a repeated extension keeping its last)."""
    with open_tar(source, stream=True, compressed=compressed) as tar:
        for run in sample_runs(tar_members(tar), read=read_every):
            yield run.key, dict(run.data)


def _plain_members(data: bytes) -> list[TarMember] | None:
    """The members in `data`, read straight from their 512-byte headers; None when one needs
    tarfile's full reader (pax or GNU long-name headers, links): that path builds a TarFile per
    sample, about 90 us against a few here, and a sample is read per image per step."""
    members, at = [], 0
    while at + tarfile.BLOCKSIZE <= len(data):
        try:
            info = tarfile.TarInfo.frombuf(data[at:at + tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
        except tarfile.EOFHeaderError:
            break
        if info.type not in _PLAIN_TYPES:
            return None
        begin = at + tarfile.BLOCKSIZE
        if begin + info.size > len(data):
            raise tarfile.ReadError(f"member {info.name!r} is cut short")
        info.offset, info.offset_data = at, begin
        members.append(TarMember(info, functools.partial(operator.getitem, data, slice(begin, begin + info.size))))
        at = _block_end(info)
    return members


def sample_at(f: BinaryIO, start: int, end: int) -> tuple[str, dict[str, bytes]]:
    """(key, {ext: bytes}) of the sample whose members lie in bytes [start, end) of the tar in the
    seekable file `f`: one read of that range. Its members are the first run there (`sample_runs`),
    so a stray member after it, with another key, is left out."""
    start, end = int(start), int(end)
    label = f"bytes {start}..{end} of {getattr(f, 'name', 'the shard')}"
    f.seek(start)
    data = f.read(end - start)
    if end <= start or len(data) != end - start:
        raise ManifestError(f"{label} hold no whole sample")
    try:
        members = _plain_members(data)
        if members is None:
            members = list(tar_members(open_tar(io.BytesIO(data))))
        runs = list(sample_runs(members, read=read_every))
    except (tarfile.TarError, EOFError) as e:
        raise ManifestError(f"{label} are not tar members: {e}") from None
    if not runs:
        raise ManifestError(f"{label} hold no sample")
    return runs[0].key, dict(runs[0].data)


def read_sample(f: BinaryIO, start: int, end: int) -> dict[str, bytes]:
    """The members of the sample in bytes [start, end) of the tar in `f`, by extension (see `sample_at`)."""
    return sample_at(f, start, end)[1]
