"""Build or refresh a dataset's shard manifest and offset indexes (`litops.core.manifest`).

Layouts: `<root>/<split>/*.tar` for every split folder, or a flat img2dataset output folder
(`00000.tar`, `00000_stats.json`, ...) whose shards form one split. `litops data index` runs this on
any folder or `s3://bucket/prefix`; `data add` and `data synth` run it on the dataset they wrote.

Reuse: a shard keeps its entry (and its `.idx`) when its name and byte size are unchanged, its
`.idx` exists and, on S3, its ETag is unchanged; the rest are read once each. `data index` on a
local folder re-reads every shard: tars pad to 10 KiB records, so a shard rewritten in place (a
second img2dataset run) often keeps its size, and only its bytes would tell.

img2dataset's `{shard}_stats.json` counts `successes`, the samples it wrote; each has an image and,
when captions were saved, a `.txt`. Where a stats file exists its count must equal the complete
samples in the tar's headers, else the shard was cut, changed after the download, or written
without captions, and indexing fails with one line naming the shard and both counts.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from litops.core import progress
from litops.core.component_cli import UserError
from litops.core.dataset_files import DatasetRoot, Listed
from litops.core.manifest import (INDEX_SUFFIX, MANIFEST_NAME, DatasetManifest, ManifestError, ShardEntry,
                                  index_shard, read_manifest, write_manifest, write_offsets)

if TYPE_CHECKING:
    from litops.core.shard_index import StorageOptions

STATS_SUFFIX = "_stats.json"


@dataclass
class ListedShard:
    name: str
    size: int
    etag: str
    has_index: bool
    stats: str | None  # the name of its `_stats.json`, when there is one


@dataclass
class Refreshed:
    manifest: DatasetManifest
    url: str  # of manifest.json
    written: bool  # False: the manifest on disk was already this one
    indexed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def _shards_in(files: list[Listed]) -> list[ListedShard]:
    names = {f.name for f in files if not f.is_dir}
    out = []
    for f in files:
        if not f.is_dir and f.name.endswith(".tar"):
            stats = f.name[: -len(".tar")] + STATS_SUFFIX
            out.append(ListedShard(f.name, f.size, f.etag, f.name + INDEX_SUFFIX in names,
                                   stats if stats in names else None))
    return out


def find_shards(where: DatasetRoot, flat_split: str | None = None, required: bool = True) -> dict[str, list[ListedShard]]:
    """The shards per split: one split folder each, or the root's own tars as split `flat_split` (train)."""
    top = where.listing()
    flat = _shards_in(top)
    by_split = {d.name: s for d in top if d.is_dir and (s := _shards_in(where.listing(d.name)))}
    if flat and by_split:
        raise UserError(f"{where.root} holds both .tar shards and split folders ({', '.join(by_split)}): "
                        "index one layout or the other")
    if flat:
        return {flat_split or "train": flat}
    if flat_split and by_split:
        raise UserError(f"--split names the split of a flat folder of shards; {where.root} has split folders "
                        f"({', '.join(by_split)})")
    if not by_split and required:
        raise UserError(f"no .tar shards in {where.root} or in its split folders (<split>/*.tar)")
    return by_split


def _check_stats(where: DatasetRoot, shard: ListedShard, entry: ShardEntry) -> None:
    raw = where.read_bytes(shard.stats)
    try:
        successes = int(json.loads(raw)["successes"])
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{where.url(shard.stats)} is not an img2dataset stats file (no 'successes' count): {e}") from None
    if successes != entry.samples:
        raise UserError(f"{where.url(shard.name)}: {shard.stats} counts {successes} samples, the tar headers "
                        f"hold {entry.samples} complete samples (image + .txt)")


def _old_manifest(where: DatasetRoot, quiet: bool) -> DatasetManifest | None:
    try:
        return read_manifest(where.root, where.storage)
    except ManifestError as e:
        if not quiet:
            print(f"litops: {e}; rebuilding it", file=sys.stderr)
        return None


