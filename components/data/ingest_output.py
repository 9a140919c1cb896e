"""Write an ingest's output from the units' spools: good samples into `shard_size` shards per
split, bad ones into the quarantine tar. Both stream, one shard (or one sample) at a time.

Order: units in input order, samples in each unit's input order (train samples that might
still move to val come last), so the same input gives byte-identical shards whatever the
number of workers.
"""

from __future__ import annotations

import heapq
import io
import os
import tarfile
from pathlib import Path

from . import shards
from .splits import key_hash, route_split, val_quota
from .unit_check import read_spool
from .unit_merge import Merged
from .unit_pool import spool_path


class ShardWriter:
    """Buffers one output shard of `shard_size` samples and writes it under a temporary name
    (the ingest id, a hash of all the content, is known only at the end: see `publish`)."""

    def __init__(self, out_dir: Path, shard_size: int):
        self.out_dir, self.shard_size = out_dir, shard_size
        self.rows: list[tuple[str, dict[str, bytes]]] = []
        self.paths: list[Path] = []
        self.count = 0

    def add(self, key: str, files: dict[str, bytes]) -> None:
        self.rows.append((key, files))
        self.count += 1
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            p = self.out_dir / f"{len(self.paths):06d}.tar"
            shards.write_tar(p, [(f"{k}.{ext}", f[ext]) for k, f in self.rows for ext in sorted(f)])
            self.paths.append(p)
        self.rows = []

    def publish(self, dest: Path, prefix: str) -> None:
        """Move the written shards to their final names in `dest` (a rename: same file system)."""
        self.flush()
        for i, p in enumerate(self.paths):
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest / shards.SHARD_PATTERN.format(prefix=prefix, index=i))


class GoodWriter:
    """Writes good samples as their units arrive, so writing overlaps the workers' checks.

    A val-routed key is final at once. A train key may still move to val when the ingest ends
    with fewer val samples than `val_quota` (the train keys hashed nearest the threshold move,
    as in `assign_splits`), so the MIN_VAL_SAMPLES train samples with the smallest hashes so
    far are held back (bounded memory) and written last.
    """

    def __init__(self, staging: Path, shard_size: int, val_fraction: float, hold: int):
        self.writers = {s: ShardWriter(staging / s, shard_size) for s in ("train", "val")}
        self.val_fraction, self.hold = val_fraction, hold
        self.held: list[tuple[int, int, str, dict]] = []  # heap of (-hash, input position, key, files)
        self.n = 0

    def add_unit(self, spool: Path, dropped: set[int]) -> None:
        for pos, rec in enumerate(read_spool(spool)):
            if rec[0] == "good" and pos not in dropped:
                self._add(rec[1], rec[2])

    def _add(self, key: str, files: dict) -> None:
        self.n += 1
        if route_split(key, self.val_fraction) == "val":
            self._write("val", key, files)
            return
        heapq.heappush(self.held, (-key_hash(key), self.n, key, files))
        if len(self.held) > self.hold:
            _, _, k, f = heapq.heappop(self.held)  # the largest hash held can no longer move
            self._write("train", k, f)

    def _write(self, split: str, key: str, files: dict) -> None:
        self.writers[split].add(key, {"jpg": files["jpg"], "txt": files["txt"],
                                      "json": shards.dump_json({**files["json"], "split": split})})

    def finish(self, dataset_dir: Path, prefix: str) -> dict[str, int]:
        """Place the held-back samples, publish every shard; the samples added per split."""
        missing = val_quota(self.n, self.val_fraction) - self.writers["val"].count
        by_hash = sorted(self.held, key=lambda h: -h[0])
        to_val = {id(h) for h in by_hash[:max(missing, 0)]}
        for h in sorted(self.held, key=lambda h: h[1]):  # input order
            self._write("val" if id(h) in to_val else "train", h[2], h[3])
        for split, w in self.writers.items():
            w.publish(dataset_dir / split, prefix)
        return {split: w.count for split, w in self.writers.items()}


def write_quarantine(path: Path, merged: Merged, spool_dir: Path) -> None:
    """Every bad sample's files as `<reason>/<index>/<name>`, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
        for unit, bad in sorted(merged.bad_by_unit().items()):
            for pos, rec in enumerate(read_spool(spool_path(spool_dir, unit))):
                if pos in bad:
                    index, reason = bad[pos]
                    _add_sample(tf, reason, index, _files_of(rec))
    os.replace(tmp, path)


def _files_of(rec: tuple) -> list[tuple[str, bytes]]:
    """A bad sample's input files; a good-looking one found to be a duplicate gives its checked files."""
    if rec[0] == "bad":
        return rec[1]
    key, files = rec[1], rec[2]
    return [(f"{key}.jpg", files["jpg"]), (f"{key}.txt", files["txt"]), (f"{key}.json", shards.dump_json(files["json"]))]


def _add_sample(tf: tarfile.TarFile, reason: str, index: int, files: list[tuple[str, bytes]]) -> None:
    used: set[str] = set()
    for name, data in files:
        member = quarantine_member(reason, index, name)
        if member not in used:
            used.add(member)
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))


def quarantine_member(reason: str, index: int, name: str) -> str:
    """A member name that stays inside its folder when the quarantine tar is unpacked."""
    flat = "".join(c if (c.isalnum() or c in "._-") and c.isascii() else "_" for c in name.replace("/", "_"))
    return f"{reason}/{index:06d}/{flat.replace('..', '__') or 'unnamed'}"
