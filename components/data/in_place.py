"""`litops data add s3://bucket/prefix --in-place`: a dataset whose shards stay where they are.

Every shard (`<split>/*.tar`, or a flat img2dataset folder as split `train`) is read once, front to
back: the same pass hashes it, finds its offsets (`litops.core.manifest.index_shard`) and checks
each sample with `data add`'s rules (`collecting.check_sample`). Nothing in the bucket is
rewritten: a hostile sample's index (its place among the tar's complete samples, the offsets'
order) goes into its shard entry's `excluded`, which readers skip; `exclusions_by_reason` counts
every bad sample, including incomplete ones the index never lists. Memory: one sample's bytes,
the keys seen (duplicates are found across shards) and 8 bytes of offsets a sample.

Above `data.max_bad_fraction` nothing is written. Otherwise each shard's `.idx` goes beside it in
the bucket, and `manifest.json` (naming the bucket as its root) plus `dataset.json` go into the
data repo's dataset folder, then `DataRepo.version` commits it: the data version is a digest of
the manifest, which pins every shard's ETag and size. Both files hold no time, so adding the same
unchanged bucket again writes the same bytes and makes no new version.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litops.core.component_cli import UserError
from litops.core.config import LitopsConfig
from litops.core.dataset_files import DatasetRoot
from litops.core.manifest import (MANIFEST_NAME, DatasetManifest, ShardEntry, index_shard, read_manifest, write_manifest,
                                  write_offsets)
from litops.core.s3_retries import naming
from litops.core.shard_offsets import offsets_bytes
from litops.core.workspace import Workspace

from .collecting import IMAGE_EXTS, RawSample, check_sample
from .indexing import find_shards
from .metadata import write_dataset_json
from .sample_checks import check_name

if TYPE_CHECKING:
    from litops.core.shard_index import StorageOptions


class _ShardCheck:
    """Checks the member runs of one shard as `index_stream` shows them; keeps verdicts only."""

    def __init__(self, seen: set[str], max_caption_chars: int, by_reason: dict[str, int]):
        self.seen, self.max_caption_chars, self.by_reason = seen, max_caption_chars, by_reason
        self.excluded: list[int] = []
        self.total = 0

    def __call__(self, index: int | None, key: str, members: list[tuple[str, bytes]]) -> None:
        self.total += 1
        reason = self._reason(key, members)
        if reason is None:
            return
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if index is not None:
            self.excluded.append(index)

    def _reason(self, key: str, members: list[tuple[str, bytes]]) -> str | None:
        bad_name, detail, name = check_name(key)
        s = RawSample(key=name, origin=key, duplicate=name in self.seen)
        self.seen.add(name)
        if bad_name is not None:
            s.mark(bad_name, detail)
        for ext, data in members:
            e = ext.lower()
            slot = "image" if e in IMAGE_EXTS else e if e in ("txt", "json") else None
            if slot is None:
                continue
            if slot in s.files:
                # two images, or one member twice: the reader would take one of them at random
                s.mark("duplicate_image" if slot == "image" else "duplicate_key", f"two .{e} members for one key")
            s.files.setdefault(slot, data)
        return check_sample(s, set(), self.max_caption_chars)[0]


def _check_shards(where: DatasetRoot, cfg: LitopsConfig) -> tuple[DatasetManifest, dict, int]:
    """(manifest with exclusions, {shard name: offsets}, samples seen): one read of every shard."""
    layout = find_shards(where, None, required=True)
    seen: set[str] = set()
    by_reason: dict[str, int] = {}
    offsets, splits, total = {}, {}, 0
    for split, shards in sorted(layout.items()):
        entries = []
        for shard in shards:
            check = _ShardCheck(seen, cfg.data.max_caption_chars, by_reason)
            entry, offs = index_shard(where.url(shard.name), where.storage, shard.name, check)
            entries.append(replace(entry, excluded=tuple(check.excluded)))
            offsets[shard.name], total = offs, total + check.total
        splits[split] = entries
    return DatasetManifest(where.root, splits, by_reason), offsets, total


def _write_index(where: DatasetRoot, entry: ShardEntry, offsets) -> None:
    """The shard's `.idx`, unless the bucket already holds these very bytes (no needless PUT)."""
    if where.read_bytes(entry.index_name) != offsets_bytes(offsets):
        write_offsets(where.root, entry, offsets, where.storage)


