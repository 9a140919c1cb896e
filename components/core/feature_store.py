"""The locked-tower feature cache's contract, shared by the train and data components: where a
dataset's feature files live, what keys them, the cache's status as data, and the few operations
on the files (litops.train.feature_cache builds them; litops.data.versioning versions them).

A dataset whose shards are local caches beside it on local disk (`D/../features/<D.name>/`, or
`<data repo>/features/<name>/`, which the data component versions with DVC). A dataset whose shards
stay in S3 (`data add --in-place`, or an `s3://` dataset) caches beside them in the same bucket:
`s3://bucket/<parent>/features/<name>/`, one object per shard, so every node and every later run
reads them from where the data is and nothing is copied into a home volume or the data repo.

On S3 a file is one PUT (atomic), its `.json` description is written after it, and readers fetch
the files through the node's shard cache by the size and ETag one LIST gave.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litops.core.dataset_files import DatasetRoot, is_s3

if TYPE_CHECKING:  # torch, through these: seconds the data component's light steps need not wait
    import torch

    from litops.core.shard_index import StorageOptions
    from litops.core.stream import ShardRef

FEATURES_DIR = "features"
CACHE_FORMAT = 2  # 2: one file per shard, images decoded straight to the tower's input size

# The cache's status in a run: every file reused | some encoded | cannot apply (its reason is
# shown) | switched off (train.feature_cache=false) | nothing to cache (the image tower trains).
HIT, BUILT, DISABLED, OFF, NOT_APPLICABLE = "hit", "built", "disabled", "off", "n/a"


@dataclass
class FeatureCache:
    feature_files: list[ShardRef] | None  # one per shard of the split, in its order; None when the cache does not apply
    status: str  # HIT | BUILT | DISABLED | OFF | NOT_APPLICABLE
    encoded: int  # shards encoded this run (by all ranks)
    reused: int  # shards whose file already existed


def preprocessing_spec(tower) -> dict[str, Any]:
    """What, besides the weights, decides a tower's outputs for a shard's images."""
    spec = {"format": CACHE_FORMAT, "input_size": int(tower.input_size),
            "resize": "centre-square-crop, bicubic to input size", "mean": list(tower.mean),
            "std": list(tower.std), "dtype": "float32"}
    if getattr(tower, "pooled_stages", ()):  # other outputs of the same weights (absent: keys stay as they were)
        spec["pooled_stages"] = list(tower.pooled_stages)
    return spec


def shard_key(digest: str, tower_fp: str, prep: dict[str, Any]) -> str:
    """A feature file's name: the shard's sha256, the tower's fingerprint and the preprocessing."""
    blob = json.dumps({"shard": digest, "tower": tower_fp, "preprocessing": prep}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def features_root(data_root: str | Path) -> str:
    """The feature folder of the dataset whose shards live under `data_root` (see the module docstring)."""
    if is_s3(str(data_root)):
        path = str(data_root)[len("s3://"):].strip("/")
        bucket, _, prefix = path.partition("/")
        parent, _, name = prefix.rpartition("/")
        return "s3://" + "/".join(p for p in (bucket, parent, FEATURES_DIR, name or bucket) if p)
    d = Path(data_root).resolve()
    if d.parent.name == "datasets":  # <data repo>/datasets/<name> -> <data repo>/features/<name>
        return str(d.parent.parent / FEATURES_DIR / d.name)
    return str(d.parent / FEATURES_DIR / d.name)


class FeatureStore:
    """The feature files of one dataset, by their name (`<key>.pt`), with `<key>.json` beside each."""

    def __init__(self, root: str, storage: StorageOptions | None = None):
        self.files = DatasetRoot(root, storage)
        self.root = self.files.root

    def url(self, name: str) -> str:
        return self.files.url(name)

    def holding(self, names: list[str], samples: list[int]) -> list[bool]:
        """Whether each `names[j]` exists and holds one row per sample (`samples[j]`)."""
        if not self.files.on_s3:
            return [_local_holds(Path(self.url(n)), s) for n, s in zip(names, samples)]
        present = {e.name for e in self.files.listing()}
        return [n in present and _json_samples(self.files.read_bytes(_json_name(n))) == s
                for n, s in zip(names, samples)]

    def present(self, names: list[str]) -> set[str]:
        """Those of `names` that exist (one LIST on S3)."""
        if not self.files.on_s3:
            return {n for n in names if Path(self.url(n)).is_file()}
        return {e.name for e in self.files.listing()} & set(names)

    def store(self, name: str, keys: list[str], features: torch.Tensor, provenance: dict[str, Any]) -> None:
        """The file, then its description: a description names a complete file."""
        import torch

        from litops.core.checkpoint import atomic_save

        blob = {"keys": keys, "features": features, **provenance}
        about = json.dumps({"key": Path(name).stem, **provenance, "samples": len(keys),
                            "feature_dim": int(features.shape[1])}, indent=2).encode()
        if self.files.on_s3:
            buffer = io.BytesIO()
            torch.save(blob, buffer)
            self.files.write_bytes(name, buffer.getvalue())
            self.files.write_bytes(_json_name(name), about)
            return
        path = Path(self.url(name))
        atomic_save(blob, path)
        _write_local(path.with_suffix(".json"), about)

    def refs(self, names: list[str]) -> list[ShardRef]:
        """What a reader needs to fetch each file: its URL, and on S3 its size and ETag (one LIST)."""
        from litops.core.stream import ShardRef

        if not self.files.on_s3:
            return [ShardRef(self.url(n)) for n in names]
        listed = {e.name: e for e in self.files.listing()}
        return [ShardRef(self.url(n), listed[n].size, listed[n].etag) if n in listed else ShardRef(self.url(n))
                for n in names]


def _json_name(name: str) -> str:
    return str(Path(name).with_suffix(".json"))


def _json_samples(data: bytes | None) -> int | None:
    try:
        return int(json.loads(data)["samples"]) if data else None
    except (ValueError, KeyError, TypeError):
        return None


def _local_holds(path: Path, samples: int) -> bool:
    """A readable file with one row per sample. Its name already carries the shard's digest, and
    the reader checks the keys when it streams them, so the shard is not read."""
    import torch

    if not path.is_file():
        return False
    try:  # mmap: the keys are read, the features are not
        return len(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["keys"]) == samples
    except Exception:  # noqa: BLE001 - an unreadable file is re-encoded
        return False


def _write_local(path: Path, data: bytes) -> None:
    """Atomically, like the feature file it describes."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
