"""Deterministic WebDataset tar shards (img2dataset layout: key.jpg, key.txt, key.json).

Tars are written with `tarfile` directly: mtime 0, uid/gid 0, no user names, fixed mode,
members in sorted order, so the same samples always give the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from litops.core.shard_index import open_tar, tar_members, tar_samples

SHARD_PATTERN = "{prefix}-{index:06d}.tar"
SYNTH_PREFIX = "shard"
SPLITS = ("train", "val", "test")

# WebDataset's own key/extension split: the key is everything up to the first dot of the
# basename (directories included), the extension is the rest.
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def split_key(name: str) -> tuple[str, str] | None:
    """('dir/key', 'ext') for a member or file name; None if it has no extension."""
    m = _KEY_RE.match(name)
    if not m:
        return None
    return m.group(1), m.group(2)


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _fast_header(name: str, size: int) -> bytes | None:
    """The 512-byte GNU header tarfile writes for `_tarinfo(name, size)`, built directly
    (tarfile's pure-Python header code costs ~50 us a member); None if the name needs
    tarfile's long-name handling."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(raw) >= 100 or size >= 8**11:
        return None
    buf = bytearray(512)
    buf[0 : len(raw)] = raw
    buf[100:108] = b"0000644\0"
    buf[108:116] = b"0000000\0"
    buf[116:124] = b"0000000\0"
    buf[124:136] = b"%011o\0" % size
    buf[136:148] = b"00000000000\0"
    buf[148:156] = b"        "
    buf[156:157] = b"0"
    buf[257:265] = tarfile.GNU_MAGIC
    chksum = sum(buf)
    buf[148:155] = b"%06o\0" % chksum
    return bytes(buf)


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A GNU-format tar of the members, byte-identical to what `tarfile` writes with
    `_tarinfo` headers (checked by the tests)."""
    out = []
    total = 0
    for name, data in members:
        header = _fast_header(name, len(data))
        if header is None:
            header = _tarinfo(name, len(data)).tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")
        pad = (-len(data)) % tarfile.BLOCKSIZE
        out += [header, data, b"\0" * pad]
        total += len(header) + len(data) + pad
    end = 2 * tarfile.BLOCKSIZE
    total += end
    end += (-total) % tarfile.RECORDSIZE
    out.append(b"\0" * end)
    return b"".join(out)


def write_tar(path: Path, members: Iterable[tuple[str, bytes]], sort: bool = True) -> int:
    """Write (name, bytes) members to `path` atomically; returns the number of members."""
    items = list(members)
    if sort:
        items.sort(key=lambda kv: kv[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(tar_bytes(items))
    os.replace(tmp, path)
    return len(items)


def write_tar_with_tarfile(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """The reference writer (tests compare `tar_bytes` against it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    Path(path).write_bytes(buf.getvalue())


def write_shards(
    out_dir: Path,
    samples: Iterable[tuple[str, dict[str, bytes]]],
    shard_size: int,
    prefix: str = SYNTH_PREFIX,
) -> list[Path]:
    """Group (key, {ext: bytes}) samples into shards of `shard_size` samples each."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    paths: list[Path] = []
    batch: list[tuple[str, bytes]] = []
    n_in_batch = 0

    def flush() -> None:
        nonlocal batch, n_in_batch
        if n_in_batch:
            p = out_dir / SHARD_PATTERN.format(prefix=prefix, index=len(paths))
            write_tar(p, batch)
            paths.append(p)
        batch, n_in_batch = [], 0

    for key, files in samples:
        for ext in sorted(files):
            batch.append((f"{key}.{ext}", files[ext]))
        n_in_batch += 1
        if n_in_batch >= shard_size:
            flush()
    flush()
    return paths


def shard_paths(dataset_dir: Path, split: str) -> list[Path]:
    d = Path(dataset_dir) / split
    return sorted(d.glob("*.tar")) if d.is_dir() else []


def tar_keys(path: Path) -> set[str]:
    """Sample keys in a shard, from its headers only, split as ingestion names samples (`split_key`)."""
    with open_tar(path, compressed=True) as tar:
        return {kx[0] for m in tar_members(tar) if m.info.isfile() and (kx := split_key(m.info.name))}


def dataset_keys(dataset_dir: Path) -> set[str]:
    keys: set[str] = set()
    for split in SPLITS:
        for p in shard_paths(dataset_dir, split):
            keys |= tar_keys(p)
    return keys


def read_samples(path: Path) -> Iterator[dict[str, Any]]:
    """Samples of one shard as {'__key__': key, ext: bytes}, as the tar reader groups them."""
    for key, files in tar_samples(path, compressed=True):
        yield {"__key__": key, **files}
