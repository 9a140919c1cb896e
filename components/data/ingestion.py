"""`litops data add PATH`: validate user image-caption pairs and add the good ones.

Input: a .tar shard, a folder of .tar shards, or a folder of `x.jpg|jpeg|png|webp` +
`x.txt` (+ optional `x.json`) pairs (subfolders included; both kinds may be mixed).
The path is checked before anything is created or generated.

Every sample is checked; bad ones go to a quarantine shard with a report, outside the
dataset (`<data_repo>/quarantine/<dataset>/<ingest_id>/`), so they never change the data
version. If the bad share exceeds `data.max_bad_fraction`, nothing is added.

Hard rules (reasons in REASONS): keys are normalised (`./a//b` -> `a/b`) and a key with
`..`, an absolute path, a backslash, a NUL or control character is `key_unsafe`; links in
folders and tars are never followed (`link`); a damaged tar keeps every whole sample read
before the damage (`shard_truncated` for the partial one, `shard_unreadable` when nothing
could be read) and never refuses the other shards. Name rules live in `reading` and
`sample_checks`; caption and image rules in `sample_checks`.

Splits: a key's hash routes it to val with probability `data.val_fraction`; when that gives
fewer than `val_quota(n)` = min(50, ceil(val_fraction * n)) (at least 1, leaving 1 for
train) of an ingest's n good samples, the train keys hashed nearest the threshold move to val.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from litops.core import progress
from litops.core.component_cli import UserError
from litops.core.config import LitopsConfig
from litops.core.workspace import Workspace, resolve_home

from . import shards
from .reading import Entry, check_input, iter_folder, iter_tar
from .sample_checks import check_caption, check_image, check_name
from .metadata import read_dataset_json, write_dataset_json

REASONS = (
    "key_unsafe",
    "link",
    "shard_truncated",
    "shard_unreadable",
    "image_undecodable",
    "image_empty",
    "image_too_large",
    "caption_empty",
    "caption_not_utf8",
    "caption_control_chars",
    "caption_too_long",
    "missing_image",
    "missing_caption",
    "duplicate_image",
    "duplicate_key",
)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
KNOWN_EXTS = IMAGE_EXTS + ("txt", "json")
INGEST_PREFIX = "ingest"
# Small user sets still get a val split: at least this many samples (or val_fraction, if less).
MIN_VAL_SAMPLES = 50


def quarantine_root(ws: Workspace, dataset_name: str) -> Path:
    """Quarantine lives beside the datasets, never inside a tracked dataset dir."""
    return ws.data_repo / "quarantine" / dataset_name


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


class _Collector:
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


def collect(path: Path) -> _Collector:
    src = check_input(path)
    col = _Collector()
    if src.is_file():
        col.read_source(src.name, iter_tar(src, src.name))
        return col
    for label, entries in iter_folder(src, col.ignored):
        col.read_source(label, entries)
    return col


def val_quota(n_good: int, val_fraction: float) -> int:
    """The fewest samples of one ingest routed to val: min(MIN_VAL_SAMPLES, val_fraction of
    the good samples, rounded up), at least 1, leaving at least 1 for train when there are 2+."""
    want = max(1, min(MIN_VAL_SAMPLES, math.ceil(val_fraction * n_good)))
    return min(want, n_good - 1) if n_good >= 2 else n_good


def assign_splits(keys: list[str], val_fraction: float) -> dict[str, str]:
    """key -> split. The key's hash decides; when too few land in val, the train keys whose
    hash lies nearest the val threshold move there, so the choice is still per key and stable."""
    split = {k: route_split(k, val_fraction) for k in keys}
    missing = val_quota(len(keys), val_fraction) - sum(v == "val" for v in split.values())
    if missing > 0:
        for k in sorted((k for k in keys if split[k] == "train"), key=_key_hash)[:missing]:
            split[k] = "val"
    return split


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def route_split(key: str, val_fraction: float) -> str:
    return "val" if _key_hash(key) / 2**64 < val_fraction else "train"


# --------------------------------------------------------------------------- ingest


def _progress(samples: list, desc: str):
    bar = progress.start(desc, len(samples), unit="sample")
    for s in samples:
        yield s
        bar.update()
    bar.close()


def ingest_id_of(samples: list[RawSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.key.encode("utf-8", "surrogateescape") + b"\0" + (s.reason or "").encode() + b"\0")
        for slot in sorted(s.files):
            h.update(slot.encode() + b"\0" + hashlib.sha256(s.files[slot]).digest())
        for name, data in s.extra:
            h.update(name.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:12]


def format_report_table(report: dict[str, Any]) -> str:
    lines = [
        f"ingest {report['source']}: {report['total']} samples, {report['good']} good, "
        f"{report['bad']} bad ({report['bad_fraction']:.1%}, limit {report['max_bad_fraction']:.1%})",
    ]
    if report["bad"]:
        lines.append(f"  {'reason':<22} {'count':>7}")
        for r in REASONS:
            if report["by_reason"].get(r):
                lines.append(f"  {r:<22} {report['by_reason'][r]:>7}")
        lines.append(f"  quarantine: {report['quarantine']}")
    for shard in report.get("damaged_shards", []):
        lines.append(f"  damaged shard (samples after the damage are not counted): {shard}")
    return "\n".join(lines)


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


def _sample_json(s: RawSample) -> tuple[dict[str, Any], bool]:
    """The sample's metadata object, and whether an unusable .json was replaced by {}."""
    if "json" not in s.files:
        return {}, False
    try:
        obj = json.loads(s.files["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, True
    return (obj, False) if isinstance(obj, dict) else ({}, True)


def _collect_attributes(meta_json: dict[str, Any], attr_values: dict[str, list[str]]) -> None:
    objects = meta_json.get("objects")
    for o in objects if isinstance(objects, list) else []:
        if isinstance(o, dict):
            for k, v in o.items():
                if isinstance(v, str) and v not in attr_values.setdefault(k, []):
                    attr_values[k].append(v)


def _quarantine_member(reason: str, index: int, name: str) -> str:
    """A member name that stays inside its folder when the quarantine tar is unpacked."""
    flat = "".join(c if (c.isalnum() or c in "._-") and c.isascii() else "_" for c in name.replace("/", "_"))
    return f"{reason}/{index:06d}/{flat.replace('..', '__') or 'unnamed'}"


def _write_quarantine(path: Path, bad: list[tuple[RawSample, str, str]]) -> None:
    members, used = [], set()
    for i, (s, r, _) in enumerate(bad):
        files = [(s.names[slot], s.files[slot]) for slot in sorted(s.files)] + s.extra
        for name, data in files:
            member = _quarantine_member(r, i, name)
            if member not in used:
                used.add(member)
                members.append((member, data))
    shards.write_tar(path, members)


def _new_dataset_meta(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "source": "path",
        "params": {},
        "attributes": {},
        "heldout_combinations": [],
        "splits": {s: 0 for s in shards.SPLITS},
        "ingested": [],
    }


def _validate_all(samples: list[RawSample], existing: set[str], cfg: LitopsConfig, label: str) -> dict[str, Any]:
    """Check every sample; good ones become rows ready for a shard."""
    out: dict[str, Any] = {"good": [], "bad": [], "reencoded": 0, "json_replaced": 0, "attributes": {}}
    for s in _progress(samples, f"ingest {label}"):
        reason, detail, ok = check_sample(s, existing, cfg.data.max_caption_chars)
        if reason is not None:
            out["bad"].append((s, reason, detail))
            continue
        image, reencoded, caption = ok
        out["reencoded"] += reencoded
        meta_json, replaced = _sample_json(s)
        out["json_replaced"] += replaced
        _collect_attributes(meta_json, out["attributes"])
        meta_json.setdefault("source", "user")
        out["good"].append((s.key, {"jpg": image, "txt": caption.encode("utf-8"), "json": meta_json}))
    return out


def _write_good(dataset_dir: Path, good: list, cfg: LitopsConfig, ingest_id: str) -> dict[str, int]:
    split_of = assign_splits([k for k, _ in good], cfg.data.val_fraction)
    added = {"train": 0, "val": 0}
    for split in ("train", "val"):
        rows = sorted((k, {**f, "json": shards.dump_json({**f["json"], "split": split})})
                      for k, f in good if split_of[k] == split)
        if rows:
            shards.write_shards(dataset_dir / split, rows, cfg.data.shard_size, prefix=f"{INGEST_PREFIX}-{ingest_id}")
        added[split] = len(rows)
    return added


def _update_meta(meta: dict[str, Any], added: dict[str, int], ingest_id: str, src: Path,
                 attr_values: dict[str, list[str]]) -> None:
    for split, n in added.items():
        meta["splits"][split] = meta["splits"].get(split, 0) + n
    meta.setdefault("ingested", []).append({"id": ingest_id, "source": src.name, "splits": added})
    if meta.get("source") == "path" and attr_values:
        attrs = meta.setdefault("attributes", {})
        for k, vals in attr_values.items():
            attrs.setdefault(k, [])
            attrs[k] += [v for v in vals if v not in attrs[k]]


def _printable(text: str) -> str:
    """Text a UTF-8 report can hold: undecodable file-name bytes are shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _build_report(src: Path, cfg: LitopsConfig, ingest_id: str, col: _Collector, checked: dict[str, Any],
                  qdir: Path) -> dict[str, Any]:
    bad, total = checked["bad"], len(col.samples)
    by_reason = {r: 0 for r in REASONS}
    for _, r, _ in bad:
        by_reason[r] += 1
    frac = len(bad) / total
    return {
        "ingest_id": ingest_id,
        "source": str(src),
        "dataset": cfg.data.name,
        "total": total,
        "good": len(checked["good"]),
        "bad": len(bad),
        "bad_fraction": round(frac, 6),
        "max_bad_fraction": cfg.data.max_bad_fraction,
        "by_reason": by_reason,
        "reencoded": checked["reencoded"],
        "json_replaced": checked["json_replaced"],
        "ignored_files": sorted(col.ignored)[:100],
        "n_ignored_files": len(col.ignored),
        "damaged_shards": sorted(set(col.damaged_shards)),
        "accepted": frac <= cfg.data.max_bad_fraction,
        "quarantine": str(qdir / "quarantine.tar") if bad else None,
        "samples": [{"key": _printable(s.key), "reason": r, "detail": _printable(d), "origin": _printable(s.origin)}
                    for s, r, d in bad],
        "added": {"train": 0, "val": 0},
    }


def _existing_dataset(cfg: LitopsConfig, ws: Workspace, dataset_dir: Path) -> tuple[dict | None, set[str]]:
    """The dataset's metadata and keys (keys already in it count as duplicates); a synth
    dataset is generated first."""
    meta = read_dataset_json(dataset_dir)
    if meta is None and cfg.data.source == "synth":
        from .synth import synthesize

        synthesize(cfg, ws)
        meta = read_dataset_json(dataset_dir)
    return meta, (shards.dataset_keys(dataset_dir) if meta is not None else set())


def ingest(path: str | Path, cfg: LitopsConfig, ws: Workspace | None = None, quiet: bool = False) -> dict[str, Any]:
    """Validate and add the samples at `path` to dataset cfg.data.name.

    Returns {"name", "dataset_dir", "ingest_id", "total", "good", "bad", "bad_fraction",
    "by_reason", "added": {"train": n, "val": n}, "reencoded", "quarantine", "report",
    "splits"}. Raises UserError (nothing added) if the bad share is over the limit.
    """
    src = check_input(path)  # before anything is created or generated
    ws = ws or Workspace(resolve_home(cfg.home))
    dataset_dir = ws.dataset_dir(cfg.data.name)
    meta, existing = _existing_dataset(cfg, ws, dataset_dir)

    col = collect(src)
    if not col.samples:
        raise UserError(f"no samples found in {src} (expected .tar shards or image + .txt pairs)")
    ingest_id = ingest_id_of(col.samples)
    checked = _validate_all(col.samples, existing, cfg, src.name)
    qdir = quarantine_root(ws, cfg.data.name) / ingest_id
    report = _build_report(src, cfg, ingest_id, col, checked, qdir)
    qdir.mkdir(parents=True, exist_ok=True)
    if checked["bad"]:
        _write_quarantine(qdir / "quarantine.tar", checked["bad"])

    def write_report() -> None:
        (qdir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")

    if not quiet:
        print(format_report_table(report), file=sys.stderr)
    if not report["accepted"]:
        write_report()
        counts = ", ".join(f"{r}={n}" for r, n in report["by_reason"].items() if n)
        raise UserError(
            f"{report['bad']} of {report['total']} samples in {src} are bad ({report['bad_fraction']:.1%} > "
            f"max_bad_fraction {cfg.data.max_bad_fraction:.1%}): {counts}; nothing was added; "
            f"quarantine and report in {qdir}"
        )

    meta = meta if meta is not None else _new_dataset_meta(cfg.data.name)
    added = _write_good(dataset_dir, checked["good"], cfg, ingest_id)
    _update_meta(meta, added, ingest_id, src, checked["attributes"])
    write_dataset_json(dataset_dir, meta)
    report["added"] = added
    write_report()
    return {
        "name": cfg.data.name,
        "dataset_dir": str(dataset_dir),
        "ingest_id": ingest_id,
        "total": report["total"],
        "good": report["good"],
        "bad": report["bad"],
        "bad_fraction": report["bad_fraction"],
        "by_reason": {r: n for r, n in report["by_reason"].items() if n},
        "added": added,
        "reencoded": report["reencoded"],
        "damaged_shards": report["damaged_shards"],
        "quarantine": report["quarantine"],
        "report": str(qdir / "report.json"),
        "splits": meta["splits"],
    }
