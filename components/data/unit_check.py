"""Check one unit (one input shard) in a worker process and spool its samples to disk.

The spool is a file of pickled records, one per sample in input order, written and read only
by this ingest: `("good", key, {"jpg", "txt", "json"})` ready for an output shard, or
`("bad", [(name, bytes), ...])` with the input files for the quarantine. The worker returns
only small per-sample records (keys, reasons) and counts, so the parent never holds bytes.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Iterator

from .collecting import Collector, check_sample, collect_attributes, raw_files, sample_digest, sample_json
from .sources import Unit, unit_entries


def check_unit(unit: Unit, max_caption_chars: int, spool: str) -> dict[str, Any]:
    """Group, check and spool one unit. Samples are checked as if no other unit existed: the
    caller turns keys repeated across units (or already in the dataset) into duplicates."""
    col = Collector()
    with unit_entries(unit, col.ignored, Path(spool).parent) as entries:
        col.read_source(unit.label, entries)
    out: dict[str, Any] = {"samples": [], "keys": sorted(col.seen), "ignored": col.ignored,
                           "damaged": sorted(set(col.damaged_shards)), "attributes": {}}
    digest = hashlib.sha256()
    with open(spool, "wb") as f:
        for s in col.samples:
            digest.update(sample_digest(s))
            pickle.dump(_check_one(s, max_caption_chars, out), f, protocol=pickle.HIGHEST_PROTOCOL)
    out["digest"] = digest.hexdigest()
    return out


def _check_one(s, max_caption_chars: int, out: dict[str, Any]) -> tuple:
    reason, detail, ok = check_sample(s, set(), max_caption_chars)
    record = {"key": s.key, "origin": s.origin, "read_reason": s.reason, "repeated": s.duplicate,
              "reason": reason, "detail": detail, "reencoded": False, "json_replaced": False}
    out["samples"].append(record)
    if reason is not None:
        return ("bad", raw_files(s))
    image, reencoded, caption = ok
    meta_json, replaced = sample_json(s)
    record["reencoded"], record["json_replaced"] = reencoded, replaced
    collect_attributes(meta_json, out["attributes"])
    meta_json.setdefault("source", "user")
    return ("good", s.key, {"jpg": image, "txt": caption.encode("utf-8"), "json": meta_json})


def read_spool(spool: str | Path) -> Iterator[tuple]:
    """The spooled records, in input order."""
    with open(spool, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return
