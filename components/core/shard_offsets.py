"""A shard's offset index: where each complete sample's members lie in the tar, found in one pass.

The index of a shard with n complete samples (`shard_index.index_members` defines complete: an
image and a `.txt`) is n + 1 little-endian uint64: the offset of the tar header of each sample's
first member, then the offset just past the last sample's last member (a multiple of 512). All of
sample i's members lie in bytes [off[i], off[i+1]); members of incomplete samples may lie between
two samples. Samples are grouped as `index_members` groups them: a run of consecutive members with
the same key (webdataset's `base_plus_ext`), so the two always agree on the count.

`index_stream` reads the tar once, front to back, through the tar reader (`shard_index.sample_runs`
on a stream: long names and pax headers handled as tarfile handles them), hashing every byte as it
passes: memory is one read block plus the shard's member headers, whatever the shard's size.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import numpy as np

from litops.core.component_cli import UserError

READ_SIZE = 1 << 20
OFFSET_DTYPE = np.dtype("<u8")


class ManifestError(UserError):
    """A shard, an index or a manifest that cannot be used as it is; the message names it."""


@dataclass(frozen=True)
class StreamIndex:
    offsets: np.ndarray  # uint64, samples + 1
    size: int  # bytes read: the whole file
    sha256: str

    @property
    def samples(self) -> int:
        return len(self.offsets) - 1


class _HashingReader:
    """Counts and hashes what tarfile reads through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


SampleVisitor = Callable[[Optional[int], str, list[tuple[str, bytes]]], None]


def index_stream(f: BinaryIO, label: str, on_sample: SampleVisitor | None = None) -> StreamIndex:
    """The offsets, size and sha256 of the tar read from `f` (sequential reads only).

    `on_sample(index, key, [(ext, bytes), ...])` sees every run of members that share a key, in tar
    order, as the index groups them: index is its place among the complete samples, None for an
    incomplete one. Only one run's bytes are held at a time (validating in place needs the bytes
    and the index from the same single pass, so a bucket is read once)."""
    from litops.core.shard_index import open_tar, read_every, sample_runs, tar_members  # it imports this module

    reader = _HashingReader(f)
    starts: list[int] = []
    end = 0
    try:
        with open_tar(reader, stream=True) as tar:
            for run in sample_runs(tar_members(tar), read=read_every if on_sample is not None else None):
                if on_sample is not None:
                    on_sample(len(starts) if run.complete else None, run.key, list(run.data))
                if run.complete:
                    starts.append(run.start)
                    end = run.end
    except (tarfile.TarError, EOFError) as e:
        raise ManifestError(f"{label} is not a readable tar: {e}") from None
    while reader.read(READ_SIZE):  # the end-of-archive blocks and record padding tarfile left unread
        pass
    offsets = np.array(starts + [end], dtype=np.uint64)
    return StreamIndex(offsets, reader.size, reader.sha.hexdigest())


def offsets_bytes(offsets: np.ndarray) -> bytes:
    return np.asarray(offsets, dtype=OFFSET_DTYPE).tobytes()


def parse_offsets(data: bytes, label: str) -> np.ndarray:
    """An index file's offsets, checked: whole uint64s, at least one, never decreasing."""
    if not data or len(data) % OFFSET_DTYPE.itemsize:
        raise ManifestError(f"{label} is not an offset index ({len(data)} bytes, not a whole number of uint64)")
    offsets = np.frombuffer(data, dtype=OFFSET_DTYPE).astype(np.uint64)
    if len(offsets) > 1 and bool((np.diff(offsets.astype(np.int64)) <= 0).any()):
        raise ManifestError(f"{label} is not an offset index (offsets do not increase)")
    return offsets


def read_offsets(source: str | Path | BinaryIO) -> np.ndarray:
    """The offsets of an `.idx` file (a local path or an open binary file)."""
    if isinstance(source, (str, Path)):
        return parse_offsets(Path(source).read_bytes(), str(source))
    return parse_offsets(source.read(), getattr(source, "name", "offset index"))