def refresh_manifest(root: str | Path, storage: StorageOptions | None = None, flat_split: str | None = None,
                     reuse: bool = True, rewritten: frozenset[str] = frozenset(), quiet: bool = True,
                     required: bool = False) -> Refreshed:
    """Index the shards under `root` that need it, then write the manifest if it changed.

    `rewritten`: names of shards the caller just wrote again (never reused, whatever their size).
    `quiet`: no progress bar (a caller with its own). Raises UserError on a stats mismatch.
    """
    where = DatasetRoot(root, storage)
    layout = find_shards(where, flat_split, required)
    old = _old_manifest(where, quiet)
    known = {e.name: e for entries in (old.splits.values() if old else []) for e in entries}
    todo = [s for shards in layout.values() for s in shards if not _reusable(known.get(s.name), s, reuse, rewritten)]
    fresh: dict[str, ShardEntry] = {}
    bar = progress.start(f"index {where.root}", len(todo), unit="shard", silent=quiet)
    t0, read, samples = time.monotonic(), 0, 0
    for shard in todo:
        entry, offsets = index_shard(where.url(shard.name), where.storage, shard.name)
        if shard.stats is not None:
            _check_stats(where, shard, entry)
        write_offsets(where.root, entry, offsets, where.storage)
        entry = _keep_exclusions(known.get(shard.name), entry, quiet)
        fresh[shard.name] = entry
        read, samples = read + entry.bytes, samples + entry.samples
        bar.update(1, samples=samples, MB_per_s=round(read / 1e6 / max(time.monotonic() - t0, 1e-9), 1))
    bar.close()
    splits = {split: [fresh.get(s.name) or known[s.name] for s in shards] for split, shards in sorted(layout.items())}
    manifest = DatasetManifest(where.root, splits, dict(old.exclusions_by_reason) if old else {})
    unchanged = old is not None and replace(old, root=".").to_json() == replace(manifest, root=".").to_json()
    url = where.url(MANIFEST_NAME) if unchanged else write_manifest(manifest, where.storage)
    return Refreshed(manifest, url, not unchanged, [s.name for s in todo],
                     [s.name for shards in layout.values() for s in shards if s.name not in fresh])


def _reusable(entry: ShardEntry | None, shard: ListedShard, reuse: bool, rewritten: frozenset[str]) -> bool:
    return (reuse and entry is not None and shard.name not in rewritten and shard.has_index
            and entry.bytes == shard.size and entry.etag == shard.etag)


def _keep_exclusions(old: ShardEntry | None, new: ShardEntry, quiet: bool) -> ShardEntry:
    """A re-read shard keeps its excluded samples while its bytes are the same; a changed one loses them."""
    if old is None or not old.excluded:
        return new
    if old.content() == replace(new, excluded=old.excluded).content():
        return replace(new, excluded=old.excluded)
    if not quiet:
        print(f"litops: {new.name} changed: its {len(old.excluded)} excluded samples no longer apply", file=sys.stderr)
    return new


def index_source(source: str, storage: StorageOptions | None = None, split: str | None = None) -> dict:
    """`litops data index SOURCE`: the manifest and offset indexes of shards already in a folder or
    an s3:// prefix. Keys: source, manifest, digest, splits {split: {shards, samples, bytes}},
    indexed, reused, written, seconds."""
    t0 = time.perf_counter()
    where = DatasetRoot(source, storage)
    if not where.on_s3 and Path(source).is_file():
        raise UserError(f"{source} is a file: index the folder that holds the shards")
    if not where.exists():
        raise UserError(f"no such folder or S3 prefix: {source}")
    r = refresh_manifest(where.root, where.storage, flat_split=split, reuse=where.on_s3, quiet=False, required=True)
    splits = {s: {"shards": len(entries), "samples": sum(e.usable for e in entries), "bytes": sum(e.bytes for e in entries)}
              for s, entries in r.manifest.splits.items()}
    return {"source": where.root, "manifest": r.url, "digest": r.manifest.digest(), "splits": splits,
            "indexed": len(r.indexed), "reused": len(r.reused), "written": r.written,
            "seconds": round(time.perf_counter() - t0, 3)}
