"""The files under a dataset root, a local folder or `s3://bucket/prefix`, by their names relative to it.

One small surface for what the manifest needs: list a folder (name, size, ETag), read a small file,
write one atomically, open a shard for a sequential read, and a shard's ETag and VersionId. On S3 a
write is one PUT (atomic there); locally a temporary `.partial` file is renamed over the target, so
a reader never sees half a file (and `DataRepo.version` drops an interrupted write's leftovers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from litops.core.s3_retries import naming
from litops.core.shard_index import StorageOptions

S3_SCHEME = "s3://"
READ_BLOCK = 8 << 20  # an S3 shard streams in blocks this size: memory per open shard


@dataclass(frozen=True)
class Listed:
    name: str  # relative to the root, "/"-separated
    size: int
    is_dir: bool
    etag: str = ""  # S3 only, without quotes


def is_s3(url: str) -> bool:
    return str(url).startswith(S3_SCHEME)


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


class DatasetRoot:
    """A dataset root as given (`/data/laion` or `s3://bucket/laion`); names are relative to it."""

    def __init__(self, root: str | Path, storage: StorageOptions | None = None):
        self.root = str(root).rstrip("/") if is_s3(str(root)) else str(root)
        self.storage = storage
        self._fs = None

    @property
    def on_s3(self) -> bool:
        return is_s3(self.root)

    def fs(self):
        if self._fs is None:
            self._fs = (self.storage or StorageOptions()).filesystem()
        return self._fs

    def url(self, name: str) -> str:
        """The URL (or local path) of `name` under the root."""
        return f"{self.root}/{name}" if self.on_s3 else str(Path(self.root) / name)

    def _key(self, name: str = "") -> str:
        path = self.root[len(S3_SCHEME):]
        return f"{path}/{name}" if name else path

    def exists(self) -> bool:
        if self.on_s3:
            with naming(self.root):
                return bool(self.fs().exists(self._key()))
        return Path(self.root).is_dir()

    def listing(self, folder: str = "") -> list[Listed]:
        """The folder's entries in name order; hidden ones (`.name`) are left out; empty when it is missing."""
        prefix = f"{folder}/" if folder else ""
        if self.on_s3:
            try:
                with naming(self.url(folder) if folder else self.root):
                    found = self.fs().ls(self._key(folder), detail=True, refresh=True)
            except FileNotFoundError:
                return []
            base = self._key(folder).rstrip("/") + "/"
            out = [Listed(prefix + e["name"][len(base):].rstrip("/"), int(e.get("size") or 0),
                          e.get("type") == "directory", strip_etag(e.get("ETag")))
                   for e in found if e["name"].startswith(base)]
        else:
            try:
                entries = list(os.scandir(Path(self.root) / folder))
            except (FileNotFoundError, NotADirectoryError):
                return []
            out = [Listed(prefix + e.name, 0 if e.is_dir() else e.stat().st_size, e.is_dir()) for e in entries]
        return sorted((e for e in out if not e.name.rsplit("/", 1)[-1].startswith(".")), key=lambda e: e.name)

    def read_bytes(self, name: str) -> bytes | None:
        """A small file's bytes; None when it does not exist."""
        try:
            if self.on_s3:
                with naming(self.url(name)):
                    return self.fs().cat_file(self._key(name))
            return (Path(self.root) / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace `name` as a whole: one PUT on S3, a rename of a finished temporary file locally."""
        if self.on_s3:
            with naming(self.url(name)):
                self.fs().pipe_file(self._key(name), data)
            return
        path = Path(self.root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def open_stream(self, name: str) -> tuple[BinaryIO, str, str]:
        """(a file to read sequentially, its ETag, its VersionId). On S3 the reads carry the ETag the
        file was opened with, so a shard replaced mid-read fails instead of mixing two versions."""
        if not self.on_s3:
            return open(Path(self.root) / name, "rb"), "", ""
        fs = self.fs()
        fs.invalidate_cache(self._key(name))  # a listing's cached entry has no VersionId: ask the object
        with naming(self.url(name)):
            f = fs.open(self._key(name), "rb", block_size=READ_BLOCK, cache_type="readahead")
        version = f.details.get("VersionId") or ""
        return f, strip_etag(f.details.get("ETag")), "" if version == "null" else version
