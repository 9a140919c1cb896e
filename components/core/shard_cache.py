"""A node-local shard cache: all ranks and reader processes of one machine read S3 shards from one folder.

`ShardCache.local_path(url, size, etag)` returns a complete local copy of an `s3://` shard,
downloaded at most once per cache folder however many processes ask at the same time:

- `shards/<entry>` holds complete copies only. A download streams to `partial/` (the same
  filesystem) and is renamed into place, so a killed download never looks complete; the next
  downloader of that shard deletes what it left.
- `locks/<entry>.lock` is an `fcntl.flock` lock per shard: the one holding it downloads, the others
  wait, then find the copy (the check is repeated once the lock is taken).
- An entry's name is a hash of URL, ETag and version id, plus the shard's basename: a shard
  re-uploaded under the same URL gets a new entry, and the name is safe on any filesystem.
- Before a copy is trusted, the object's size, ETag (and version id) are compared with the indexed
  ones, before and after the download; a difference raises `ShardChangedError` and keeps nothing.
- LRU: a hit refreshes the entry's mtime; after a download the least recently used entries go
  until the folder holds at most `limit_bytes`. Deleting a file another process has open is safe
  on POSIX, but a path handed out and not yet opened can go: the limit should hold at least the
  shards a node has open at once (ranks x readers x open shards per reader).

Memory is bounded: downloads stream to disk (boto3's transfer manager). Retries are botocore's
(`standard` mode, `storage.max_attempts` per request) and the transfer manager's, which requests a
body cut short again; never a loop here (litops.core.s3_retries). A fault that outlives them fails
with one line naming the shard. Lock files (empty) are kept: deleting a lock file while a process
waits on it would let two processes download at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litops.core.component_cli import UserError
from litops.core.s3_retries import unavailable
from litops.core.shard_index import S3_SCHEME, StorageOptions, is_s3


class ShardChangedError(UserError, ValueError):
    """A shard's bytes are not the ones its index describes: retrying cannot help, so a user error."""


@dataclass
class CacheStats:
    """Counts of this process (a forked or spawned reader starts from zero)."""

    downloads: int = 0
    hits: int = 0
    bytes_downloaded: int = 0
    evictions: int = 0


# Lock descriptors held right now. A child forked while one is held inherits a copy, and the lock
# would then live as long as the child: the child closes its copies (closing, unlike LOCK_UN, does
# not release the parent's lock). Set operations are atomic under the GIL, so no lock guards this.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCKS):
        with suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


@contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path`; yields False (without waiting) when `blocking` is off and it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    _HELD_LOCKS.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)  # before forgetting the fd: a fork in between inherits no lock
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)


def entry_name(url: str, etag: str = "", version_id: str = "") -> str:
    digest = hashlib.sha1(f"{url}\0{_bare(etag)}\0{version_id}".encode()).hexdigest()[:20]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-80:]
    return f"{digest}-{base}"


def _bare(etag: str) -> str:
    return (etag or "").strip().strip('"')


def _changed(url: str, differences: list[str]) -> ShardChangedError:
    return ShardChangedError(f"{url} changed since it was indexed: {', '.join(differences)}; "
                             "re-run `litops data add`/`litops data index`")


@dataclass
class _ProcessState:
    """What must not cross a fork: locks, the S3 client, the prefetch thread."""

    pid: int = field(default_factory=os.getpid)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None
    prefetch: "_Prefetch | None" = None


class ShardCache:
    """See the module docstring. `limit_bytes <= 0`: unbounded."""

    def __init__(self, cache_dir: Path, limit_bytes: int, storage: StorageOptions | None = None):
        self.cache_dir, self.limit_bytes = Path(cache_dir), int(limit_bytes)
        self.storage = storage or StorageOptions()
        self.shards_dir, self.partial_dir, self.locks_dir = (self.cache_dir / d for d in ("shards", "partial", "locks"))
        for d in (self.shards_dir, self.partial_dir, self.locks_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._state = _ProcessState()
        self._warned_large = False

    def __getstate__(self) -> dict:  # a spawned reader builds its own client and thread
        return {**self.__dict__, "_state": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._state, self.stats = _ProcessState(), CacheStats()

    def __enter__(self) -> "ShardCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _process(self) -> _ProcessState:
        """This process's state; a forked child replaces what it inherited (the parent's threads are gone)."""
        if self._state.pid != os.getpid():
            self._state, self.stats = _ProcessState(), CacheStats()
        return self._state

    # ------------------------------------------------------------------ lookups

    def local_path(self, url: str, size: int, etag: str = "", version_id: str = "") -> Path:
        """A complete local copy of `url` (a local path is returned as is, once its size is checked)."""
        if not is_s3(url):
            actual = os.path.getsize(url)
            if actual != size:
                raise _changed(url, [f"size {size} != {actual}"])
            return Path(url)
        state = self._process()
        if state.prefetch is not None:
            state.prefetch.used(url)
        path, downloaded = self._fetch(url, size, etag, version_id)
        if not downloaded:
            with state.lock:
                self.stats.hits += 1
        return path

    def _fetch(self, url: str, size: int, etag: str, version_id: str) -> tuple[Path, bool]:
        name = entry_name(url, etag, version_id)
        path = self.shards_dir / name
        if self._touch(path):
            return path, False
        with _flock(self.locks_dir / f"{name}.lock"):
            if self._touch(path):  # another process fetched it while this one waited
                return path, False
            for stale in self.partial_dir.glob(f"{name}.*"):  # left by a killed download of this shard
                stale.unlink(missing_ok=True)
            self._download(url, size, etag, version_id, path)
        with self._process().lock:
            self.stats.downloads += 1
            self.stats.bytes_downloaded += size
        self._evict(keep=path)
        return path, True

    @staticmethod
    def _touch(path: Path) -> bool:
        """Mark a complete entry as just used; False when there is none. Explicit nanoseconds: the
        kernel's own "now" is coarse, and LRU order needs to tell close uses apart."""
        now = time.time_ns()
        try:
            os.utime(path, ns=(now, now))
            return True
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ S3

    def _client(self):
        state = self._process()
        with state.lock:
            if state.client is None:
                state.client = self.storage.client()
            return state.client

    def _download(self, url: str, size: int, etag: str, version_id: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        client = self._client()
        bucket, _, key = url[len(S3_SCHEME):].partition("/")
        extra = {"VersionId": version_id} if version_id else {}
        fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".part", dir=self.partial_dir)
        os.close(fd)
        try:
            self._verify(url, size, etag, version_id, client.head_object(Bucket=bucket, Key=key, **extra))
            client.download_file(bucket, key, tmp, ExtraArgs=extra or None)
            actual = os.path.getsize(tmp)
            if actual != size:
                raise _changed(url, [f"size {size} != {actual}"])
            # replaced while it downloaded: the copy may mix old and new bytes
            self._verify(url, size, etag, version_id, client.head_object(Bucket=bucket, Key=key, **extra))
            os.replace(tmp, path)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchVersion"):
                gone = f"version {version_id} no longer exists" if version_id else "it no longer exists"
                raise _changed(url, [gone]) from e
            raise unavailable(url, e) or OSError(f"cannot download {url}: {e}") from e
        except Exception as e:
            if (failure := unavailable(url, e)) is None:
                raise
            raise failure from e
        finally:
            Path(tmp).unlink(missing_ok=True)  # gone after the rename; never keep a partial or mismatched copy
        self._touch(path)

    @staticmethod
    def _verify(url: str, size: int, etag: str, version_id: str, head: dict) -> None:
        differences = []
        if int(head["ContentLength"]) != size:
            differences.append(f"size {size} != {head['ContentLength']}")
        if etag and _bare(head.get("ETag", "")) != _bare(etag):
            differences.append(f"ETag {_bare(etag)} != {_bare(head.get('ETag', ''))}")
        if version_id and head.get("VersionId", "") != version_id:
            differences.append(f"version {version_id} != {head.get('VersionId', '')}")
        if differences:
            raise _changed(url, differences)

    # ------------------------------------------------------------------ LRU

    def _evict(self, keep: Path) -> None:
        if self.limit_bytes <= 0:
            return
        # one evictor at a time: two would count the same deletions and evict more than needed
        with _flock(self.cache_dir / "evict.lock"):
            entries = []
            for e in os.scandir(self.shards_dir):
                with suppress(FileNotFoundError):
                    st = e.stat()
                    entries.append((st.st_mtime_ns, e.name, st.st_size))
            total = sum(size for _, _, size in entries)
            kept = next((size for _, name, size in entries if name == keep.name), 0)
            if kept > self.limit_bytes and not self._warned_large:
                self._warned_large = True
                warnings.warn(f"shard cache {self.cache_dir}: {keep.name} ({kept} bytes) is larger than the cache "
                              f"limit ({self.limit_bytes} bytes); it is cached anyway", stacklevel=4)
            for mtime, name, size in sorted(entries):
                if total <= self.limit_bytes:
                    break
                if name != keep.name and self._evict_one(name, mtime):
                    total -= size

    def _evict_one(self, name: str, mtime_ns: int) -> bool:
        with _flock(self.locks_dir / f"{name}.lock", blocking=False) as locked:
            if not locked:  # a process is fetching or re-checking it
                return False
            path = self.shards_dir / name
            try:
                if path.stat().st_mtime_ns != mtime_ns:  # used since it was listed
                    return False
                path.unlink()
            except FileNotFoundError:
                return False
        with self._process().lock:
            self.stats.evictions += 1
        return True

    # ------------------------------------------------------------------ prefetch

    def prefetch(self, items: Iterable[tuple[str, int, str, str]], ahead: int = 2) -> None:
        """Fetch the shards `items` (url, size, etag, version_id) in order in a background thread, one
        at a time and at most `ahead` past the last of them asked for through `local_path`; replaces
        any previous plan.

        Safe with forked readers: the thread is started here, in the process that calls this (a
        reader calls it after the fork), and a fork copies no thread: a child that inherits a cache
        with a plan starts from a fresh state with none (see `_process`), and lock descriptors the
        parent held at the fork are closed in the child."""
        state = self._process()
        if state.prefetch is not None:
            state.prefetch.close()
        state.prefetch = _Prefetch(self, items, ahead)

    def close(self) -> None:
        """Stop prefetching (a download under way finishes; it is atomic either way)."""
        state = self._process()
        if state.prefetch is not None:
            state.prefetch.close()
            state.prefetch = None


class _Prefetch:
    def __init__(self, cache: ShardCache, items: Iterable[tuple[str, int, str, str]], ahead: int):
        self.cache, self.items, self.ahead = cache, iter(items), max(1, int(ahead))
        self.cond = threading.Condition()
        self.pending: dict[str, int] = {}  # url -> position in the plan, fetched or about to be
        self.used_upto = 0  # positions below it were asked for
        self.closed = False
        self.thread = threading.Thread(target=self.run, name="litops-shard-prefetch", daemon=True)
        self.thread.start()

    def run(self) -> None:
        for i, (url, size, etag, version_id) in enumerate(self.items):
            with self.cond:
                self.pending.setdefault(url, i)
                self.cond.wait_for(lambda: self.closed or i < self.used_upto + self.ahead)
                if self.closed:
                    return
            try:
                self.cache._fetch(url, size, etag, version_id)
            except Exception as e:  # noqa: BLE001 - the reader's own local_path raises it again, where it matters
                warnings.warn(f"prefetch of {url} failed: {e}", stacklevel=1)

    def used(self, url: str) -> None:
        with self.cond:
            i = self.pending.pop(url, None)
            if i is not None and i >= self.used_upto:
                self.used_upto = i + 1
                self.pending = {u: j for u, j in self.pending.items() if j > i}
                self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join()
