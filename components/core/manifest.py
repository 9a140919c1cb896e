"""A dataset's shard manifest: which shards each split holds, their sample counts and identities.

`<root>/manifest.json` lists, per split, every shard (its path under the root, complete samples,
bytes, sha256, S3 ETag and VersionId, the samples readers must skip), and beside each shard
`<name>.idx` holds its offset index (`litops.core.shard_offsets`). With both, a reader knows every
split's size and can fetch any sample with one ranged read, without listing the bucket or reading a
tar header. (`dataset.json`, next to it, is litops' own description of the dataset: attributes,
ingests, split totals.)

The file names its root ".", the folder that holds it, so a copy elsewhere (a DVC checkout, another
bucket) stays valid; a manifest kept apart from its shards (a data repo's record of a bucket
indexed in place) names their root URL instead, and `digest()` covers the shards' content, not their location: the same data
at another path has the same digest.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from litops.core.dataset_files import DatasetRoot, is_s3
from litops.core.s3_retries import naming
from litops.core.shard_offsets import ManifestError, SampleVisitor, index_stream, offsets_bytes, parse_offsets
from litops.core.shard_offsets import read_offsets as read_local_offsets
from litops.core.shard_index import StorageOptions, split_urls
from litops.core.shard_index import read_sample, sample_at  # noqa: F401 - part of this module's API

MANIFEST_NAME = "manifest.json"
INDEX_SUFFIX = ".idx"
FORMAT = "litops-manifest/1"


@dataclass(frozen=True)
class ShardEntry:
    name: str  # the tar's path under the dataset root, e.g. "train/shard-000000.tar"
    samples: int  # complete samples (image + .txt), as litops.core.shard_index.index_members counts them
    bytes: int
    sha256: str = ""  # hex; "" when unknown
    etag: str = ""  # S3 ETag without quotes; "" locally
    version_id: str = ""  # "" unless the bucket is versioned
    excluded: tuple[int, ...] = ()  # indices into the shard's complete samples that readers never yield

    @property
    def usable(self) -> int:
        return self.samples - len(self.excluded)

    @property
    def index_name(self) -> str:
        return self.name + INDEX_SUFFIX

    def to_dict(self) -> dict:
        return {**asdict(self), "excluded": list(self.excluded)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShardEntry":
        excluded = tuple(int(i) for i in d.get("excluded", ()))
        entry = cls(str(d["name"]), int(d["samples"]), int(d["bytes"]), str(d.get("sha256", "")),
                    str(d.get("etag", "")), str(d.get("version_id", "")), excluded)
        if list(excluded) != sorted(set(excluded)) or any(not 0 <= i < entry.samples for i in excluded):
            raise ValueError(f"{entry.name}: excluded must be distinct sample indices in 0..{entry.samples - 1}, "
                             "in order")
        return entry

    def content(self) -> dict:
        """What the digest covers: the bytes' identity, not where they are stored."""
        identity = self.sha256 or f"etag:{self.etag}:{self.version_id}"
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "content": identity,
                "excluded": list(self.excluded)}