def _dataset_meta(name: str, manifest: DatasetManifest) -> dict[str, Any]:
    splits = {s: sum(e.usable for e in entries) for s, entries in manifest.splits.items()}
    for s in ("train", "val"):
        splits.setdefault(s, 0)
    return {"name": name, "source": "path", "params": {}, "attributes": {}, "heldout_combinations": [],
            "splits": splits, "in_place": manifest.root,
            "ingested": [{"id": manifest.digest()[:16], "source": manifest.root, "splits": splits}]}


def add_in_place(source: str, cfg: LitopsConfig, ws: Workspace, storage: StorageOptions | None = None) -> dict[str, Any]:
    """Check and index the shards at `source` where they are; write the dataset folder (not versioned
    here). Keys: name, dataset_dir, manifest, digest, total, good, bad, bad_fraction, by_reason,
    excluded, splits. Raises UserError, having written nothing, above data.max_bad_fraction."""
    where = DatasetRoot(source, storage)
    if not where.on_s3:
        raise UserError(f"--in-place needs an s3:// prefix, got {source}")
    if not where.exists():
        raise UserError(f"no such S3 prefix: {source}")
    manifest, offsets, total = _check_shards(where, cfg)
    bad = sum(manifest.exclusions_by_reason.values())
    frac = bad / total if total else 0.0
    counts = ", ".join(f"{r}={n}" for r, n in sorted(manifest.exclusions_by_reason.items()))
    if not total:
        raise UserError(f"no samples in the shards under {where.root}")
    if frac > cfg.data.max_bad_fraction:
        raise UserError(f"{bad} of {total} samples in {where.root} are bad ({frac:.1%} > max_bad_fraction "
                        f"{cfg.data.max_bad_fraction:.1%}): {counts}; nothing was added")
    for entries in manifest.splits.values():
        for entry in entries:
            _write_index(where, entry, offsets[entry.name])
    dataset_dir = ws.dataset_dir(cfg.data.name)
    _refuse_local_shards(dataset_dir)
    write_manifest(manifest, storage, at=dataset_dir)
    meta = _dataset_meta(cfg.data.name, manifest)
    write_dataset_json(dataset_dir, meta)
    if bad:
        print(f"in place {where.root}: {total} samples, {bad} excluded ({counts})", file=sys.stderr)
    return {"name": cfg.data.name, "dataset_dir": str(dataset_dir), "manifest": str(Path(dataset_dir) / MANIFEST_NAME),
            "digest": manifest.digest(), "total": total, "good": total - bad, "bad": bad,
            "bad_fraction": round(frac, 6), "by_reason": dict(sorted(manifest.exclusions_by_reason.items())),
            "excluded": sum(len(e.excluded) for es in manifest.splits.values() for e in es),
            "splits": meta["splits"], "in_place": where.root}


def _refuse_local_shards(dataset_dir: Path) -> None:
    """An in-place dataset folder holds its manifest and dataset.json only: shards of an earlier
    local dataset of that name would otherwise be versioned beside a manifest that ignores them."""
    if not dataset_dir.is_dir():
        return
    stray = list(dataset_dir.rglob("*.tar"))
    if stray:
        raise UserError(f"dataset folder {dataset_dir} holds local shards ({stray[0].name}): "
                        "choose another data.name for an in-place dataset")


def verify_in_place(dataset_dir: str | Path, storage: StorageOptions | None = None) -> int:
    """Check, with one HEAD a shard, that every object the manifest at `dataset_dir` names still has
    its ETag and size; the number checked. Raises UserError naming the first changed shard."""
    manifest = read_manifest(dataset_dir, storage)
    if manifest is None or not DatasetRoot(manifest.root).on_s3:
        return 0
    where = DatasetRoot(manifest.root, storage)
    fs, n = where.fs(), 0
    for entries in manifest.splits.values():
        for e in entries:
            url = manifest.url(e)
            try:
                with naming(url):
                    info = fs.info(url[len("s3://"):], refresh=True)
            except FileNotFoundError:
                raise UserError(f"{url} is gone from the bucket (this data version needs it)") from None
            etag, size = str(info.get("ETag") or "").strip('"'), int(info.get("size") or 0)
            if (e.etag and etag != e.etag) or size != e.bytes:
                raise UserError(f"{url} changed since this data version (ETag {etag or '?'}, {size} bytes; "
                                f"recorded {e.etag}, {e.bytes} bytes): `litops data add {manifest.root} --in-place` "
                                "checks it again")
            n += 1
    return n

