"""Fold the units' results, in input order, into one ingest's verdicts and counts.

Keys only (never bytes) are kept here: a key seen in an earlier unit, or already in the
dataset, makes a sample a `duplicate_key`, exactly as when the whole input was read at once
(a sample whose reading already failed keeps that reason).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Merged:
    existing: set[str]
    total: int = 0
    good: int = 0
    bad: list[dict[str, Any]] = field(default_factory=list)  # report rows plus unit, pos
    dropped: dict[int, set[int]] = field(default_factory=dict)  # unit -> spooled-good samples now duplicates
    ignored: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    reencoded: int = 0
    json_replaced: int = 0
    attributes: dict[str, list[str]] = field(default_factory=dict)
    units: int = 0
    _seen: set[str] = field(default_factory=set)
    _digest: Any = field(default_factory=hashlib.sha256)

    def add_unit(self, result: dict[str, Any]) -> None:
        unit = self.units
        for pos, s in enumerate(result["samples"]):
            reason, detail = self._verdict(s)
            if reason is None:
                self.good += 1
                self.reencoded += s["reencoded"]
                self.json_replaced += s["json_replaced"]
            else:
                self.bad.append({"key": s["key"], "reason": reason, "detail": detail, "origin": s["origin"],
                                 "unit": unit, "pos": pos})
                if s["reason"] is None:
                    self.dropped.setdefault(unit, set()).add(pos)
        self.total += len(result["samples"])
        self._seen.update(result["keys"])
        self.ignored += result["ignored"]
        self.damaged += result["damaged"]
        for k, vals in result["attributes"].items():
            have = self.attributes.setdefault(k, [])
            have += [v for v in vals if v not in have]
        self._digest.update(result["digest"].encode())
        self.units += 1

    def _verdict(self, s: dict[str, Any]) -> tuple[str | None, str]:
        if s["read_reason"] is None and (s["repeated"] or s["key"] in self._seen or s["key"] in self.existing):
            where = "already in the dataset" if s["key"] in self.existing else "repeated in the input"
            return "duplicate_key", f"key {where}"
        return s["reason"], s["detail"]

    @property
    def ingest_id(self) -> str:
        """The content's hash: the same input gives the same id, however it is split over workers."""
        return self._digest.hexdigest()[:12]

    def bad_by_unit(self) -> dict[int, dict[int, tuple[int, str]]]:
        """unit -> {pos: (index among all bad samples, reason)}."""
        out: dict[int, dict[int, tuple[int, str]]] = {}
        for i, b in enumerate(self.bad):
            out.setdefault(b["unit"], {})[b["pos"]] = (i, b["reason"])
        return out
