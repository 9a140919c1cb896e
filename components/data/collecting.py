"""Group one source's entries into samples and check each sample: the per-shard work of
`data add`, run in a worker process. A sample's bytes live only while its source is checked.

Keys are grouped per source (a tar, or a chunk of loose files); a key repeated in one source
is a duplicate here, a key seen in an earlier source is found by the caller from the keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import shards
from .reading import Entry
from .sample_checks import check_caption, check_image, check_name

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass
class RawSample:
    key: str
    origin: str  # where it came from (file path or tar:member prefix), for the report
    files: dict[str, bytes] = field(default_factory=dict)  # normalised ext -> bytes
    names: dict[str, str] = field(default_factory=dict)  # normalised ext -> original name
    duplicate: bool = False
    reason: str | None = None  # set while reading: unsafe key, link, damaged shard, two images
    detail: str = ""
    extra: list[tuple[str, bytes]] = field(default_factory=list)  # more files, kept for the quarantine

    def mark(self, reason: str, detail: str) -> None:
        if self.reason is None:  # the first problem found names the sample
            self.reason, self.detail = reason, detail


def _norm_ext(ext: str) -> str | None:
    e = ext.lower()
    if e in IMAGE_EXTS:
        return "image"
    if e in ("txt", "json"):
        return e
    return None


def _whole_before_cut(s: RawSample, entry: Entry) -> bool:
    """A shard cut between members leaves its last sample whole when image and caption are
    both there (img2dataset writes .json before .txt); such a sample is kept."""
    return entry.reason == "shard_truncated" and not entry.cut_inside and "image" in s.files and "txt" in s.files


class Collector:
    """Groups entries into samples by key, in input order; repeated keys become duplicates."""

    def __init__(self) -> None:
        self.samples: list[RawSample] = []
        self.seen: set[str] = set()
        self.ignored: list[str] = []
        self.damaged_shards: list[str] = []
        self._open: dict[str, RawSample] = {}  # samples of the current source, by key

    def new_source(self) -> None:
        for k in self._open:
            self.seen.add(k)
        self._open = {}

    def add(self, entry: Entry) -> None:
        reason, detail, name = check_name(entry.name)
        if reason is None:
            reason, detail = entry.reason, entry.detail
        kx = shards.split_key(name)
        slot = _norm_ext(kx[1]) if kx else None
        if reason is None and slot is None:
            self.ignored.append(entry.origin)
            return
        if kx is None or slot is None:  # a damaged shard, a linked folder, a linked .bin: a bad entry of its own
            self.samples.append(RawSample(key=name or entry.origin, origin=entry.origin, reason=reason, detail=detail))
            return
        s = self._sample_for(kx[0], slot, name, entry)
        if entry.data is not None:
            if slot in s.files:
                s.extra.append((name, entry.data))
            else:
                s.files[slot], s.names[slot] = entry.data, name
        if reason is not None and not _whole_before_cut(s, entry):
            s.mark(reason, detail)

    def _sample_for(self, key: str, slot: str | None, name: str, entry: Entry) -> RawSample:
        s = self._open.get(key)
        if s is not None and slot == "image" and "image" in s.files and s.names["image"] != name:
            s.mark("duplicate_image", f"two images for one key: {s.names['image']}, {name}")
            return s
        if s is None or (slot in s.files and entry.data is not None):
            # A new sample: a key seen in an earlier source, or the same file name again in
            # this source, is a duplicate key.
            s = RawSample(key=key, origin=entry.origin, duplicate=(key in self.seen or s is not None))
            self.samples.append(s)
            self._open[key] = s  # later members of this key attach to the newest sample
        return s

    def read_source(self, label: str, entries: Iterable[Entry]) -> None:
        self.new_source()
        for e in entries:
            if e.reason in ("shard_truncated", "shard_unreadable"):
                self.damaged_shards.append(label)
            self.add(e)
        self.new_source()



def check_sample(s: RawSample, existing: set[str], max_caption_chars: int) -> tuple[str | None, str, Any]:
    """(reason, detail, (jpeg bytes, re-encoded?, caption)) for one collected sample."""
    if s.reason is not None:
        return s.reason, s.detail, None
    if s.duplicate or s.key in existing:
        where = "already in the dataset" if s.key in existing else "repeated in the input"
        return "duplicate_key", f"key {where}", None
    if "image" not in s.files:
        return "missing_image", "no image for this key", None
    if "txt" not in s.files:
        return "missing_caption", "no .txt caption for this key", None
    reason, detail, image = check_image(s.files["image"])
    if reason is not None:
        return reason, detail, None
    reason, detail, caption = check_caption(s.files["txt"], max_caption_chars)
    if reason is not None:
        return reason, detail, None
    return None, "", (image[0], image[1], caption)


def sample_json(s: RawSample) -> tuple[dict[str, Any], bool]:
    """The sample's metadata object, and whether an unusable .json was replaced by {}."""
    if "json" not in s.files:
        return {}, False
    try:
        obj = json.loads(s.files["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, True
    return (obj, False) if isinstance(obj, dict) else ({}, True)


def sample_digest(s: RawSample) -> bytes:
    """The sample's content hash: key, read-time reason and every file's bytes."""
    h = hashlib.sha256()
    h.update(s.key.encode("utf-8", "surrogateescape") + b"\0" + (s.reason or "").encode() + b"\0")
    for slot in sorted(s.files):
        h.update(slot.encode() + b"\0" + hashlib.sha256(s.files[slot]).digest())
    for name, data in s.extra:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(data).digest())
    return h.digest()


def collect_attributes(meta_json: dict[str, Any], attr_values: dict[str, list[str]]) -> None:
    objects = meta_json.get("objects")
    for o in objects if isinstance(objects, list) else []:
        if isinstance(o, dict):
            for k, v in o.items():
                if isinstance(v, str) and v not in attr_values.setdefault(k, []):
                    attr_values[k].append(v)


def raw_files(s: RawSample) -> list[tuple[str, bytes]]:
    """The sample's files under their input names, for the quarantine."""
    return [(s.names[slot], s.files[slot]) for slot in sorted(s.files)] + s.extra