@dataclass
class DatasetManifest:
    root: str  # the dataset root URL or folder, as given
    splits: dict[str, list[ShardEntry]]
    exclusions_by_reason: dict[str, int] = field(default_factory=dict)

    def digest(self) -> str:
        """sha256 over a canonical JSON of the splits' shard contents (not the root)."""
        canon = {s: [e.content() for e in entries] for s, entries in self.splits.items()}
        return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def url(self, entry: ShardEntry | str) -> str:
        return DatasetRoot(self.root).url(entry if isinstance(entry, str) else entry.name)

    def index_url(self, entry: ShardEntry) -> str:
        return self.url(entry.index_name)

    def to_json(self) -> str:
        doc = {"format": FORMAT, "root": self.root, "digest": self.digest(),
               "splits": {s: [e.to_dict() for e in entries] for s, entries in sorted(self.splits.items())},
               "exclusions_by_reason": dict(sorted(self.exclusions_by_reason.items()))}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, root: str | None = None, label: str = MANIFEST_NAME) -> "DatasetManifest":
        """Parse a manifest; `root` (where it was read from) replaces the root it names."""
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
            splits = {s: [ShardEntry.from_dict(e) for e in entries] for s, entries in doc["splits"].items()}
            reasons = {str(k): int(v) for k, v in doc.get("exclusions_by_reason", {}).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ManifestError(f"{label} is not a litops manifest: {e}") from None
        recorded = str(doc.get("root", "."))
        return cls(root if root is not None and recorded == "." else recorded, splits, reasons)


def read_manifest(root: str | Path, storage: StorageOptions | None = None) -> DatasetManifest | None:
    """The manifest at `root`, or None when there is none."""
    where = DatasetRoot(root, storage)
    data = where.read_bytes(MANIFEST_NAME)
    if data is None:
        return None
    return DatasetManifest.from_json(data.decode("utf-8", "replace"), where.root, where.url(MANIFEST_NAME))


def write_manifest(manifest: DatasetManifest, storage: StorageOptions | None = None,
                   at: str | Path | None = None) -> str:
    """Write `<root>/manifest.json` in one piece (naming its root "."); its URL. With `at`, a folder
    other than the root, the manifest goes there and names the root as it is."""
    where = DatasetRoot(manifest.root if at is None else at, storage)
    apart = DatasetRoot(manifest.root).root != where.root
    where.write_bytes(MANIFEST_NAME, (manifest if apart else replace(manifest, root=".")).to_json().encode())
    return where.url(MANIFEST_NAME)


def index_shard(url: str, storage: StorageOptions | None = None, name: str | None = None,
                on_sample: SampleVisitor | None = None) -> tuple[ShardEntry, np.ndarray]:
    """One streaming pass over the shard at `url`: its entry (named `name`, default the file name)
    and its offsets. Locally and on S3 every byte passes once, hashed on the way (and shown to
    `on_sample`, see `index_stream`)."""
    parent, _, base = url.rstrip("/").rpartition("/")
    where = DatasetRoot(parent or ".", storage)
    f, etag, version_id = where.open_stream(base)
    with f, naming(url):  # s3fs reads the body block by block, each read retried (litops.core.s3_retries)
        found = index_stream(f, url, on_sample)
    return ShardEntry(name or base, found.samples, found.size, found.sha256, etag, version_id), found.offsets


def write_offsets(root: str | Path, entry: ShardEntry, offsets: np.ndarray, storage: StorageOptions | None = None) -> str:
    """Write `<root>/<entry.name>.idx`; its URL."""
    if len(offsets) != entry.samples + 1:
        raise ManifestError(f"{entry.name}: {len(offsets)} offsets for {entry.samples} samples")
    where = DatasetRoot(root, storage)
    where.write_bytes(entry.index_name, offsets_bytes(offsets))
    return where.url(entry.index_name)


def read_offsets(source, storage: StorageOptions | None = None) -> np.ndarray:
    """The offsets of an `.idx` file: a local path, an s3:// URL or an open binary file."""
    if not (isinstance(source, str) and is_s3(source)):
        try:
            return read_local_offsets(source)
        except FileNotFoundError:
            raise ManifestError(f"no offset index at {source} (`litops data index` writes one)") from None
    parent, _, base = source.rpartition("/")
    data = DatasetRoot(parent, storage).read_bytes(base)
    if data is None:
        raise ManifestError(f"no offset index at {source} (`litops data index` writes one)")
    return parse_offsets(data, source)


@dataclass
class SplitShards:
    """A split's shards in order: URLs, usable samples per shard, and (from a manifest) entries and index URLs."""

    urls: list[str]
    counts: list[int]
    entries: list[ShardEntry] = field(default_factory=list)  # empty without a manifest
    index_urls: list[str] = field(default_factory=list)  # empty without a manifest

    @property
    def total(self) -> int:
        return sum(self.counts)


def load_split(dataset: str | Path, split: str, storage: StorageOptions | None = None,
               memo_path: Path | None = None) -> SplitShards:
    """The split's shards (empty when it has none). With a manifest only the manifest is read; without
    one, `<dataset>/<split>/*.tar` are listed and counted (tar headers; `memo_path` remembers counts)."""
    manifest = read_manifest(dataset, storage)
    if manifest is not None:
        entries = manifest.splits.get(split, [])
        return SplitShards([manifest.url(e) for e in entries], [e.usable for e in entries], list(entries),
                           [manifest.index_url(e) for e in entries])
    urls = split_urls(dataset, split, storage)
    if not urls:
        return SplitShards([], [])
    root = str(dataset).rstrip("/") if is_s3(str(dataset)) else str(dataset)
    print(f"litops: no manifest at {root}: counting samples in {len(urls)} shards "
          f"(litops data index {root} writes one)", file=sys.stderr)
    from litops.core.stream import shard_counts  # torch: only on this path

    return SplitShards(urls, shard_counts(urls, storage, memo_path))
