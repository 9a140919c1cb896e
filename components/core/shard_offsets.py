"""A shard's offset index: where each complete sample's members lie in the tar, found in one pass.

The index of a shard with n complete samples (`shard_index.index_members` defines complete: an
image and a `.txt`) is n + 1 little-endian uint64: the offset of the tar header of each sample's
first member, then the offset just past the last sample's last member (a multiple of 512). All of
sample i's members lie in bytes [off[i], off[i+1]); members of incomplete samples may lie between
two samples. Samples are grouped as `index_members` groups them: a run of consecutive members with
the same key (webdataset's `base_plus_ext`), so the two always agree on the count.

`index_stream` reads the tar once, front to back, through `tarfile`'s stream mode (long names and
pax headers handled as tarfile handles them), hashing every byte as it passes: memory is one read
block plus the shard's member headers, whatever the shard's size.
"""

from __future__ import annotations

import hashlib
import io
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


def _block_end(info: tarfile.TarInfo) -> int:
    return info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _keyed_members():
    """litops.core.shard_index.keyed_members, imported when first needed (it loads webdataset)."""
    from litops.core.shard_index import keyed_members

    return keyed_members


def _is_complete(exts: set[str]) -> bool:
    from litops.core.shard_index import IMAGE_EXTS

    return "txt" in exts and any(e in exts for e in IMAGE_EXTS)


SampleVisitor = Callable[[Optional[int], str, list[tuple[str, bytes]]], None]


def index_stream(f: BinaryIO, label: str, on_sample: SampleVisitor | None = None) -> StreamIndex:
    """The offsets, size and sha256 of the tar read from `f` (sequential reads only).

    `on_sample(index, key, [(ext, bytes), ...])` sees every run of members that share a key, in tar
    order, as the index groups them: index is its place among the complete samples, None for an
    incomplete one. Only one run's bytes are held at a time (validating in place needs the bytes
    and the index from the same single pass, so a bucket is read once)."""
    reader, keyed_members = _HashingReader(f), _keyed_members()
    starts: list[int] = []
    end = 0
    key, exts, run_start, run_end = None, set(), 0, 0
    members: list[tuple[str, bytes]] = []

    def close_run() -> None:
        nonlocal end
        complete = _is_complete(exts)
        if on_sample is not None:
            on_sample(len(starts) if complete else None, key, members)
        if complete:
            starts.append(run_start)
            end = run_end

    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=READ_SIZE) as tar:
            for info, base, ext in keyed_members(tar):
                if base != key:
                    if key is not None:
                        close_run()
                    key, exts, run_start, members = base, set(), info.offset, []
                exts.add(ext.lower())
                if on_sample is not None:
                    members.append((ext, tar.extractfile(info).read()))
                run_end = _block_end(info)
            if key is not None:
                close_run()
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


_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


def _plain_headers(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]] | None:
    """(member, its bytes) of every member in `data`, read straight from the 512-byte headers; None
    when one needs tarfile's full reader (pax or GNU long-name headers, links): that path builds a
    TarFile per sample, about 90 us against a few here, and a sample is read per image per step."""
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
        members.append((info, data[begin:begin + info.size]))
        at = begin + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return members


def _tarfile_members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [(info, tar.extractfile(info).read()) for info in tar if info.isfile()]


def sample_at(f: BinaryIO, start: int, end: int) -> tuple[str, dict[str, bytes]]:
    """(key, {ext: bytes}) of the sample whose members lie in bytes [start, end) of the tar in the
    seekable file `f`: one read of that range. Members are taken as `index_members` groups them: the
    first file member's key, up to the first member with another key (a stray member after it)."""
    start, end = int(start), int(end)
    label = f"bytes {start}..{end} of {getattr(f, 'name', 'the shard')}"
    f.seek(start)
    data = f.read(end - start)
    if end <= start or len(data) != end - start:
        raise ManifestError(f"{label} hold no whole sample")
    try:
        members = _plain_headers(data)
        if members is None:
            members = _tarfile_members(data)
    except (tarfile.TarError, EOFError) as e:
        raise ManifestError(f"{label} are not tar members: {e}") from None
    key, files, keyed_members = None, {}, _keyed_members()
    content = dict((id(info), body) for info, body in members)
    for info, base, ext in keyed_members(info for info, _ in members):
        if key is not None and base != key:
            break
        key = base
        files[ext.lower()] = content[id(info)]
    if key is None:
        raise ManifestError(f"{label} hold no sample")
    return key, files


def read_sample(f: BinaryIO, start: int, end: int) -> dict[str, bytes]:
    """The members of the sample in bytes [start, end) of the tar in `f`, by extension (see `sample_at`)."""
    return sample_at(f, start, end)[1]
